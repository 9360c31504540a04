"""Public tests for milestone 05, train.py: `pytest milestones/05 -m task05_5` (then task05_6).

The hidden tests also run the tiny preset end to end, kill and resume it (bit for bit), and run it under
`torchrun --nproc_per_node 2` to compare with one process.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

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
