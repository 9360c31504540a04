"""Public tests for milestone 02, train.py: `pytest milestones/02 -m task02_6` and `-m task02_7`.

The training loop uses your milestone 01 (CharTokenizer, train_val_split, get_batch) and your model.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

ROOT = Path(__file__).resolve().parents[1]
model = implementation_fixture("02", "model", default_root=ROOT)
train = implementation_fixture("02", "train", default_root=ROOT)
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


@pytest.mark.task02_6
def test_adamw_matches_torch(train):
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    theirs.load_state_dict(ours.state_dict())
    opt = train.AdamW(ours.parameters(), lr=0.1, weight_decay=0.1)
    ref = torch.optim.AdamW(theirs.parameters(), lr=0.1, weight_decay=0.1)
    x = torch.randn(8, 4)
    for _ in range(5):
        for layer, optimizer in ((ours, opt), (theirs, ref)):
            optimizer.zero_grad()
            layer(x).pow(2).sum().backward()
            optimizer.step()
    torch.testing.assert_close(ours.weight, theirs.weight)


@pytest.mark.task02_6
def test_schedule_and_clipping(train):
    kw = {"max_lr": 1.0, "min_lr": 0.1, "warmup_iters": 4, "lr_decay_iters": 14}
    assert train.get_lr(0, **kw) == pytest.approx(0.2)  # (0 + 1) / (4 + 1)
    assert train.get_lr(4, **kw) == pytest.approx(1.0)  # the top of the cosine
    assert train.get_lr(9, **kw) == pytest.approx(0.55)  # halfway down: (1.0 + 0.1) / 2
    assert train.get_lr(20, **kw) == pytest.approx(0.1)
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])  # norm 5
    assert train.clip_grad_norm([p], 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]), atol=1e-5, rtol=1e-5)


@pytest.mark.task02_7
def test_training_loop_and_resume(train, tmp_path):
    config = replace(train.PRESETS["tiny"], max_iters=30, eval_interval=10)
    straight = train.train(config, TEXT, tmp_path / "straight", progress=False)
    assert straight["val_loss"] < 3.0
    assert (tmp_path / "straight" / "best.pt").is_file() and (tmp_path / "straight" / "loss.png").is_file()
    train.train(replace(config, max_iters=20), TEXT, tmp_path / "split", progress=False)
    resumed = train.train(config, TEXT, tmp_path / "split", resume=True, progress=False)
    assert resumed["val_loss"] == straight["val_loss"]  # bit for bit, not approximately
    print(train.sample(tmp_path / "straight" / "best.pt", prompt="First", max_new_tokens=40))
