"""Public tests for milestone 02, train.py: `pytest milestones/02 -m task02_7`, or one function with
`-k evaluate`, `-k save_checkpoint`, `-k test_train_`.

Each test checks one function (its `checks` marker names it). The training loop uses your milestone 01
(CharTokenizer, train_val_split, get_batch), your model.py and your optim.py.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmfs.testing import implementation_fixture

ROOT = Path(__file__).resolve().parents[1]
model = implementation_fixture("02", "model", default_root=ROOT)
train = implementation_fixture("02", "train", default_root=ROOT)
presets = implementation_fixture("02", "presets", default_root=ROOT)
logs = implementation_fixture("02", "logs", default_root=ROOT)
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


@pytest.mark.task02_7
@pytest.mark.checks("evaluate")
def test_evaluate_is_the_mean_loss_in_eval_mode(train, model):
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    batches = [(torch.randint(10, (2, 4)), torch.randint(10, (2, 4))) for _ in range(3)]
    first = train.evaluate(gpt, batches)
    assert gpt.training  # the model is back in the mode it was in
    assert train.evaluate(gpt, batches) == first  # dropout off: the same loss every time
    gpt.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(gpt(x)[0].view(8, 10), y.view(8)).item() for x, y in batches]
    assert first == pytest.approx(sum(losses) / len(losses), rel=1e-6)


@pytest.mark.task02_7
@pytest.mark.checks("save_checkpoint")
def test_save_checkpoint_round_trip(train, tmp_path):
    path = tmp_path / "new" / "ckpt.pt"  # the folder does not exist yet
    train.save_checkpoint({"step": 3, "w": torch.arange(4.0)}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 3 and torch.equal(loaded["w"], torch.arange(4.0))


@pytest.mark.task02_7
@pytest.mark.checks("save_checkpoint")
def test_save_checkpoint_a_failed_save_keeps_the_previous_checkpoint(train, tmp_path, monkeypatch):
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


def documented_lr(step: int, config) -> float:
    """get_lr's schedule, from its docstring: linear warmup, cosine decay, then min_lr."""
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / (config.warmup_iters + 1)
    ratio = min(1.0, (step - config.warmup_iters) / (config.lr_decay_iters - config.warmup_iters))
    return config.min_lr + (config.learning_rate - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * ratio))


@pytest.mark.task02_7
@pytest.mark.checks("train")
def test_train_each_step_is_the_documented_loop(train, presets, logs, tmp_path):
    config = replace(presets.PRESETS["tiny"], max_iters=6, eval_interval=3, eval_iters=1)
    train.train(config, TEXT, tmp_path, progress=False)
    logged = [float(row["loss"]) for row in logs.read_log(tmp_path / "losses.csv")[: config.max_iters]]
    # the same six steps, written with torch.optim.AdamW and clip_grad_norm_ as train()'s docstring lists them
    bigram = train.bigram
    tokenizer = bigram.CharTokenizer(TEXT)
    train_ids, _ = bigram.train_val_split(torch.tensor(tokenizer.encode(TEXT)))
    torch.manual_seed(config.seed)
    gpt = presets.build_model(config, tokenizer.vocab_size).train()
    optimizer = torch.optim.AdamW(presets.param_groups(gpt, config.weight_decay), betas=(config.beta1, config.beta2))
    batch_generator = torch.Generator().manual_seed(config.seed)
    expected = []
    for step in range(config.max_iters):
        for group in optimizer.param_groups:  # the schedule must reach the optimizer
            group["lr"] = documented_lr(step, config)
        x, y = bigram.get_batch(train_ids, config.batch_size, config.block_size, batch_generator)
        _, loss = gpt(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), config.grad_clip)  # grad_clip = 1.0 > 0
        optimizer.step()
        expected.append(loss.item())
    assert logged == pytest.approx(expected, abs=2e-5)


@pytest.mark.task02_7
@pytest.mark.checks("train")
def test_train_learns_and_resumes_bit_for_bit(train, presets, logs, tmp_path):
    config = replace(presets.PRESETS["tiny"], max_iters=20, eval_interval=10, eval_iters=2)
    straight = train.train(config, TEXT, tmp_path / "straight", progress=False)
    assert straight["val_loss"] < 3.0
    assert (tmp_path / "straight" / "best.pt").is_file() and (tmp_path / "straight" / "loss.png").is_file()
    train.train(replace(config, max_iters=10), TEXT, tmp_path / "split", progress=False)
    resumed = train.train(config, TEXT, tmp_path / "split", resume=True, progress=False)
    assert resumed["val_loss"] == straight["val_loss"]  # bit for bit, not approximately
    steps = [row["step"] for row in logs.read_log(tmp_path / "split" / "losses.csv")]
    assert steps == [row["step"] for row in logs.read_log(tmp_path / "straight" / "losses.csv")]  # no row lost
    print(train.sample(tmp_path / "straight" / "best.pt", prompt="First", max_new_tokens=40))
