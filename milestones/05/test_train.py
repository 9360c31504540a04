"""Public tests for milestone 05, train.py: `pytest milestones/05 -m task05_5` (then task05_6).

The hidden tests also run the tiny preset end to end, kill and resume it (bit for bit), and run it under
`torchrun --nproc_per_node 2` to compare with one process.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture, raise_if_stub

here = Path(__file__).resolve().parents[1]
train = implementation_fixture("05", "train", default_root=here)
gpt2 = implementation_fixture("05", "gpt2", default_root=here)


@pytest.mark.task05_5
def test_schedule_groups_and_accumulation(train, gpt2):
    config = replace(train.PRESETS["tiny"], max_lr=1.0, warmup_steps=4, max_steps=14, min_lr_ratio=0.1)
    assert [round(train.get_lr(s, config), 4) for s in (0, 3, 9, 14)] == [0.25, 1.0, 0.55, 0.1]
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig(block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=8))
    optimizer = train.configure_optimizers(model, 0.1, 1e-3)
    assert sorted(len(g["params"]) for g in optimizer.param_groups) == [6, 10]  # 6 matrices; 4 biases, 3 LayerNorms
    x = torch.randint(20, (4, 8))
    loss = train.accumulate_gradients(model, [(x[:2], x[:2]), (x[2:], x[2:])])
    assert math.isfinite(float(loss))


@pytest.mark.task05_5
def test_accumulation_gives_the_full_batch_loss_and_gradient(train, gpt2):
    config = gpt2.GPTConfig(block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=8)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(gpt2.GPT(config))
    full, accumulated = models
    x = torch.randint(20, (4, 8), generator=torch.Generator().manual_seed(1))
    _, loss = full(x, x)  # one batch of 4
    loss.backward()
    mean = train.accumulate_gradients(accumulated, [(x[:2], x[:2]), (x[2:], x[2:])])  # two micro-batches of 2
    assert float(mean) == pytest.approx(loss.item(), rel=1e-5)  # the mean of the two, not their sum
    for (name, a), b in zip(full.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.task05_5
def test_a_crashed_run_resumes_bit_for_bit(train, tmp_path):
    config = replace(train.PRESETS["tiny"], max_steps=12, eval_interval=5, eval_batches=2)
    train.train(config, tmp_path / "straight", progress=False)
    train.train(config, tmp_path / "crashed", progress=False, stop_at=8)  # as if killed at step 8 (saved at 5)
    train.train(config, tmp_path / "crashed", progress=False, resume=True)
    straight, resumed = (torch.load(tmp_path / run / "last.pt", weights_only=True) for run in ("straight", "crashed"))
    for name, weight in straight["model"].items():  # the optimizer's moments and the loader's place restored too
        assert torch.equal(resumed["model"][name], weight), f"{name} differs after the resume"
    assert (tmp_path / "straight" / "losses.csv").read_text() == (tmp_path / "crashed" / "losses.csv").read_text()
    last_lr = resumed["optimizer"]["param_groups"][0]["lr"]  # every step sets get_lr(step) on the optimizer
    assert last_lr == pytest.approx(train.get_lr(config.max_steps - 1, config))


@pytest.mark.task05_6
def test_torchrun_with_two_processes_equals_one(train, tmp_path):
    script, env = Path(train.__file__), {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["train", "--preset", "tiny", "--device", "cpu", "--set", "max_steps=4"]
    for out, launcher in (("ddp", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]),
                          ("one", [])):
        run = subprocess.run([sys.executable, *launcher, str(script), *common, "--out", str(tmp_path / out)],
                             capture_output=True, text=True, timeout=300, env=env)
        raise_if_stub(run.stdout + run.stderr)  # train() still to write: say so, not a torchrun traceback
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    ddp, one = (torch.load(tmp_path / out / "last.pt", weights_only=True) for out in ("ddp", "one"))
    assert [loader["rank"] for loader in ddp["loader"]] == [0, 1]  # each rank reads its own windows
    for name, weight in one["model"].items():  # gradients averaged over the ranks: one process's update
        torch.testing.assert_close(ddp["model"][name], weight, atol=2e-5, rtol=1e-4, msg=name)
    logs = [(tmp_path / out / "losses.csv").read_text().splitlines() for out in ("ddp", "one")]
    for ddp_row, one_row in zip(*logs, strict=True):  # all_mean: the loss averaged over the ranks, not summed
        assert ddp_row.split(",")[:2] == one_row.split(",")[:2]
        if ddp_row.split(",")[2] and not ddp_row.startswith("step"):
            assert float(ddp_row.split(",")[2]) == pytest.approx(float(one_row.split(",")[2]), abs=1e-4)


@pytest.mark.task05_6
def test_setup_distributed_starts_a_gloo_group_under_torchrun(train, monkeypatch):
    import socket

    import torch.distributed as dist

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)  # what torchrun sets, for a world of one process
    state = train.setup_distributed("cpu")
    try:
        assert dist.is_initialized() and dist.get_backend() == "gloo" and (state.rank, state.world_size) == (0, 1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
