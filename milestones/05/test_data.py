"""Public tests for milestone 05, data.py (task05_4): `pytest milestones/05 -m task05_4`, or one function at a
time, e.g. `pytest milestones/05 -k next_batch`.

The references are tiktoken's GPT-2 ids and the order the ShardLoader docstring specifies, computed here with
torch.randperm. The hidden tests also tokenize TinyShakespeare and TinyStories and check DDP ranks and speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmfs.data.gpt2_tokenizers import gpt2_tiktoken
from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
data = implementation_fixture("05", "data", default_root=here)
EOT = 50256
DOCS = [f"Document {i} counts {i * 7} sheep and {i * 13 + 1} goats." for i in range(60)] + ["a <|endoftext|> b"]


@pytest.fixture
def shards(tmp_path):
    """Two shards; with T = 8 the windows start at 0, 8, 16, 24 in the first (24 + 9 = 33) and 0, 8 in the second."""
    np.save(tmp_path / "a.npy", np.arange(33, dtype=np.uint16))
    np.save(tmp_path / "b.npy", np.arange(100, 120, dtype=np.uint16))
    return [tmp_path / "a.npy", tmp_path / "b.npy"]


WINDOWS = [(0, 0), (0, 8), (0, 16), (0, 24), (1, 0), (1, 8)]
FIRST = {0: 0, 1: 100}  # the first token of each shard: window (s, start) begins with FIRST[s] + start


@pytest.mark.task05_4
@pytest.mark.checks("tokenize_batch")
def test_tokenize_batch_gives_tiktokens_ids_after_an_endoftext(data):
    encoding = gpt2_tiktoken()
    ids = data.tokenize_batch({"text": DOCS[:3] + DOCS[-1:]})["ids"]
    assert ids == [[EOT, *encoding.encode_ordinary(doc)] for doc in DOCS[:3] + DOCS[-1:]]
    assert ids[-1].count(EOT) == 1  # "<|endoftext|>" inside a document is plain text


@pytest.mark.task05_4
@pytest.mark.checks("write_shards")
def test_write_shards_cuts_the_stream_into_uint16_shards(data, tmp_path):
    encoding = gpt2_tiktoken()
    stream = [t for doc in DOCS for t in (EOT, *encoding.encode_ordinary(doc))]
    paths = data.write_shards(DOCS, tmp_path, "tiny", shard_tokens=100)
    count = -(-len(stream) // 100)
    assert [p.name for p in paths] == ["tiny_val_000000.npy"] + [f"tiny_train_{i:06d}.npy" for i in range(1, count)]
    shards = [np.load(p) for p in paths]
    assert all(s.dtype == np.uint16 for s in shards) and [len(s) for s in shards[:-1]] == [100] * (count - 1)
    assert np.concatenate(shards).tolist() == stream


@pytest.mark.task05_4
@pytest.mark.checks("ShardLoader.windows")
def test_windows_are_every_full_window_t_apart(data, shards):
    assert data.ShardLoader(shards, batch_size=2, block_size=8).windows() == WINDOWS


def epoch_order(seed: int, epoch: int) -> list[tuple[int, int]]:
    """The docstring's order: torch.randperm of the windows, seeded with seed + epoch."""
    return [WINDOWS[i] for i in torch.randperm(6, generator=torch.Generator().manual_seed(seed + epoch))]


@pytest.mark.task05_4
@pytest.mark.checks("ShardLoader.next_batch")
def test_next_batch_reads_the_shuffled_windows_epoch_after_epoch(data, shards):
    loader = data.ShardLoader(shards, batch_size=2, block_size=8, seed=3)
    order = epoch_order(3, 0) + epoch_order(3, 1)  # 6 windows: 3 batches of 2 per epoch
    for b in range(6):
        x, y = loader.next_batch()
        starts = [FIRST[s] + start for s, start in order[2 * b : 2 * b + 2]]
        assert x.dtype == torch.int64 and x.tolist() == [list(range(a, a + 8)) for a in starts], f"batch {b}"
        assert y.tolist() == [list(range(a + 1, a + 9)) for a in starts], f"batch {b}: y is x shifted by one"


@pytest.mark.task05_4
@pytest.mark.checks("ShardLoader.next_batch")
def test_next_batch_gives_ranks_disjoint_windows_and_ends_short_epochs(data, shards):
    ranks = [data.ShardLoader(shards, batch_size=2, block_size=8, seed=0, rank=r, world_size=2) for r in (0, 1)]
    order = epoch_order(0, 0)
    for r, loader in enumerate(ranks):  # rank r reads positions r, r + 2, ... of the epoch's order
        assert loader.next_batch()[0][:, 0].tolist() == [FIRST[s] + start for s, start in order[r::2][:2]]
    loader = data.ShardLoader(shards, batch_size=4, block_size=8, seed=0)
    loader.next_batch()  # 2 windows left: fewer than 4, so the next batch starts epoch 1
    assert loader.next_batch()[0][:, 0].tolist() == [FIRST[s] + start for s, start in epoch_order(0, 1)[:4]]


@pytest.mark.task05_4
@pytest.mark.checks("ShardLoader.state_dict")
def test_state_dict_says_where_the_loader_is(data, shards):
    loader = data.ShardLoader(shards, batch_size=2, block_size=8, seed=5, rank=1, world_size=2)
    assert loader.state_dict() == {"epoch": 0, "position": 0, "seed": 5, "rank": 1, "world_size": 2}
    loader = data.ShardLoader(shards, batch_size=2, block_size=8, seed=5)
    for _ in range(4):  # 3 batches fill epoch 0, the 4th is the first of epoch 1
        loader.next_batch()
    assert loader.state_dict() == {"epoch": 1, "position": 2, "seed": 5, "rank": 0, "world_size": 1}


@pytest.mark.task05_4
@pytest.mark.checks("ShardLoader.load_state_dict")
def test_load_state_dict_continues_exactly(data, shards):
    loader = data.ShardLoader(shards, batch_size=2, block_size=8, seed=0)
    for _ in range(4):
        loader.next_batch()
    state = loader.state_dict()
    expected = [loader.next_batch()[0] for _ in range(3)]  # crossing into the next epoch
    restored = data.ShardLoader(shards, batch_size=2, block_size=8, seed=0)
    restored.load_state_dict(state)
    for x in expected:
        assert torch.equal(restored.next_batch()[0], x)
    with pytest.raises(ValueError, match="seed"):
        data.ShardLoader(shards, batch_size=2, block_size=8, seed=1).load_state_dict(state)
