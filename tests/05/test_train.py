"""Hidden tests for milestone 05, train.py (tasks 05_5 and 05_6): optimiser, schedule, accumulation, the loop,
exact resume, and DDP with 2 CPU processes (torchrun, gloo) against one process with the same global batch.

References: the formulas of the schedule, a full-batch backward computed here, an uninterrupted run, and a
single-process run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmfs.loader import implementation_root
from llmfs.testing import implementation_fixture, raise_if_stub

train = implementation_fixture("05", "train")
gpt2 = implementation_fixture("05", "gpt2")


def tiny_model(gpt2, seed=0):
    torch.manual_seed(seed)
    return gpt2.GPT(gpt2.GPTConfig(block_size=16, vocab_size=60, n_layer=2, n_head=2, n_embd=32))


def log_rows(out: Path) -> list[dict[str, str]]:
    with (out / "losses.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def schedule(step: int, max_lr: float, warmup: int, max_steps: int, min_ratio: float = 0.1) -> float:
    """The learning rate the course specifies (linear warmup, cosine to min_ratio * max_lr), written out here."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (max_steps - warmup))
    return max_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------------------------- task05_5


@pytest.mark.task05_5
@pytest.mark.points(2)
def test_weight_decay_only_on_matrices(train, gpt2):
    """Two groups: every >=2-D parameter decays (the tied wte once), biases and LayerNorms do not; betas (0.9, 0.95)"""
    model = tiny_model(gpt2)
    optimizer = train.configure_optimizers(model, 0.1, 3e-4)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    plain = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    params = list(model.parameters())
    assert decayed == {id(p) for p in params if p.dim() >= 2} and plain == {id(p) for p in params if p.dim() < 2}, (
        "configure_optimizers: a group with weight_decay for every parameter of 2 or more dimensions, and one with "
        "weight_decay 0.0 for the rest (biases, LayerNorm weights)")
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(params), (
        "configure_optimizers: each parameter in exactly one group (the tied wte/lm_head once)")
    assert all(g["betas"] == (0.9, 0.95) for g in optimizer.param_groups), "configure_optimizers: betas (0.9, 0.95)"


@pytest.mark.task05_5
@pytest.mark.points(2)
def test_learning_rate_schedule(train):
    """Linear warmup to max_lr, cosine to 10% at max_steps, then flat: checked against the formula"""
    config = replace(train.PRESETS["tiny"], max_lr=6e-4, warmup_steps=10, max_steps=100)
    assert train.get_lr(0, config) == pytest.approx(6e-5), (
        f"get_lr(0) is {train.get_lr(0, config):.3g}: warmup step 0 already learns at max_lr * 1 / warmup_steps")
    assert train.get_lr(9, config) == pytest.approx(6e-4), "get_lr: the last warmup step reaches max_lr"
    for step in (10, 37, 55, 99):
        ratio = 0.5 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert train.get_lr(step, config) == pytest.approx(6e-5 + ratio * (6e-4 - 6e-5)), (
            f"get_lr({step}): the cosine from max_lr at warmup_steps to min_lr at max_steps")
    assert train.get_lr(100, config) == train.get_lr(5000, config) == pytest.approx(6e-5), (
        "get_lr: min_lr = max_lr * min_lr_ratio from max_steps on")


@pytest.mark.task05_5
@pytest.mark.points(2)
def test_accumulated_gradients_equal_the_full_batch(train, gpt2):
    """4 micro-batches of 2 give the gradient of one batch of 8 (and its loss)"""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(60, (8, 16), generator=g), torch.randint(60, (8, 16), generator=g)
    full, accumulated = tiny_model(gpt2), tiny_model(gpt2)
    _, loss = full(x, y)
    loss.backward()
    mean = train.accumulate_gradients(accumulated, [(x[i : i + 2], y[i : i + 2]) for i in range(0, 8, 2)])
    assert float(mean) == pytest.approx(loss.item(), rel=1e-5), (
        f"accumulate_gradients returned {float(mean):.4f}, the full batch's loss is {loss.item():.4f}: return the mean "
        "of the micro-batches' losses (each divided by len(batches))")
    for (name, a), b in zip(full.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=(
            f"accumulate_gradients: {name}.grad differs from the full batch's: backward through each micro-batch's "
            "loss divided by len(batches)"))


