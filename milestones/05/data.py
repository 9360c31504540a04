"""Milestone 05: training data as build-nanogpt prepares it: GPT-2 tokens in uint16 shards, read in shuffled windows.

Tokenizing a corpus is done once: every document becomes [<|endoftext|>] + its GPT-2 tokens, and the stream is
cut into shards of a fixed number of tokens saved as uint16 .npy files (GPT-2's 50,257 ids fit in 16 bits),
the first shard for validation. Training then reads windows of block_size + 1 tokens from memory-mapped
shards. build-nanogpt first read them in order, which repeats the same sequence of batches every epoch and
shows in the loss as a periodic pattern; here every epoch visits every window exactly once in a fresh random
order (from the seed and the epoch number), DDP ranks take disjoint windows, and the position can be saved.

    task05_4  tokenize_batch, write_shards, ShardLoader.windows, ShardLoader.next_batch, ShardLoader.state_dict,
              ShardLoader.load_state_dict
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

EOT = 50256  # <|endoftext|>: begins every document


def _gpt2_encoding():
    from llmfs.data.gpt2_tokenizers import gpt2_tiktoken

    return gpt2_tiktoken()


def save_shard(path: Path, tokens: np.ndarray) -> None:
    """np.save to a temporary file in the same folder, then rename: a shard is whole or absent."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, tokens)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------
# task05_4: shards and the shuffled loader


def tokenize_batch(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
    """A `datasets.Dataset.map(batched=True)` function: {"text": [doc, ...]} -> {"ids": [[EOT, tokens...], ...]}
    with GPT-2's tokenizer (tiktoken's gpt2, `encode_ordinary`: special tokens in the text are plain text)."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `tokenize_batch` in milestones/05/data.py (see milestones/05/README.md)')


def write_shards(documents: Iterable[str], out_dir: str | os.PathLike[str], name: str,
                 shard_tokens: int = 100_000_000, num_proc: int = 1) -> list[Path]:
    """Tokenize `documents` with `tokenize_batch` (through `datasets`, `num_proc` processes) and write the token
    stream, in document order, as uint16 shards of exactly `shard_tokens` tokens (the last one shorter):
    {name}_val_000000.npy first, then {name}_train_000001.npy, ... Returns the paths in order."""
    if shard_tokens < 2:
        raise ValueError(f"shard_tokens must be at least 2, got {shard_tokens}")
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `write_shards` in milestones/05/data.py (see milestones/05/README.md)')


class ShardLoader:
    """Batches (x, y) of shape (B, T) from shards: each an int64 window of T + 1 tokens split into input and target.

    The windows are every (shard, start) with start = 0, T, 2T, ... and start + T + 1 <= len(shard). In epoch e
    they are permuted with torch.randperm(n, generator=torch.Generator().manual_seed(seed + e)); rank r of
    `world_size` reads positions r, r + world_size, ... of that order, B windows per batch, and a new epoch
    starts when fewer than B of its windows are left. No window is read twice in an epoch, and ranks never
    share one. With shuffle=False every epoch reads the windows in file order (the original behaviour).
    """

    def __init__(self, shards: Sequence[str | os.PathLike[str]], batch_size: int, block_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if not shards:
            raise ValueError("ShardLoader needs at least one shard")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.tokens = [np.load(path, mmap_mode="r") for path in shards]
        self.B, self.T, self.seed, self.rank, self.world_size = batch_size, block_size, seed, rank, world_size
        self.shuffle = shuffle  # False: build-nanogpt's original order, the same every epoch
        self.all_windows = self.windows()
        if len(self.all_windows) // world_size < batch_size:
            raise ValueError(f"{len(self.all_windows)} windows of {block_size + 1} tokens cannot fill a batch of "
                             f"{batch_size} on each of {world_size} rank(s)")
        self.epoch, self.position = 0, 0
        self._order = self._rank_order()

    def windows(self) -> list[tuple[int, int]]:
        """Every (shard index, start) of a full window of T + 1 tokens, starts T apart."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 05: write `ShardLoader.windows` in milestones/05/data.py (see milestones/05/README.md)')

    def _rank_order(self) -> list[tuple[int, int]]:
        if not self.shuffle:
            return self.all_windows[self.rank :: self.world_size]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        permutation = torch.randperm(len(self.all_windows), generator=generator).tolist()
        return [self.all_windows[i] for i in permutation[self.rank :: self.world_size]]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next B windows of this rank's order for the epoch, as x (B, T) and y (B, T) int64."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 05: write `ShardLoader.next_batch` in milestones/05/data.py (see milestones/05/README.md)')

    def state_dict(self) -> dict[str, int]:
        """Where the loader is: enough to continue exactly (epoch, position, seed, rank, world_size)."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 05: write `ShardLoader.state_dict` in milestones/05/data.py (see milestones/05/README.md)')

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from `state_dict()`; a different seed, rank or world size raises ValueError."""
        for key in ("seed", "rank", "world_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"the saved loader had {key}={state[key]}, this one has {getattr(self, key)}")
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 05: write `ShardLoader.load_state_dict` in milestones/05/data.py (see milestones/05/README.md)')
