"""Milestone 02, part 2: training the GPT of model.py, with the optimizer written from scratch.

    task02_6  AdamW.step, get_lr, clip_grad_norm     the optimizer, its learning-rate schedule, gradient clipping
    task02_7  evaluate, save_checkpoint, train       the training loop: evaluation, checkpoints, resume, logs

Tokenizer, split and batches come from your milestone 01 (`bigram.CharTokenizer`, `train_val_split`,
`get_batch`). When this passes `pytest milestones/02`, train and sample (see README.md for the figures):

    python milestones/02/train.py train --preset cpu-small        # about 2 minutes on 2 CPU cores
    python milestones/02/train.py train --preset cpu-small --resume   # after a crash or Ctrl-C
    python milestones/02/train.py sample runs/02/cpu-small/best.pt
    python milestones/02/train.py ablation                        # the staged table, about 3 minutes
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from llmfs.fsutil import atomic_write_text
from llmfs.loader import dependency

if __package__:  # imported as part of the milestone (the tests do this)
    from .model import GPT, Block, FeedForward, GPTConfig, Head, MultiHeadAttention
else:  # run as a script, `python milestones/02/train.py`: this folder is on sys.path
    from model import GPT, Block, FeedForward, GPTConfig, Head, MultiHeadAttention

bigram = dependency("01", "bigram")  # your milestone 01: CharTokenizer, train_val_split, get_batch

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
        """One update of every parameter p that has a gradient g, for each param group (lr, betas, eps,
        weight_decay are per group). With t the step count of p (1 on its first update):

            p   <- p * (1 - lr * weight_decay)             decoupled weight decay
            m   <- beta1 * m + (1 - beta1) * g             state["exp_avg"], starts at 0
            v   <- beta2 * v + (1 - beta2) * g * g         state["exp_avg_sq"], starts at 0
            m^  =  m / (1 - beta1 ** t)                    bias correction: m and v start at 0
            v^  =  v / (1 - beta2 ** t)
            p   <- p - lr * m^ / (sqrt(v^) + eps)

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

    Warmup keeps the first updates small while Adam's running averages are still poor estimates.
    Raises ValueError when step < 0, min_lr > max_lr, or lr_decay_iters <= warmup_iters.
    """
    ### BEGIN SOLUTION
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if min_lr > max_lr:
        raise ValueError(f"min_lr={min_lr} is larger than max_lr={max_lr}")
    if lr_decay_iters <= warmup_iters:
        raise ValueError(f"lr_decay_iters={lr_decay_iters} must be larger than warmup_iters={warmup_iters}")
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
    Parameters without a gradient are skipped. Raises ValueError when max_norm <= 0.
    """
    ### BEGIN SOLUTION
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
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


# ----------------------------------------------------------------------------------------------------
# Configurations (given)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Checkpoints store it; `--resume` refuses a different one."""

    architecture: str = "gpt"  # "gpt", or one of ABLATION_STAGES for the staged table
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    batch_size: int = 12
    max_iters: int = 2000  # may grow on --resume (train longer); nothing else may change
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off
    eval_interval: int = 250
    eval_iters: int = 200
    seed: int = 1337


_ABLATION = {"n_layer": 3, "n_head": 4, "n_embd": 32, "block_size": 8, "batch_size": 32, "max_iters": 5000,
             "learning_rate": 1e-3, "min_lr": 1e-3, "warmup_iters": 0, "lr_decay_iters": 5000,
             "weight_decay": 0.01, "beta2": 0.999, "grad_clip": 0.0, "eval_interval": 500}

# stage -> (what it adds, the loss "Let's build GPT" reports for it)
ABLATION_STAGES = {
    "bigram": ("token and position embeddings, then a linear head", 2.47),
    "head": ("+ one self-attention head of size 32", 2.45),
    "multihead": ("+ four heads of size 8, with a projection", 2.38),
    "feedforward": ("+ a feed-forward layer after attention", 2.27),
    "residual": ("3 blocks with residual connections", 2.20),
    "layernorm": ("+ pre-LayerNorm in each block and at the end: the GPT", 2.07),
}

PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=8, max_iters=60,
                        warmup_iters=5, lr_decay_iters=60, eval_interval=20, eval_iters=4),
    "cpu-small": TrainConfig(),  # nanoGPT's shakespeare_char on CPU: val 1.88 after 2000 iterations
    "full": TrainConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2,
                        max_iters=5000, lr_decay_iters=5000),  # nanoGPT: val 1.4697, ~3 min on an A100
    **{f"ablation-{stage}": TrainConfig(architecture=stage, **_ABLATION) for stage in ABLATION_STAGES},
}


