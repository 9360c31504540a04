"""Milestone 02, part 2: the optimizer, written from scratch (task02_6).

    task02_6  AdamW.step, get_lr, clip_grad_norm     the optimizer, its learning-rate schedule, gradient clipping

Check your work with `pytest milestones/02 -m task02_6`; the equations are in README.md. train.py uses
all three in each training step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

# ----------------------------------------------------------------------------------------------------
# Argument checks (given)


def check_schedule(step: int, max_lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> None:
    """Raise ValueError for a schedule get_lr cannot compute."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if min_lr > max_lr:
        raise ValueError(f"min_lr={min_lr} is larger than max_lr={max_lr}")
    if lr_decay_iters <= warmup_iters:
        raise ValueError(f"lr_decay_iters={lr_decay_iters} must be larger than warmup_iters={warmup_iters}")


def check_max_norm(max_norm: float) -> None:
    """Raise ValueError unless max_norm > 0."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")


# ----------------------------------------------------------------------------------------------------
# task02_6: the optimizer, written from scratch


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), the optimizer GPTs are trained with.

    Each parameter keeps two running averages: of its gradient (momentum, "which way") and of its squared
    gradient ("how large"). The update divides one by the square root of the other, so every parameter
    moves about `lr` per step whatever the scale of its gradient.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter p that has a gradient g, in each param group (lr, betas, eps, weight_decay
        are per group), by the equations of README.md: decoupled weight decay, the running averages m and v,
        their bias correction by 1 - beta ** t (t = 1 on p's first update), then p -= lr * m^ / (sqrt(v^) + eps).

        Keep m, v and t in `self.state[p]` (keys "exp_avg", "exp_avg_sq", "step") so that
        `optimizer.state_dict()` saves them in checkpoints. Returns closure() if a closure is given.
        """
        ### BEGIN SOLUTION
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
                p.mul_(1 - lr * weight_decay)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v / (1 - beta2**t)).sqrt_().add_(eps)  # sqrt(v^) + eps
                p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))  # - lr * m^ / denom
        return loss
        ### END SOLUTION


def get_lr(step: int, *, max_lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> float:
    """The learning rate at `step` (0-based): linear warmup, cosine decay, then constant.

        step <  warmup_iters:                  max_lr * (step + 1) / (warmup_iters + 1)
        warmup_iters <= step <= lr_decay_iters: min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * r)),
                                               r = (step - warmup_iters) / (lr_decay_iters - warmup_iters)
        step >  lr_decay_iters:                min_lr
    """
    check_schedule(step, max_lr, min_lr, warmup_iters, lr_decay_iters)
    ### BEGIN SOLUTION
    if step < warmup_iters:
        return max_lr * (step + 1) / (warmup_iters + 1)
    if step > lr_decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / (lr_decay_iters - warmup_iters)  # 0 -> 1
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * ratio))
    ### END SOLUTION


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most `max_norm`; return the norm before.

    The global norm is sqrt(sum over parameters of sum(g ** 2)). When it exceeds max_norm, multiply every
    gradient by max_norm / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_ does; otherwise leave them.
    Parameters without a gradient are skipped (no gradient at all: the norm is 0.0).
    """
    check_max_norm(max_norm)
    ### BEGIN SOLUTION
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.stack([g.detach().pow(2).sum() for g in grads]).sum().sqrt()
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.mul_(coef)
    return total.item()
    ### END SOLUTION