@pytest.fixture(scope="module")
def tiny_run(train, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return out, train.train(train.PRESETS["tiny"], out, progress=False)


@pytest.mark.task05_5
@pytest.mark.points(3)
def test_the_tiny_preset_trains_end_to_end(tiny_run, leaderboard):
    """TinyShakespeare shards, 30 steps: the loss falls from ~ln(50304), the lr follows the schedule, and the log,
    plot, checkpoint, results exist"""
    out, results = tiny_run
    assert {"losses.csv", "loss.png", "last.pt", "results.json"} <= {p.name for p in out.iterdir()}
    rows = log_rows(out)
    assert [int(row["step"]) for row in rows] == list(range(30)), "train: losses.csv needs one row per step"
    for row in rows:
        step, expected = int(row["step"]), schedule(int(row["step"]), 1e-2, 5, 30)
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-4), (
            f"train: losses.csv's lr at step {step} is {row['lr']}, the schedule gives {expected:.6g} (get_lr: warmup "
            "max_lr * (step + 1) / warmup_steps, then the cosine)")
    first = float(rows[0]["loss"])
    assert abs(first - math.log(50304)) < 0.5, (
        f"train: the first step's loss is {first:.3f}, not about ln(50304) = 10.83: log the mean loss of the step's "
        "micro-batches (accumulate_gradients)")
    assert results["final_train_loss"] < first - 2, f"train: the loss only fell from {first:.3f}"
    tokens_per_s = json.loads((out / "results.json").read_text())["tokens_per_s"]
    assert results["val_loss"] < first - 2 and tokens_per_s > 0
    leaderboard("tiny preset: training tokens/s", tokens_per_s, order="desc")
    leaderboard("tiny preset: validation loss", results["val_loss"], order="asc")


@pytest.mark.task05_5
@pytest.mark.points(5)
def test_a_crashed_run_resumes_bit_for_bit(train, tmp_path):
    """The tiny preset for 12 steps, checkpoints every 5: stopped at step 8 (last checkpoint at 5) and resumed, it
    ends with the uninterrupted run's weights and log"""
    config = replace(train.PRESETS["tiny"], max_steps=12, eval_interval=5, eval_batches=2)
    out, crashed = tmp_path / "straight", tmp_path / "crashed"
    train.train(config, out, progress=False)
    train.train(config, crashed, progress=False, stop_at=8)
    train.train(config, crashed, progress=False, resume=True)
    straight = torch.load(out / "last.pt", weights_only=True)["model"]
    resumed = torch.load(crashed / "last.pt", weights_only=True)["model"]
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not differ, (
        f"train(resume=True): {differ[0]} differs from the uninterrupted run's at the end: restore the model, the "
        "optimizer (AdamW's moments), the loader's position and the step from last.pt")
    assert (out / "losses.csv").read_text() == (crashed / "losses.csv").read_text(), (
        "train(resume=True): losses.csv differs from the uninterrupted run's")


@pytest.mark.task05_5
@pytest.mark.points(1)
def test_gpu_speed_flags_are_harmless_on_cpu(train, tmp_path):
    """bf16, tf32, compile and flash set on CPU: 3 steps run; flash attention gives the same first loss"""
    config = replace(train.PRESETS["tiny"], max_steps=3, bf16=True, tf32=True, compile=True, flash=True)
    results = train.train(config, tmp_path, progress=False)
    plain = train.train(replace(train.PRESETS["tiny"], max_steps=3), tmp_path / "plain", progress=False)
    assert results["final_train_loss"] == pytest.approx(plain["final_train_loss"], rel=1e-4)