class AblationModel(nn.Module):
    """The intermediate models of the staged table, assembled from your model.py pieces. The last stage,
    "layernorm", is the GPT itself and is built by `build_model`, not here."""

    def __init__(self, stage: str, vocab_size: int, config: TrainConfig) -> None:
        super().__init__()
        C, n_head = config.n_embd, config.n_head
        self.token_embedding_table = nn.Embedding(vocab_size, C)
        self.position_embedding_table = nn.Embedding(config.block_size, C)
        bodies = {
            "bigram": lambda: nn.Identity(),
            "head": lambda: Head(C, C),
            "multihead": lambda: MultiHeadAttention(C, n_head),
            "feedforward": lambda: nn.Sequential(MultiHeadAttention(C, n_head), FeedForward(C)),
            "residual": lambda: nn.Sequential(*[Block(C, n_head, layer_norm=False) for _ in range(config.n_layer)]),
        }
        self.body = bodies[stage]()
        self.lm_head = nn.Linear(C, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.shape
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(T))  # (B, T, C)
        logits = self.lm_head(self.body(x))  # (B, T, V)
        loss = None if targets is None else nn.functional.cross_entropy(logits.view(B * T, -1), targets.view(-1))
        return logits, loss


def build_model(config: TrainConfig, vocab_size: int) -> nn.Module:
    """The GPT for architecture "gpt"; a stage of the staged table otherwise. The stages keep PyTorch's default
    initialisation, as in "Let's build GPT" (the GPT's N(0, 0.02) initialisation came later, with depth)."""
    if config.architecture == "gpt" or config.architecture == "layernorm":
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                              n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout))
    elif config.architecture in ABLATION_STAGES:
        model = AblationModel(config.architecture, vocab_size, config)
    else:
        raise ValueError(f"unknown architecture {config.architecture!r}; use 'gpt' or one of {list(ABLATION_STAGES)}")
    if config.architecture != "gpt":
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.reset_parameters()
    return model


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the matrices (linear weights, embeddings), not the biases and LayerNorm gains, as nanoGPT does."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


# ----------------------------------------------------------------------------------------------------
# Logs and plots (given)

LOG_FIELDS = ["step", "lr", "loss", "eval_train", "eval_val"]


