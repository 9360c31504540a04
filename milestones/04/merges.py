"""Milestone 04, task04_2: learn 03's merges fast, updating pair counts incrementally and picking from a heap.

A merge of (a, b) changes only the words that contain (a, b), and in them only the pairs next to it; an index
from pair to words finds them. The best pair comes from a heap whose stale entries are skipped when popped
("lazy invalidation"); the heap's order is 03's tie rule. README.md walks through one merge.

Write the parts marked `# YOUR CODE HERE`: descending, merge_in_word, learn_merges, train, train_from_file.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path

from tqdm.auto import tqdm

from llmfs.loader import dependency

if __package__:  # imported as part of the milestone (the tests do this)
    from .encoder import FastTokenizer
    from .pretokens import count_pretokens, count_pretokens_in_file
else:  # run as a script, `python milestones/04/fastbpe.py`: this folder is on sys.path
    from encoder import FastTokenizer
    from pretokens import count_pretokens, count_pretokens_in_file

bpe = dependency("03", "bpe")  # your milestone 03: the argument checks of its `train`
GPT2_SPLIT_PATTERN = bpe.GPT2_SPLIT_PATTERN


def _tokenizer(vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens: Sequence[str],
               pattern: str) -> FastTokenizer:
    """The trained tokenizer: the special tokens get the ids after the merges."""
    special_ids = {token: len(vocab) + i for i, token in enumerate(special_tokens)}
    return FastTokenizer(vocab, merges, special_ids, pattern)


# ----------------------------------------------------------------------------------------------------
# task04_2: incremental merges picked from a heap


def descending(token: bytes) -> tuple[int, ...]:
    """A key that sorts byte strings in *decreasing* order, so a min-heap pops the greatest first:
    each byte x becomes 255 - x, and a final 256 puts a string before the longer strings it begins."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 04: write `descending` in milestones/04/merges.py (see milestones/04/README.md)')


def merge_in_word(ids: list[int], a: int, b: int, new_id: int, n: int,
                  delta: dict[tuple[int, int], int]) -> list[int] | None:
    """Merge each (a, b) in `ids` into `new_id`, left to right, and add to `delta` how the counts of the
    neighbouring pairs change, for a word that occurs `n` times. None if `ids` has no (a, b).

    Only the pairs next to a merge change: in x a b y, (x, a) and (b, y) become (x, new) and (new, y).
    The left neighbour is read from the merged output, so in a b a b the second merge turns the (new, a)
    added by the first into (new, new). The count of (a, b) itself is not `delta`'s business.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 04: write `merge_in_word` in milestones/04/merges.py (see milestones/04/README.md)')


def learn_merges(word_counts: Mapping[str, int], n_merges: int,
                 progress: bool = False) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """The vocabulary and merges that 03's `train` learns from pre-tokens with these counts, computed fast.

    State: each distinct word as a list of ids with its count; `pair_counts` {pair: count over all words};
    `where` {pair: indices of words that (may) contain it}; a heap of (-count, descending(left bytes),
    descending(right bytes), a, b). For each merge: pop until an entry's count equals the pair's current
    count (older entries are stale); `merge_in_word` every word `where` lists for the pair, adding those
    words to `where` of their new pairs; apply the summed changes to `pair_counts` and push one fresh entry
    for every pair whose count changed. Stop after `n_merges` or when no pair is left.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 04: write `learn_merges` in milestones/04/merges.py (see milestones/04/README.md)')


def train(text: str, vocab_size: int, special_tokens: Sequence[str] = (), pattern: str = GPT2_SPLIT_PATTERN,
          progress: bool = False) -> FastTokenizer:
    """03's `train`, same arguments, same errors, same result, fast: `count_pretokens`, then
    `learn_merges`, then `_tokenizer` (special tokens after the merges)."""
    bpe.check_train_args(text, vocab_size, special_tokens)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 04: write `train` in milestones/04/merges.py (see milestones/04/README.md)')


def train_from_file(path: str | os.PathLike[str], vocab_size: int, special_tokens: Sequence[str] = (),
                    pattern: str = GPT2_SPLIT_PATTERN, workers: int | None = None,
                    progress: bool = False) -> FastTokenizer:
    """`train` on a UTF-8 file of any size: the same result as `train(open(path).read(), ...)`, with
    `count_pretokens_in_file` doing the reading in parallel."""
    bpe.check_train_args("", vocab_size, special_tokens)
    if not Path(path).is_file():
        raise FileNotFoundError(f"train_from_file: no file at {path}")
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 04: write `train_from_file` in milestones/04/merges.py (see milestones/04/README.md)')
