"""Milestone 04, task04_1: count each distinct pre-token once, in parallel over chunks of a file.

Text is mostly repeats (TinyShakespeare: 298K pre-tokens, 15K distinct), so training needs only the count of
each distinct pre-token. Pre-tokenizing is the one pass over all the text: worker processes do it over chunks
of the file, each chunk cut where no pre-token can cross the cut, so memory stays bounded.

Write the parts marked `# YOUR CODE HERE`: find_chunk_boundaries, count_pretokens, count_pretokens_in_file.
Check each with `pytest milestones/04 -k find_chunk_boundaries` (and so on); see README.md.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from itertools import pairwise
from typing import BinaryIO

import regex
from tqdm.auto import tqdm

from llmfs.loader import dependency

bpe = dependency("03", "bpe")  # your milestone 03: split_on_special and the pre-tokenizer patterns
GPT2_SPLIT_PATTERN = bpe.GPT2_SPLIT_PATTERN
CHUNK_BYTES = 8 << 20  # bytes of text one worker pre-tokenizes at a time


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _count_file_range(job: tuple[str, int, int, tuple[str, ...], str]) -> Counter[str]:
    """One worker's share: read bytes [start, end) of the file and count their pre-tokens."""
    path, start, end, special_tokens, pattern = job
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: bad byte at offset {start + e.start}") from None
    return count_pretokens(text, special_tokens, pattern)


# ----------------------------------------------------------------------------------------------------
# task04_1: counting distinct pre-tokens, in parallel


def find_chunk_boundaries(file: BinaryIO, n_chunks: int, special_tokens: Sequence[str] = (),
                          window: int = 1 << 16) -> list[int]:
    """Byte offsets [0, ..., file size] that cut `file` into about `n_chunks` pieces, each cut at a place
    no pre-token crosses, so pre-tokenizing the pieces one by one gives the pre-tokens of the whole.

    Aim at offsets size * i / n_chunks; from each, move forward to the first safe cut: the start of a special
    token, or a space (b" ") right after a printable ASCII character (b"!" to b"~"); if a special token
    contains a space, cut only at special tokens. Read `window` bytes at a time; the offsets are increasing
    with no repeats; with no safe cut left, the last offset is the file size. README.md says why it is safe.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 04: write `find_chunk_boundaries` in milestones/04/pretokens.py (see milestones/04/README.md)')


def count_pretokens(text: str, special_tokens: Sequence[str] = (), pattern: str = GPT2_SPLIT_PATTERN) -> Counter[str]:
    """How often each distinct pre-token occurs in `text`, special tokens removed first (never counted).

    `count_pretokens("the cat<|endoftext|>the", ["<|endoftext|>"]) == Counter({"the": 2, " cat": 1})`.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 04: write `count_pretokens` in milestones/04/pretokens.py (see milestones/04/README.md)')


def count_pretokens_in_file(path: str | os.PathLike[str], special_tokens: Sequence[str] = (),
                            pattern: str = GPT2_SPLIT_PATTERN, workers: int | None = None,
                            chunk_bytes: int = CHUNK_BYTES, progress: bool = False) -> Counter[str]:
    """`count_pretokens` of a whole UTF-8 file, which may be far larger than memory allows as one str.

    Cut the file with `find_chunk_boundaries` into chunks of about `chunk_bytes`; count each chunk with
    `_count_file_range` in a pool of `workers` processes (default: every core; 1 means no pool), started
    with "fork" (the workers inherit this module as loaded); add up the counts as they arrive, so memory
    does not grow with the file.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 04: write `count_pretokens_in_file` in milestones/04/pretokens.py (see milestones/04/README.md)')
