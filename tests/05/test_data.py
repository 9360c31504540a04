"""Hidden tests for milestone 05, data.py (task 05_4): shards and the shuffled loader.

References: tiktoken's gpt2 encoding of each document (computed here), counting of windows, and the loader
run uninterrupted against the loader saved and restored.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmfs.data import fetch_file
from llmfs.data.gpt2_tokenizers import gpt2_tiktoken
from llmfs.testing import implementation_fixture

data = implementation_fixture("05", "data")
EOT = 50256


@pytest.fixture(scope="module")
def stories() -> list[str]:
    text = fetch_file("tinystories-sample", progress=False).read_text(encoding="utf-8")
    return [doc.strip() for doc in text.split("<|endoftext|>") if doc.strip()]


@pytest.fixture(scope="module")
def shakespeare_shards(data, tmp_path_factory):
    text = fetch_file("tinyshakespeare", progress=False).read_text(encoding="utf-8")
    out = tmp_path_factory.mktemp("shards")
    return data.write_shards([text], out, "shakespeare", shard_tokens=100_000, num_proc=2), text


@pytest.mark.task05_4
@pytest.mark.points(3)
def test_shards_hold_every_document_after_an_endoftext(data, stories, tmp_path):
    """The TinyStories sample: the shards, concatenated, are [EOT] + tiktoken ids of each story, in order"""
    paths = data.write_shards(stories, tmp_path, "stories", shard_tokens=300)
    enc = gpt2_tiktoken()
    expected = [t for doc in stories for t in (EOT, *enc.encode_ordinary(doc))]
    arrays = [np.load(p) for p in paths]
    assert all(a.dtype == np.uint16 for a in arrays)
    assert np.concatenate(arrays).tolist() == expected
    assert [len(a) for a in arrays[:-1]] == [300] * (len(arrays) - 1) and 0 < len(arrays[-1]) <= 300
    assert [p.name for p in paths][:2] == ["stories_val_000000.npy", "stories_train_000001.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary files


@pytest.mark.task05_4
@pytest.mark.points(1)
def test_tinyshakespeare_shards_with_parallel_tokenization(shakespeare_shards):
    """TinyShakespeare in 100K-token shards tokenized by 2 processes: 338,025 tokens + 1 EOT, in 4 shards"""
    paths, text = shakespeare_shards
    tokens = np.concatenate([np.load(p) for p in paths])
    assert len(tokens) == 338_026 and len(paths) == 4
    assert tokens[0] == EOT and tokens[1:].tolist() == gpt2_tiktoken().encode_ordinary(text)


def read_epoch(loader, batches: int) -> list[tuple[int, ...]]:
    rows = []
    for _ in range(batches):
        x, y = loader.next_batch()
        assert x.dtype == torch.long and x.shape == y.shape == (loader.B, loader.T)
        assert torch.equal(x[:, 1:], y[:, :-1])
        rows += [tuple(row.tolist()) for row in torch.cat([x, y[:, -1:]], dim=1)]
    return rows


@pytest.mark.task05_4
@pytest.mark.points(4)
def test_an_epoch_reads_every_window_once_in_a_shuffled_order(data, shakespeare_shards, tmp_path):
    """B=8, T=64 over the shards and a 513-token one: an epoch's windows are all (T+1)-token windows at multiples
    of T (the last one ending exactly at the shard's end too), each once; the next epoch reshuffles them"""
    paths, _ = shakespeare_shards
    edge = tmp_path / "edge_train_000009.npy"
    np.save(edge, np.arange(50_300, 50_813, dtype=np.uint16))  # ids no text has; 8 windows, the last ends at the end
    # (5,288 windows in all: 661 full batches)
    paths = [*paths, edge]
    arrays = [np.load(p).astype(np.int64) for p in paths]
    starts = [(i, s) for i, a in enumerate(arrays) for s in range(0, len(a) - 64, 64)]
    loader = data.ShardLoader(paths, 8, 64, seed=1)
    assert loader.windows() == starts, (
        f"ShardLoader.windows: {len(loader.windows())} windows, expected {len(starts)}: every (shard, start) with "
        "start = 0, T, 2T, ... and start + T + 1 <= len(shard), the last full one included")
    in_order = [tuple(arrays[i][s : s + 65].tolist()) for i, s in starts]
    per_epoch = len(starts) // 8
    first = read_epoch(loader, per_epoch)
    assert len(set(first)) == len(first) == per_epoch * 8 and set(first) <= set(in_order), (
        "ShardLoader.next_batch: an epoch must read distinct windows of the shards, each at most once (a new epoch "
        "starts only when fewer than B windows of this one are left)")
    assert first[:50] != in_order[:50], "ShardLoader.next_batch: the windows must come in the shuffled order"
    second = read_epoch(loader, per_epoch)
    assert loader.epoch == 1 and set(second) <= set(in_order) and len(set(second)) == len(second), (
        f"ShardLoader.next_batch: after two epochs' batches epoch is {loader.epoch}, not 1, or a window came twice")
    assert second[:50] != first[:50], (
        "ShardLoader.next_batch: a new epoch must read a fresh order (rebuild it for the new epoch number)")


@pytest.mark.task05_4
@pytest.mark.points(2)
def test_ranks_read_disjoint_windows(data, shakespeare_shards):
    """Two DDP ranks with the same seed: disjoint windows whose union is what one process reads"""
    paths, _ = shakespeare_shards
    ranks = [data.ShardLoader(paths, 4, 64, seed=3, rank=r, world_size=2) for r in range(2)]
    n = len(ranks[0].all_windows) // 8
    windows = [set(read_epoch(loader, n)) for loader in ranks]
    assert not windows[0] & windows[1]
    assert len(windows[0]) == len(windows[1]) == 4 * n


@pytest.mark.task05_4
@pytest.mark.points(4)
def test_a_restored_loader_continues_exactly(data, shakespeare_shards):
    """state_dict after 700 batches (past an epoch boundary) restores into a new loader that yields the same next
    batches; a different seed or rank refuses the state"""
    paths, _ = shakespeare_shards
    loader = data.ShardLoader(paths, 8, 64, seed=5)
    for _ in range(700):
        loader.next_batch()
    state = loader.state_dict()
    expected = [loader.next_batch() for _ in range(20)]
    restored = data.ShardLoader(paths, 8, 64, seed=5)
    restored.load_state_dict(state)
    for i, ((x, y), (rx, ry)) in enumerate(zip(expected, (restored.next_batch() for _ in range(20)), strict=True)):
        assert torch.equal(x, rx) and torch.equal(y, ry), (
            f"ShardLoader.load_state_dict: batch {i} after the restore differs from the original loader's: restore "
            "the epoch and the position, and rebuild that epoch's order")
    with pytest.raises(ValueError):
        data.ShardLoader(paths, 8, 64, seed=6).load_state_dict(state)
    with pytest.raises(ValueError):
        data.ShardLoader(paths, 8, 64, seed=5, rank=1, world_size=2).load_state_dict(state)
