"""Public tests for milestone 02, train.py: `pytest milestones/02 -m task02_6` and `-m task02_7`.

The training loop uses your milestone 01 (CharTokenizer, train_val_split, get_batch) and your model.py.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
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


@pytest.mark.task02_6
def test_adamw_uses_each_groups_weight_decay_and_clips_the_global_norm(train):
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    theirs.load_state_dict(ours.state_dict())

    def groups(layer: torch.nn.Linear) -> list[dict]:
        return [{"params": [layer.weight], "weight_decay": 0.5}, {"params": [layer.bias], "weight_decay": 0.0}]

    opt, ref = train.AdamW(groups(ours), lr=0.1, weight_decay=0.01), torch.optim.AdamW(groups(theirs), lr=0.1)
    for layer, optimizer in ((ours, opt), (theirs, ref)):
        for _ in range(3):
            optimizer.zero_grad()
            layer(torch.ones(2, 4)).sum().backward()
            optimizer.step()
    torch.testing.assert_close(ours.weight, theirs.weight)  # decayed with its group's 0.5, not the default 0.01
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])  # the global norm is 5, though each is below it
    assert train.clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(torch.cat([a.grad, b.grad]), torch.tensor([0.6, 0.8]), atol=1e-5, rtol=1e-5)


@pytest.mark.task02_7
def test_evaluate_runs_in_eval_mode(train, model):
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    batches = [(torch.randint(10, (2, 4)), torch.randint(10, (2, 4))) for _ in range(3)]
    first = train.evaluate(gpt, batches)
    assert train.evaluate(gpt, batches) == first  # dropout off: the same loss every time
    assert gpt.training  # and the model is back in the mode it was in


@pytest.mark.task02_7
def test_a_failed_save_keeps_the_previous_checkpoint(train, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    train.save_checkpoint({"step": 1}, path)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):  # half a file, then an error
        with open(f, "wb") if isinstance(f, (str, os.PathLike)) else nullcontext(f) as file:
            file.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        train.save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == before  # write a temporary file beside it, then os.replace
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # and remove the temporary file when saving fails


@pytest.mark.task02_7
def test_each_step_is_the_documented_loop(train, tmp_path):
    config = replace(train.PRESETS["tiny"], max_iters=6, eval_interval=3, eval_iters=1)
    train.train(config, TEXT, tmp_path, progress=False)
    logged = [float(row["loss"]) for row in train.read_log(tmp_path / "losses.csv")[: config.max_iters]]
    # the same six steps, written with torch.optim.AdamW and clip_grad_norm_ as train()'s docstring lists them
    bigram = train.bigram
    tokenizer = bigram.CharTokenizer(TEXT)
    train_ids, _ = bigram.train_val_split(torch.tensor(tokenizer.encode(TEXT)))
    torch.manual_seed(config.seed)
    gpt = train.build_model(config, tokenizer.vocab_size).train()
    optimizer = torch.optim.AdamW(train.param_groups(gpt, config.weight_decay), betas=(config.beta1, config.beta2))
    batch_generator = torch.Generator().manual_seed(config.seed)
    expected = []
    for step in range(config.max_iters):
        for group in optimizer.param_groups:  # the schedule must reach the optimizer
            group["lr"] = train.get_lr(step, max_lr=config.learning_rate, min_lr=config.min_lr,
                                       warmup_iters=config.warmup_iters, lr_decay_iters=config.lr_decay_iters)
        x, y = bigram.get_batch(train_ids, config.batch_size, config.block_size, batch_generator)
        _, loss = gpt(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), config.grad_clip)  # grad_clip = 1.0 > 0
        optimizer.step()
        expected.append(loss.item())
    assert logged == pytest.approx(expected, abs=2e-5)


@pytest.mark.task02_7
def test_training_loop_and_resume(train, tmp_path):
    config = replace(train.PRESETS["tiny"], max_iters=30, eval_interval=10)
    straight = train.train(config, TEXT, tmp_path / "straight", progress=False)
    assert straight["val_loss"] < 3.0
    assert (tmp_path / "straight" / "best.pt").is_file() and (tmp_path / "straight" / "loss.png").is_file()
    train.train(replace(config, max_iters=20), TEXT, tmp_path / "split", progress=False)
    resumed = train.train(config, TEXT, tmp_path / "split", resume=True, progress=False)
    assert resumed["val_loss"] == straight["val_loss"]  # bit for bit, not approximately
    steps = [row["step"] for row in train.read_log(tmp_path / "split" / "losses.csv")]
    assert steps == [row["step"] for row in train.read_log(tmp_path / "straight" / "losses.csv")]  # no row lost
    print(train.sample(tmp_path / "straight" / "best.pt", prompt="First", max_new_tokens=40))