class LossLog:
    """losses.csv: one row per step (the learning rate and training loss of that step's update) with the
    evaluation made before that update in the eval columns. Each row is flushed as it is written, so a
    crash loses nothing. Opening it keeps only the rows before `start`: a fresh run (start 0) begins an
    empty log, a resumed one drops the rows it is about to write again."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        kept = io.StringIO()
        writer = csv.DictWriter(kept, LOG_FIELDS, lineterminator="\n")
        writer.writeheader()
        if start > 0 and path.exists():
            writer.writerows(row for row in read_log(path) if int(row["step"]) < start)
        atomic_write_text(path, kept.getvalue())
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, LOG_FIELDS, lineterminator="\n")

    def write(self, step: int, lr: float | None = None, loss: float | None = None,
              evaluation: dict[str, float] | None = None) -> None:
        evaluation = evaluation or {}
        self.writer.writerow({"step": step, "lr": "" if lr is None else f"{lr:.6g}",
                              "loss": "" if loss is None else f"{loss:.6f}",
                              "eval_train": f"{evaluation['train']:.6f}" if evaluation else "",
                              "eval_val": f"{evaluation['val']:.6f}" if evaluation else ""})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_log(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot_losses(csv_path: Path, png_path: Path, title: str = "") -> None:
    """The loss curve: training loss of each step (faint), its running mean, and the evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(csv_path)
    steps = [int(r["step"]) for r in rows if r["loss"]]
    losses = torch.tensor([float(r["loss"]) for r in rows if r["loss"]])
    evals = [(int(r["step"]), float(r["eval_train"]), float(r["eval_val"])) for r in rows if r["eval_val"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(steps):
        ax.plot(steps, losses, lw=0.5, alpha=0.3, color="C0", label="training loss (one batch)")
        window = max(1, len(steps) // 40)
        if len(steps) >= window > 1:
            ax.plot(steps[window - 1:], losses.unfold(0, window, 1).mean(1), color="C0",
                    label=f"running mean ({window} steps)")
    if evals:
        s, tr, va = zip(*evals, strict=True)
        ax.plot(s, tr, "o-", ms=3, color="C1", label="train (fixed batches)")
        ax.plot(s, va, "o-", ms=3, color="C3", label=f"validation (last {va[-1]:.3f}, best {min(va):.3f})")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title=title or "Character GPT on TinyShakespeare")
    ax.legend()
    save_figure(fig, png_path)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure atomically (a temporary file, then os.replace) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------
# task02_7: the training loop


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The mean of model(x, y)'s loss over the given (x, y) batches, in eval mode (no dropout) and without
    gradients; the model is left in the mode it was in. The batches are drawn once before training
    (`fixed_batches`), so every evaluation scores the same text and successive values are comparable.
    Raises ValueError when `batches` is empty.
    """
    ### BEGIN SOLUTION
    if not batches:
        raise ValueError("evaluate() needs at least one batch")
    was_training = model.training
    model.eval()
    total = sum(model(x, y)[1].item() for x, y in batches)
    model.train(was_training)
    return total / len(batches)
    ### END SOLUTION


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save(state, path), atomically: write a temporary file in the same folder, then os.replace it
    onto `path`. A crash mid-write (or a full disk) then leaves the previous checkpoint intact instead of a
    truncated file; the temporary file is removed if saving fails. Creates the folder if needed."""
    ### BEGIN SOLUTION
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    ### END SOLUTION


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `train` (tensors, numbers, strings: safe to load with weights_only)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python milestones/02/train.py train)")
    return torch.load(path, map_location="cpu", weights_only=True)


def fixed_batches(data: torch.Tensor, n: int, batch_size: int, block_size: int,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` batches drawn with their own generator, so evaluation never disturbs the training batches."""
    generator = torch.Generator().manual_seed(seed)
    return [bigram.get_batch(data, batch_size, block_size, generator) for _ in range(n)]


def train(config: TrainConfig, text: str, out_dir: Path, *, resume: bool = False, progress: bool = True,
          device: str = "cpu") -> dict:
    """Train a model on `text` and return a summary; writes into `out_dir`:

        losses.csv  a LossLog row per step       loss.png     plot_losses, redrawn at each evaluation
        last.pt     at every evaluation          best.pt      when validation loss improves
        results.json  at the end (the summary returned)

    Set up, in this order (resume depends on it):
      1. torch.manual_seed(config.seed); tokenizer = bigram.CharTokenizer(text); the ids split with
         bigram.train_val_split; model = build_model(config, vocab_size);
         optimizer = AdamW(param_groups(model, config.weight_decay), lr, (beta1, beta2)).
      2. batch_generator = torch.Generator().manual_seed(config.seed), used only by the training batches;
         eval batches: fixed_batches(split, config.eval_iters, batch_size, block_size, config.seed + 1).
      3. With `resume` and out_dir/last.pt present: load it (load_checkpoint) and restore model, optimizer,
         step, best_val, torch's RNG state and batch_generator's state; raise ValueError if its config
         differs from `config` in anything but max_iters (the given `_restore` does all of this). Then
         open the log with LossLog(out_dir / "losses.csv", the step to start from).

    Then for step in start..max_iters:
      - every eval_interval steps and at max_iters: evaluate train and val on the fixed batches; if val is
        below best_val, save best.pt; then save last.pt. A checkpoint is a dict with "model" and
        "optimizer" state_dicts, "step" (the step about to run), "config" (asdict), "best_val",
        "chars" (the tokenizer's characters), "rng" (torch.get_rng_state()) and "batch_rng"
        (batch_generator.get_state()). Stop after the evaluation at max_iters.
      - set every param group's lr to get_lr(step, ...); x, y = bigram.get_batch(train ids, batch_size,
        block_size, batch_generator); loss; zero_grad(set_to_none=True); backward; clip_grad_norm when
        grad_clip > 0; optimizer.step(); LossLog.write(step, lr, loss.item(), evaluation or None).

    Return (and write to results.json) a dict with at least "train_loss" and "val_loss" (the last
    evaluation), "best_val", "steps", "ms_per_iter" (mean time of the update steps this call ran) and
    "config". With `progress`, show a tqdm bar. The model and every batch go to `device` ("cuda" on a GPU);
    batches are always drawn on the CPU, so a run's batches do not depend on the device.
    """
    ### BEGIN SOLUTION
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    tokenizer = bigram.CharTokenizer(text)
    train_ids, val_ids = bigram.train_val_split(torch.tensor(tokenizer.encode(text), dtype=torch.long))
    model = build_model(config, tokenizer.vocab_size).to(device)
    optimizer = AdamW(param_groups(model, config.weight_decay), lr=config.learning_rate,
                      betas=(config.beta1, config.beta2))
    batch_generator = torch.Generator().manual_seed(config.seed)
    eval_batches = {name: [(x.to(device), y.to(device)) for x, y in
                           fixed_batches(ids, config.eval_iters, config.batch_size, config.block_size, config.seed + 1)]
                    for name, ids in (("train", train_ids), ("val", val_ids))}
    start, best_val = 0, float("inf")
    if resume and (out_dir / "last.pt").exists():
        start, best_val = _restore(out_dir / "last.pt", config, model, optimizer, batch_generator)
    log = LossLog(out_dir / "losses.csv", start)  # rows from `start` on are about to be written (again)

    def checkpoint(step: int) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "config": asdict(config), "best_val": best_val, "chars": tokenizer.chars,
                "rng": torch.get_rng_state(), "batch_rng": batch_generator.get_state()}

    model.train()
    train_seconds, updates, evaluation = 0.0, 0, {}
    bar = tqdm(range(start, config.max_iters + 1), desc="training", disable=not progress, initial=start,
               total=config.max_iters + 1)
    for step in bar:
        evaluation = None
        if step % config.eval_interval == 0 or step == config.max_iters:
            evaluation = {name: evaluate(model, batches) for name, batches in eval_batches.items()}
            improved = evaluation["val"] < best_val
            best_val = min(best_val, evaluation["val"])
            state = checkpoint(step)
            if improved:
                save_checkpoint(state, out_dir / "best.pt")
            save_checkpoint(state, out_dir / "last.pt")
            bar.set_postfix(train=f"{evaluation['train']:.3f}", val=f"{evaluation['val']:.3f}", refresh=False)
        if step == config.max_iters:
            log.write(step, evaluation=evaluation)
            break
        started = time.perf_counter()
        lr = get_lr(step, max_lr=config.learning_rate, min_lr=config.min_lr,
                    warmup_iters=config.warmup_iters, lr_decay_iters=config.lr_decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = bigram.get_batch(train_ids, config.batch_size, config.block_size, batch_generator)
        _, loss = model(x.to(device), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            clip_grad_norm(model.parameters(), config.grad_clip)
        optimizer.step()
        train_seconds += time.perf_counter() - started
        updates += 1
        log.write(step, lr, loss.item(), evaluation)
        if evaluation:
            plot_losses(log.path, out_dir / "loss.png")
    log.close()
    plot_losses(log.path, out_dir / "loss.png")
    results = {"train_loss": evaluation["train"], "val_loss": evaluation["val"], "best_val": best_val,
               "steps": config.max_iters, "ms_per_iter": 1000 * train_seconds / max(updates, 1),
               "params": sum(p.numel() for p in model.parameters()), "config": asdict(config),
               "device": _device_name(device)}
    _write_json(out_dir / "results.json", results)
    return results
    ### END SOLUTION


def _restore(path: Path, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
             batch_generator: torch.Generator) -> tuple[int, float]:
    """Load last.pt into the model, optimizer and RNGs; return (step to run next, best validation loss)."""
    state = load_checkpoint(path)
    saved = TrainConfig(**state["config"])
    if replace(saved, max_iters=config.max_iters) != config:
        changed = [f.name for f in fields(config) if getattr(saved, f.name) != getattr(config, f.name)]
        raise ValueError(f"{path} was trained with a different config ({', '.join(changed)} differ); "
                         "resume with the same settings, or start afresh without --resume")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    batch_generator.set_state(state["batch_rng"])
    return state["step"], state["best_val"]


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------
# Commands (given): train, sample, ablation


def load_model(checkpoint: Path) -> tuple[nn.Module, object]:
    """The model and tokenizer saved in a checkpoint, in eval mode."""
    state = load_checkpoint(checkpoint)
    config = TrainConfig(**state["config"])
    tokenizer = bigram.CharTokenizer("".join(state["chars"]))
    model = build_model(config, tokenizer.vocab_size)
    model.load_state_dict(state["model"])
    return model.eval(), tokenizer


def sample(checkpoint: Path, *, prompt: str = "\n", max_new_tokens: int = 500, temperature: float = 1.0,
           seed: int = 0) -> str:
    """Text generated from a checkpoint, starting with `prompt` (which must use characters the model knows)."""
    model, tokenizer = load_model(checkpoint)
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    out = model.generate(idx, max_new_tokens, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    return tokenizer.decode(out[0].tolist())


def shakespeare() -> str:
    from llmfs.data import fetch_file

    return fetch_file("tinyshakespeare").read_text(encoding="utf-8")


def run_ablation(out: Path, results: Path | None = None, *, progress: bool = True) -> list[dict]:
    """Train every stage of the staged table into out/STAGE; write ablation.md, ablation.json and ablation.png
    into `results` (default: `out`)."""
    results_dir = Path(results or out)
    results_dir.mkdir(parents=True, exist_ok=True)
    text, rows = shakespeare(), []
    for stage, (adds, original) in ABLATION_STAGES.items():
        print(f"stage {stage}: {adds}")
        results = train(PRESETS[f"ablation-{stage}"], text, out / stage, progress=progress)
        rows.append({"stage": stage, "adds": adds, "original": original, "val_loss": results["val_loss"],
                     "train_loss": results["train_loss"], "params": results["params"],
                     "ms_per_iter": results["ms_per_iter"]})
        print(f"  val {results['val_loss']:.4f} (original {original:.2f})")
    _write_json(results_dir / "ablation.json", {"stages": rows, "config": dict(_ABLATION),
                                         "torch_threads": torch.get_num_threads()})
    lines = ["| stage | adds | parameters | val loss here | original |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['adds']} | {r['params']:,} | {r['val_loss']:.3f} | {r['original']:.2f} |"
              for r in rows]
    atomic_write_text(results_dir / "ablation.md", "\n".join(lines) + "\n")
    _plot_ablation(rows, results_dir / "ablation.png")
    return rows


def _plot_ablation(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(rows))
    ax.plot(x, [r["original"] for r in rows], "s--", color="gray", label="Let's build GPT (original)")
    ax.plot(x, [r["val_loss"] for r in rows], "o-", color="C3", label="this course (measured)")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['val_loss']:.2f}", (i, r["val_loss"]), textcoords="offset points", xytext=(0, -14),
                    ha="center", fontsize=8)
    ax.set_xticks(list(x), [r["stage"] for r in rows])
    ax.set(ylabel="validation loss (nats)", title="Staged build: batch 32, block 8, n_embd 32, 5000 steps")
    ax.legend()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Milestone 02: train and sample the character GPT.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train a preset on TinyShakespeare")
    run.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    run.add_argument("--out", type=Path, help="output folder (default runs/02/PRESET)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    run.add_argument("--max-iters", type=int, help="override the preset's max_iters (e.g. to train longer)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    gen = commands.add_parser("sample", help="print text sampled from a checkpoint")
    gen.add_argument("checkpoint", type=Path)
    gen.add_argument("--prompt", default="\n")
    gen.add_argument("--tokens", type=int, default=500)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    ablation = commands.add_parser("ablation", help="re-measure the staged table (about 3 minutes on 2 cores)")
    ablation.add_argument("--out", type=Path, default=Path("runs/02/ablation"), help="the runs (checkpoints, logs)")
    ablation.add_argument("--results", type=Path, help="where the table and plot go (default: OUT)")
    args = parser.parse_args(argv)

    if args.command == "train":
        config = PRESETS[args.preset]
        if args.max_iters is not None:
            config = replace(config, max_iters=args.max_iters)
        out = args.out or Path("runs/02") / args.preset
        results = train(config, shakespeare(), out, resume=args.resume, device=args.device)
        print(f"step {results['steps']}: train {results['train_loss']:.4f}, val {results['val_loss']:.4f} "
              f"(best {results['best_val']:.4f}), {results['ms_per_iter']:.1f} ms/iteration")
        print(f"wrote {out}/best.pt, last.pt, losses.csv, loss.png, results.json")
    elif args.command == "sample":
        print(sample(args.checkpoint, prompt=args.prompt, max_new_tokens=args.tokens,
                     temperature=args.temperature, seed=args.seed))
    else:
        for row in run_ablation(args.out, args.results):
            print(f"{row['stage']:>12}  val {row['val_loss']:.4f}  (original {row['original']:.2f})")
        print(f"wrote {args.results or args.out}/ablation.md, ablation.json, ablation.png")


if __name__ == "__main__":
    main()
