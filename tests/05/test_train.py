"""Hidden tests for milestone 05, train.py (tasks 05_5 and 05_6): optimiser, schedule, accumulation, the loop,
exact resume, and DDP with 2 CPU processes (torchrun, gloo) against one process with the same global batch.

References: the formulas of the schedule, a full-batch backward computed here, an uninterrupted run, and a
single-process run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from llmfs.loader import implementation_root
from llmfs.testing import implementation_fixture, raise_if_stub

train = implementation_fixture("05", "train")
gpt2 = implementation_fixture("05", "gpt2")


def tiny_model(gpt2, seed=0):
    torch.manual_seed(seed)
    return gpt2.GPT(gpt2.GPTConfig(block_size=16, vocab_size=60, n_layer=2, n_head=2, n_embd=32))


# ---------------------------------------------------------------------------------------------- task05_5


@pytest.mark.task05_5
@pytest.mark.points(3)
def test_weight_decay_only_on_matrices(train, gpt2):
    """Two groups: every >=2-D parameter decays (the tied wte once), biases and LayerNorms do not; betas (0.9, 0.95)"""
    model = tiny_model(gpt2)
    optimizer = train.configure_optimizers(model, 0.1, 3e-4)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    plain = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    params = list(model.parameters())
    assert decayed == {id(p) for p in params if p.dim() >= 2} and plain == {id(p) for p in params if p.dim() < 2}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(params)
    assert all(g["betas"] == (0.9, 0.95) for g in optimizer.param_groups)


@pytest.mark.task05_5
@pytest.mark.points(3)
def test_learning_rate_schedule(train):
    """Linear warmup to max_lr, cosine to 10% at max_steps, then flat: checked against the formula"""
    config = replace(train.PRESETS["tiny"], max_lr=6e-4, warmup_steps=10, max_steps=100)
    assert train.get_lr(0, config) == pytest.approx(6e-5)
    assert train.get_lr(9, config) == pytest.approx(6e-4)
    for step in (10, 37, 55, 99):
        ratio = 0.5 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert train.get_lr(step, config) == pytest.approx(6e-5 + ratio * (6e-4 - 6e-5))
    assert train.get_lr(100, config) == train.get_lr(5000, config) == pytest.approx(6e-5)


@pytest.mark.task05_5
@pytest.mark.points(4)
def test_accumulated_gradients_equal_the_full_batch(train, gpt2):
    """4 micro-batches of 2 give the gradient of one batch of 8 (and its loss)"""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(60, (8, 16), generator=g), torch.randint(60, (8, 16), generator=g)
    full, accumulated = tiny_model(gpt2), tiny_model(gpt2)
    _, loss = full(x, y)
    loss.backward()
    mean = train.accumulate_gradients(accumulated, [(x[i : i + 2], y[i : i + 2]) for i in range(0, 8, 2)])
    assert float(mean) == pytest.approx(loss.item(), rel=1e-5)
    for (name, a), b in zip(full.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.fixture(scope="module")
def tiny_run(train, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return out, train.train(train.PRESETS["tiny"], out, progress=False)


@pytest.mark.task05_5
@pytest.mark.points(4)
def test_the_tiny_preset_trains_end_to_end(tiny_run, leaderboard):
    """TinyShakespeare shards, 30 steps: the loss falls from ~ln(50304), and the log, plot, checkpoint, results exist"""
    out, results = tiny_run
    assert {"losses.csv", "loss.png", "last.pt", "results.json"} <= {p.name for p in out.iterdir()}
    rows = (out / "losses.csv").read_text().splitlines()
    assert len(rows) == 31  # a header and 30 steps
    first = float(rows[1].split(",")[2])
    assert abs(first - math.log(50304)) < 0.5 and results["final_train_loss"] < first - 2
    tokens_per_s = json.loads((out / "results.json").read_text())["tokens_per_s"]
    assert results["val_loss"] < first - 2 and tokens_per_s > 0
    leaderboard("tiny preset: training tokens/s", tokens_per_s, order="desc")
    leaderboard("tiny preset: validation loss", results["val_loss"], order="asc")


@pytest.mark.task05_5
@pytest.mark.points(4)
def test_a_crashed_run_resumes_bit_for_bit(train, tiny_run, tmp_path):
    """Stopped at step 25 (last checkpoint at 20) and resumed: the final weights equal the uninterrupted run's"""
    out, _ = tiny_run
    train.train(train.PRESETS["tiny"], tmp_path, progress=False, stop_at=25)
    train.train(train.PRESETS["tiny"], tmp_path, progress=False, resume=True)
    straight = torch.load(out / "last.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert (out / "losses.csv").read_text() == (tmp_path / "losses.csv").read_text()


@pytest.mark.task05_5
@pytest.mark.points(2)
def test_gpu_speed_flags_are_harmless_on_cpu(train, tmp_path):
    """bf16, tf32, compile and flash set on CPU: 3 steps run; flash attention gives the same first loss"""
    config = replace(train.PRESETS["tiny"], max_steps=3, bf16=True, tf32=True, compile=True, flash=True)
    results = train.train(config, tmp_path, progress=False)
    plain = train.train(replace(train.PRESETS["tiny"], max_steps=3), tmp_path / "plain", progress=False)
    assert results["final_train_loss"] == pytest.approx(plain["final_train_loss"], rel=1e-4)


# ---------------------------------------------------------------------------------------------- task05_6


@pytest.mark.task05_6
@pytest.mark.slow
@pytest.mark.points(6)
def test_ddp_on_two_cpu_processes_equals_one_process(train, tmp_path):
    """torchrun --nproc_per_node 2 (gloo) on the tiny preset for 6 steps: the weights equal one process's with the
    same global batch of 512 tokens (one micro-batch per rank against two accumulated)"""
    script = implementation_root() / "05" / "train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", str(script), "train", "--preset", "tiny", "--device", "cpu", "--set", "max_steps=6",
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
    for key in b["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=2e-5, rtol=1e-4, msg=key)
