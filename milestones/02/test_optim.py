"""Public tests for milestone 02, optim.py: `pytest milestones/02 -m task02_6`, or one function with
`-k adamw_step`, `-k get_lr`, `-k clip_grad_norm`.

Each test checks one function (its `checks` marker names it) against torch.optim.AdamW,
torch.nn.utils.clip_grad_norm_ or numbers worked out by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

optim = implementation_fixture("02", "optim", default_root=Path(__file__).resolve().parents[1])


def twin_layers() -> tuple[torch.nn.Linear, torch.nn.Linear]:
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.task02_6
@pytest.mark.checks("AdamW.step")
def test_adamw_step_matches_torch(optim):
    ours, theirs = twin_layers()
    opt = optim.AdamW(ours.parameters(), lr=0.1, weight_decay=0.1)
    ref = torch.optim.AdamW(theirs.parameters(), lr=0.1, weight_decay=0.1)
    x = torch.randn(8, 4)
    for _ in range(5):
        for layer, optimizer in ((ours, opt), (theirs, ref)):
            optimizer.zero_grad()
            layer(x).pow(2).sum().backward()
            optimizer.step()
    torch.testing.assert_close(ours.weight, theirs.weight)
    assert set(opt.state[ours.weight]) >= {"exp_avg", "exp_avg_sq", "step"}


@pytest.mark.task02_6
@pytest.mark.checks("AdamW.step")
def test_adamw_step_uses_each_groups_weight_decay(optim):
    ours, theirs = twin_layers()

    def groups(layer: torch.nn.Linear) -> list[dict]:
        return [{"params": [layer.weight], "weight_decay": 0.5}, {"params": [layer.bias], "weight_decay": 0.0}]

    opt, ref = optim.AdamW(groups(ours), lr=0.1, weight_decay=0.01), torch.optim.AdamW(groups(theirs), lr=0.1)
    for layer, optimizer in ((ours, opt), (theirs, ref)):
        for _ in range(3):
            optimizer.zero_grad()
            layer(torch.ones(2, 4)).sum().backward()
            optimizer.step()
    torch.testing.assert_close(ours.weight, theirs.weight)  # decayed with its group's 0.5, not the default 0.01
    torch.testing.assert_close(ours.bias, theirs.bias)


@pytest.mark.task02_6
@pytest.mark.checks("get_lr")
def test_get_lr_warmup_cosine_then_constant(optim):
    kw = {"max_lr": 1.0, "min_lr": 0.1, "warmup_iters": 4, "lr_decay_iters": 14}
    assert optim.get_lr(0, **kw) == pytest.approx(0.2)  # (0 + 1) / (4 + 1)
    assert optim.get_lr(3, **kw) == pytest.approx(0.8)
    assert optim.get_lr(4, **kw) == pytest.approx(1.0)  # the top of the cosine
    assert optim.get_lr(9, **kw) == pytest.approx(0.55)  # halfway down: (1.0 + 0.1) / 2
    assert optim.get_lr(14, **kw) == pytest.approx(0.1)
    assert optim.get_lr(20, **kw) == pytest.approx(0.1)


@pytest.mark.task02_6
@pytest.mark.checks("clip_grad_norm")
def test_clip_grad_norm_scales_by_the_global_norm(optim):
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])  # the global norm is 5, though each is below it
    assert optim.clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(torch.cat([a.grad, b.grad]), torch.tensor([0.6, 0.8]), atol=1e-5, rtol=1e-5)


@pytest.mark.task02_6
@pytest.mark.checks("clip_grad_norm")
def test_clip_grad_norm_matches_torch(optim):
    torch.manual_seed(0)
    ours, theirs = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))], []
    for p in ours:
        p.grad = torch.randn_like(p)
        theirs.append(torch.nn.Parameter(p.detach().clone()))
        theirs[-1].grad = p.grad.clone()
    for max_norm in (1e6, 0.5):  # below the limit: unchanged; above: scaled
        norm = optim.clip_grad_norm(ours, max_norm)
        assert norm == pytest.approx(torch.nn.utils.clip_grad_norm_(theirs, max_norm).item(), rel=1e-6)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a.grad, b.grad)