@pytest.mark.task05_5
@pytest.mark.points(5)
def test_the_loop_clips_gradients_and_decays_only_matrices(train, tmp_path):
    """3 steps with grad_clip=1e-12: the clipped gradient moves no weight by more than 1e-8, so the run ends where
    weight decay alone leads: matrices times (1 - lr wd) for each step's lr (2e-3, 4e-3, 6e-3), the rest unchanged"""
    config = replace(train.PRESETS["tiny"], max_steps=3, grad_clip=1e-12, eval_batches=1)
    train.train(config, tmp_path / "start", progress=False, stop_at=1)  # last.pt: the weights before any step
    initial = torch.load(tmp_path / "start" / "last.pt", weights_only=True)["model"]
    train.train(replace(config, data=str(tmp_path / "start" / "shards")), tmp_path / "end", progress=False)
    final = torch.load(tmp_path / "end" / "last.pt", weights_only=True)["model"]
    factor = math.prod(1 - schedule(step, 1e-2, 5, 3) * 0.1 for step in range(3))
    for name, w0 in initial.items():
        problem = decay_problem(name, w0, final[name], factor)
        assert problem is None, problem


def decay_problem(name: str, w0: torch.Tensor, w: torch.Tensor, factor: float) -> str | None:
    """Why `w` is not where weight decay alone takes `w0` (None if it is)."""
    expected = w0 * factor if w0.dim() >= 2 else w0
    moved = (w - expected).abs().max().item()
    if moved <= 1e-6:
        return None
    if w0.dim() < 2 and torch.allclose(w, w0 * factor, atol=1e-6):
        return (f"configure_optimizers (as train uses it): {name} decayed; biases and LayerNorm weights take "
                "weight_decay 0.0")
    shrink = float((w * w0).sum() / (w0 * w0).sum()) if w0.any() else 1.0
    if w0.dim() >= 2 and torch.allclose(w, w0 * shrink, atol=1e-6):
        return (f"train: {name} shrank by the factor {shrink:.6f}, weight decay at the schedule's rates gives "
                f"{factor:.6f}: set every param group's lr to get_lr(step) before optimizer.step()")
    return (f"train: with grad_clip=1e-12, {name} moved {moved:.2g} beyond weight decay: clip the gradients "
            "(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)) before optimizer.step()")


# ---------------------------------------------------------------------------------------------- task05_6


def setup_in_a_world_of_one(train, monkeypatch) -> None:
    """setup_distributed with what torchrun sets for one process, then the group destroyed again."""
    import socket

    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with monkeypatch.context() as env:
        for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": str(port)}.items():
            env.setenv(name, value)
        try:
            train.setup_distributed("cpu")
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()


@pytest.mark.task05_6
@pytest.mark.slow
@pytest.mark.points(6)
def test_ddp_on_two_cpu_processes_equals_one_process(train, tmp_path, monkeypatch):
    """torchrun --nproc_per_node 2 (gloo) on the tiny preset for 6 steps: the weights equal one process's with the
    same global batch of 512 tokens (one micro-batch per rank against two accumulated)"""
    setup_in_a_world_of_one(train, monkeypatch)  # a stub fails here at once, not after torchrun has started
    script = implementation_root() / "05" / "train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), "train", "--preset", "tiny", "--device", "cpu", "--set", "max_steps=6",
                          "--out", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=240, env=env)
    raise_if_stub(ddp.stdout + ddp.stderr)
    assert ddp.returncode == 0, (ddp.stdout + ddp.stderr)[-3000:]
    single = subprocess.run([sys.executable, str(script), "train", "--preset", "tiny", "--device", "cpu", "--set",
                             "max_steps=6", "--out", str(tmp_path / "one")], capture_output=True, text=True,
                            timeout=240, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    a = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    assert len(a["loader"]) == 2 and len(b["loader"]) == 1
    assert [state["rank"] for state in a["loader"]] == [0, 1], (
        "train under torchrun: rank r's ShardLoader must have rank=r and world_size=2, so each rank reads its own "
        "windows")
    for key in b["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=2e-5, rtol=1e-4, msg=(
            f"torchrun with 2 processes: {key} differs from one process's with the same global batch: DDP must "
            "average the ranks' gradients (require_backward_grad_sync on the last micro-batch) and each rank read "
            "its own windows"))
    for ddp_row, one_row in zip(log_rows(tmp_path / "ddp"), log_rows(tmp_path / "one"), strict=True):
        assert float(ddp_row["loss"]) == pytest.approx(float(one_row["loss"]), abs=1e-4), (
            f"torchrun with 2 processes: step {ddp_row['step']}'s logged loss is {ddp_row['loss']}, one process "
            f"logs {one_row['loss']}: all_mean must average over the ranks (all_reduce SUM, then / world_size)")
