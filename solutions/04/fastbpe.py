"""Milestone 04: byte-level BPE made fast, with exactly the output of milestone 03.

Milestone 03 recounts every pair of every pre-token for every merge, and re-runs the merge loop for every
pre-token it encodes. That is clear and slow (about 10 s for 243 merges on a 133 KB corpus). The same
tokenizer, fast, comes from four ideas:

1. Count each distinct pre-token once. Text is mostly repeats: TinyShakespeare's 298K pre-tokens are 15K
   distinct words. Pre-tokenizing is the one pass over all the text, so it runs in worker processes over
   chunks of the file, each cut where no pre-token can straddle the cut (memory stays bounded).
2. Update pair counts incrementally. A merge of (a, b) only changes the words that contain (a, b): subtract
   their old pairs, add their new ones. An index from pair to words finds them.
3. Pick the best pair from a heap, not by scanning all pairs. Counts change all the time, so entries go
   stale; instead of updating them in place, push a fresh entry and skip stale ones when popped ("lazy
   invalidation"). The heap's order is the tie rule: highest count, then the greater pair of byte strings.
4. Encode each distinct pre-token once (a cache), stream files with bounded memory, and batch across
   processes.

Write the parts marked `# YOUR CODE HERE`; each docstring says exactly what must come out.

    task04_1  find_chunk_boundaries, count_pretokens, count_pretokens_in_file
    task04_2  learn_merges, train, train_from_file
    task04_3  FastTokenizer.encode_word, FastTokenizer.encode_ordinary, FastTokenizer.encode_iterable,
              FastTokenizer.encode_batch

Check your work with `pytest milestones/04`. Then: `python milestones/04/fastbpe.py train --vocab-size 1024`
(under a second on TinyShakespeare), and `python milestones/04/fastbpe.py results` for the results table.
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from itertools import chain, pairwise, repeat
from pathlib import Path
from typing import BinaryIO

import regex
from tqdm.auto import tqdm

from llmfs.loader import dependency

bpe = dependency("03", "bpe")  # your milestone 03: Tokenizer (save, load, decode), the patterns, the checks
GPT2_SPLIT_PATTERN = bpe.GPT2_SPLIT_PATTERN
CHUNK_BYTES = 8 << 20  # bytes of text one worker pre-tokenizes at a time
NO_MERGE = 1 << 62  # the rank of a pair that has no merge (greater than every real rank)


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------------
# task04_1: counting distinct pre-tokens, in parallel


def find_chunk_boundaries(file: BinaryIO, n_chunks: int, special_tokens: Sequence[str] = (),
                          window: int = 1 << 16) -> list[int]:
    """Byte offsets [0, ..., file size] that cut `file` into about `n_chunks` pieces, each cut at a place
    no pre-token crosses, so pre-tokenizing the pieces one by one gives the pre-tokens of the whole.

    Aim at offsets size * i / n_chunks; from each, move forward to the first safe cut: the start of a
    special token, or a space (b" ") right after a printable ASCII character (b"!" to b"~"). Letters,
    digits and symbols all stop at a space and a space always starts a new pre-token, with GPT-2's and
    GPT-4's patterns. (If a special token contains a space, cut only at special tokens.) Read `window`
    bytes at a time; the offsets are increasing with no repeats; with no safe cut left, the last offset is
    the file size.
    """
    ### BEGIN SOLUTION
    size = file.seek(0, os.SEEK_END)
    specials = [s.encode("utf-8") for s in special_tokens]
    cut_at = [regex.escape(s) for s in specials]
    if not any(b" " in s for s in specials):
        cut_at.append(rb"(?<=[!-~]) ")
    safe = regex.compile(b"|".join(cut_at))
    overlap = max((len(s) for s in specials), default=1)
    boundaries = [0]
    for i in range(1, max(n_chunks, 1)):
        position = max(size * i // n_chunks, boundaries[-1] + 1)
        cut = size
        while position < size:
            file.seek(max(position - 1, 0))  # one byte back: the character before a space
            block = file.read(window + overlap)
            match = safe.search(block, pos=1 if position > 0 else 0)
            if match:
                cut = max(position - 1, 0) + match.start()
                break
            position += window
        if cut >= size:
            break
        boundaries.append(cut)
    boundaries.append(size)
    return boundaries
    ### END SOLUTION


def count_pretokens(text: str, special_tokens: Sequence[str] = (), pattern: str = GPT2_SPLIT_PATTERN) -> Counter[str]:
    """How often each distinct pre-token occurs in `text`, special tokens removed first (never counted).

    `count_pretokens("the cat<|endoftext|>the", ["<|endoftext|>"]) == Counter({"the": 2, " cat": 1})`.
    """
    ### BEGIN SOLUTION
    counts: Counter[str] = Counter()
    specials = set(special_tokens)
    splitter = regex.compile(pattern)
    for part in bpe.split_on_special(text, specials):
        if part not in specials:
            counts.update(splitter.findall(part))
    return counts
    ### END SOLUTION


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


def count_pretokens_in_file(path: str | os.PathLike[str], special_tokens: Sequence[str] = (),
                            pattern: str = GPT2_SPLIT_PATTERN, workers: int | None = None,
                            chunk_bytes: int = CHUNK_BYTES, progress: bool = False) -> Counter[str]:
    """`count_pretokens` of a whole UTF-8 file, which may be far larger than memory allows as one str.

    Cut the file with `find_chunk_boundaries` into chunks of about `chunk_bytes`, count each chunk in a pool
    of `workers` processes (default: every core; 1 means no pool), and add up the counts as they arrive. At
    any time each worker holds one chunk and the parent only the counts: memory does not grow with the file.
    Use the "fork" start method: the workers inherit this module as loaded.
    """
    ### BEGIN SOLUTION
    path = os.fspath(path)
    workers = workers or default_workers()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        bounds = find_chunk_boundaries(f, max(1, -(-size // chunk_bytes)), special_tokens)
    jobs = [(path, a, b, tuple(special_tokens), pattern) for a, b in pairwise(bounds)]
    total: Counter[str] = Counter()
    bar = tqdm(total=size, unit="B", unit_scale=True, desc="pre-tokenizing", disable=not progress)
    parallel = workers > 1 and len(jobs) > 1
    with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) if parallel else nullcontext() as pool:
        results = pool.imap(_count_file_range, jobs) if parallel else map(_count_file_range, jobs)
        for job, counts in zip(jobs, results, strict=True):  # imap keeps the order of the jobs
            total.update(counts)
            bar.update(job[2] - job[1])
    bar.close()
    return total
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task04_2: incremental merges picked from a heap


def descending(token: bytes) -> tuple[int, ...]:
    """A key that sorts byte strings in *decreasing* order, so a min-heap pops the greatest first:
    each byte x becomes 255 - x, and a final 256 puts a string before the longer strings it begins."""
    ### BEGIN SOLUTION
    return (*(255 - x for x in token), 256)
    ### END SOLUTION


def merge_in_word(ids: list[int], a: int, b: int, new_id: int, n: int,
                  delta: dict[tuple[int, int], int]) -> list[int] | None:
    """Merge each (a, b) in `ids` into `new_id`, left to right, and add to `delta` how the counts of the
    neighbouring pairs change, for a word that occurs `n` times. None if `ids` has no (a, b).

    Only the pairs next to a merge change: in x a b y, (x, a) and (b, y) become (x, new) and (new, y).
    The left neighbour is read from the merged output, so in a b a b the second merge turns the (new, a)
    added by the first into (new, new).
    """
    ### BEGIN SOLUTION
    merged: list[int] = []
    i, length = 0, len(ids)
    while i < length:
        if ids[i] == a and i + 1 < length and ids[i + 1] == b:
            if merged:
                left = merged[-1]
                delta[left, a] = delta.get((left, a), 0) - n
                delta[left, new_id] = delta.get((left, new_id), 0) + n
            if i + 2 < length:
                right = ids[i + 2]
                delta[b, right] = delta.get((b, right), 0) - n
                delta[new_id, right] = delta.get((new_id, right), 0) + n
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged if len(merged) < length else None
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    vocab = {i: bytes([i]) for i in range(256)}
    order = [descending(vocab[i]) for i in range(256)]
    words = [list(word.encode("utf-8")) for word in word_counts]
    freqs = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for w, ids in enumerate(words):
        for pair in pairwise(ids):
            pair_counts[pair] = pair_counts.get(pair, 0) + freqs[w]
            where.setdefault(pair, set()).add(w)
    heap = [(-count, order[a], order[b], a, b) for (a, b), count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[bytes, bytes]] = []
    for new_id in tqdm(range(256, 256 + n_merges), desc="merges", disable=not progress):
        while heap:
            neg_count, _, _, a, b = heapq.heappop(heap)
            if pair_counts.get((a, b)) == -neg_count:
                break
        else:
            break  # every word is a single token: nothing left to merge
        vocab[new_id] = vocab[a] + vocab[b]
        order.append(descending(vocab[new_id]))
        merges.append((vocab[a], vocab[b]))
        delta: dict[tuple[int, int], int] = {}
        for w in where.pop((a, b)):
            new = merge_in_word(words[w], a, b, new_id, freqs[w], delta)
            if new is not None:
                words[w] = new
                for pair in pairwise(new):
                    if new_id in pair:
                        where.setdefault(pair, set()).add(w)
        pair_counts.pop((a, b))
        delta.pop((a, b), None)
        for pair, change in delta.items():
            if change:
                count = pair_counts.get(pair, 0) + change
                if count > 0:
                    pair_counts[pair] = count
                    heapq.heappush(heap, (-count, order[pair[0]], order[pair[1]], *pair))
                else:
                    pair_counts.pop(pair, None)
    return vocab, merges
    ### END SOLUTION


def _tokenizer(vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens: Sequence[str],
               pattern: str) -> FastTokenizer:
    special_ids = {token: len(vocab) + i for i, token in enumerate(special_tokens)}
    return FastTokenizer(vocab, merges, special_ids, pattern)


def train(text: str, vocab_size: int, special_tokens: Sequence[str] = (), pattern: str = GPT2_SPLIT_PATTERN,
          progress: bool = False) -> FastTokenizer:
    """03's `train`, same arguments, same errors (`bpe.check_train_args`), same result, fast:
    `count_pretokens`, then `learn_merges`, then special tokens after the merges."""
    ### BEGIN SOLUTION
    bpe.check_train_args(text, vocab_size, special_tokens)
    counts = count_pretokens(text, special_tokens, pattern)
    vocab, merges = learn_merges(counts, vocab_size - 256 - len(special_tokens), progress)
    return _tokenizer(vocab, merges, special_tokens, pattern)
    ### END SOLUTION


def train_from_file(path: str | os.PathLike[str], vocab_size: int, special_tokens: Sequence[str] = (),
                    pattern: str = GPT2_SPLIT_PATTERN, workers: int | None = None,
                    progress: bool = False) -> FastTokenizer:
    """`train` on a UTF-8 file of any size: the same result as `train(open(path).read(), ...)`, with
    `count_pretokens_in_file` doing the reading in parallel. A missing file raises FileNotFoundError."""
    ### BEGIN SOLUTION
    bpe.check_train_args("", vocab_size, special_tokens)
    if not Path(path).is_file():
        raise FileNotFoundError(f"train_from_file: no file at {path}")
    counts = count_pretokens_in_file(path, special_tokens, pattern, workers, progress=progress)
    vocab, merges = learn_merges(counts, vocab_size - 256 - len(special_tokens), progress)
    return _tokenizer(vocab, merges, special_tokens, pattern)
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task04_3: fast encoding

_BATCH_TOKENIZER: FastTokenizer | None = None  # the tokenizer encode_batch's forked workers use


def _encode_many(job: tuple[list[str], str | frozenset[str]]) -> list[list[int]]:
    texts, allowed_special = job
    return [_BATCH_TOKENIZER.encode(text, allowed_special) for text in texts]


class FastTokenizer(bpe.Tokenizer):
    """03's Tokenizer (same vocab, merges, files, decode) with fast encoding.

    `pair_ranks` {(id, id): rank} and `merged_ids` [id by rank] let `encode_word` work on ints; `cache`
    {pre-token: ids} remembers every pre-token encoded so far, up to `cache_size` entries (then starts over).
    """

    def __init__(self, vocab: dict[int, bytes], merges: Sequence[tuple[bytes, bytes]],
                 special_tokens: dict[str, int] | None = None, pattern: str = GPT2_SPLIT_PATTERN,
                 cache_size: int = 200_000) -> None:
        super().__init__(vocab, merges, special_tokens, pattern)
        self.byte_ids = [self.token_ids[bytes([b])] for b in range(256)]
        self.pair_ranks = {(self.token_ids[a], self.token_ids[b]): rank for rank, (a, b) in enumerate(self.merges)}
        self.merged_ids = [self.token_ids[a + b] for a, b in self.merges]  # by rank
        self.splitter = regex.compile(pattern)
        self.cache: dict[str, list[int]] = {}
        self.cache_size = cache_size

    def encode_word(self, word: bytes) -> list[int]:
        """03's `encode_word`, on ids and one merge at a time, as tiktoken does: keep `ranks[i]`, the rank of the
        pair (ids[i], ids[i + 1]) (`NO_MERGE` if none); merge at the leftmost lowest rank, then recompute just
        the two ranks next to it. The same result as merging every occurrence of the best pair at once."""
        ### BEGIN SOLUTION
        ids = list(map(self.byte_ids.__getitem__, word))
        rank_of, merged_id = self.pair_ranks.get, self.merged_ids
        ranks = list(map(rank_of, pairwise(ids), repeat(NO_MERGE, len(ids) - 1)))
        while ranks:
            best = min(ranks)
            if best == NO_MERGE:
                break
            i = ranks.index(best)
            ids[i : i + 2] = (merged_id[best],)
            del ranks[i]
            if i:
                ranks[i - 1] = rank_of((ids[i - 1], ids[i]), NO_MERGE)
            if i < len(ranks):
                ranks[i] = rank_of((ids[i], ids[i + 1]), NO_MERGE)
        return ids
        ### END SOLUTION

    def encode_ordinary(self, text: str) -> list[int]:
        """03's `encode_ordinary`, with the work done once per *distinct* pre-token: pre-tokenize with the compiled
        `splitter`, `encode_word` only the pre-tokens not in the `cache` yet, then look every pre-token up.

        The cache holds at most `cache_size` pre-tokens: when the new ones would not fit, clear it first (and
        if this one text has more distinct pre-tokens than that, use a dictionary for this call only).
        Looping over 300K pre-tokens in Python costs as much as the regex; `set`, `map` and
        `itertools.chain` do those loops in C.
        """
        ### BEGIN SOLUTION
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary needs a str, got {type(text).__name__}")
        pieces = self.splitter.findall(text)
        distinct = set(pieces)
        cache = self.cache
        new = distinct.difference(cache)
        if len(cache) + len(new) > self.cache_size:
            cache.clear()
            new = distinct
            if len(distinct) > self.cache_size:
                cache = {}
        for piece in new:
            cache[piece] = self.encode_word(piece.encode("utf-8"))
        return list(chain.from_iterable(map(cache.__getitem__, pieces)))
        ### END SOLUTION

    def safe_cut(self, text: str, end: int) -> int:
        """The last position p <= `end` where `text` may be cut without changing its encoding: a space right
        after a printable ASCII character, not inside a special token; 0 when there is none."""
        ### BEGIN SOLUTION
        def inside_a_special_token(p: int) -> bool:  # an occurrence starting in (p - len, p) covers p
            return any(text.find(token, max(0, p - len(token) + 1), p + len(token) - 1) >= 0
                       for token in self.special_tokens)

        p = text.rfind(" ", 0, end + 1)
        while p > 0:
            if "!" <= text[p - 1] <= "~" and not inside_a_special_token(p):
                return p
            p = text.rfind(" ", 0, p)
        return 0
        ### END SOLUTION

    def encode_iterable(self, chunks: Iterable[str], allowed_special: str | set[str] | frozenset[str] = "none_raise",
                        buffer_chars: int = 1 << 16) -> Iterator[int]:
        """Lazily yield the ids of the concatenated `chunks` (e.g. an open file's lines): exactly
        `encode("".join(chunks))`, without ever holding the whole text.

        Collect chunks until about `buffer_chars` characters are waiting, then encode up to the last
        `safe_cut` that leaves the longest special token's length after it (so a special token split over two
        chunks is seen whole) and keep the rest for later. Encode what is left at the end.
        """
        ### BEGIN SOLUTION
        margin = max((len(s) for s in self.special_tokens), default=0)
        waiting: list[str] = []
        n_waiting = 0
        for chunk in chunks:
            if not isinstance(chunk, str):
                raise TypeError(f"encode_iterable needs an iterable of str, got a {type(chunk).__name__}")
            waiting.append(chunk)
            n_waiting += len(chunk)
            if n_waiting >= buffer_chars:
                text = "".join(waiting)
                cut = self.safe_cut(text, len(text) - margin - 1)
                if cut:
                    yield from self.encode(text[:cut], allowed_special)
                    text = text[cut:]
                waiting, n_waiting = [text], len(text)
        text = "".join(waiting)
        if text:
            yield from self.encode(text, allowed_special)
        ### END SOLUTION

    def encode_batch(self, texts: Sequence[str], allowed_special: str | set[str] | frozenset[str] = "none_raise",
                     workers: int | None = None) -> list[list[int]]:
        """`[encode(t) for t in texts]`, split across `workers` forked processes (default: every core) in
        contiguous slices when there is enough text to pay for starting them (over 1 MB in all)."""
        ### BEGIN SOLUTION
        global _BATCH_TOKENIZER
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of str; for one text use encode")
        texts = list(texts)
        workers = min(workers or default_workers(), len(texts))
        if workers <= 1 or sum(map(len, texts)) < 1 << 20:
            return [self.encode(text, allowed_special) for text in texts]
        allowed = allowed_special if isinstance(allowed_special, str) else frozenset(allowed_special)
        step = -(-len(texts) // (4 * workers))
        jobs = [(texts[i : i + step], allowed) for i in range(0, len(texts), step)]
        _BATCH_TOKENIZER = self
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                return [ids for part in pool.map(_encode_many, jobs) for ids in part]
        finally:
            _BATCH_TOKENIZER = None
        ### END SOLUTION


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fast byte-level BPE: train a tokenizer, or write the results table.")
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train a tokenizer on a text file and save it as JSON")
    train_cmd.add_argument("--input", type=Path, help="a UTF-8 text file (default: TinyShakespeare)")
    train_cmd.add_argument("--vocab-size", type=int, default=1024)
    train_cmd.add_argument("--special", action="append", default=[], help="a special token (repeatable)")
    train_cmd.add_argument("--workers", type=int, default=None)
    train_cmd.add_argument("--out", type=Path, default=Path("tokenizer.json"))
    results_cmd = commands.add_parser("results", help="train 4K/8K/16K tokenizers and compare with GPT-2, "
                                                      "Hugging Face tokenizers and tiktoken")
    results_cmd.add_argument("--corpus", action="append", default=None,
                             help="a dataset name (repeatable; default: tinystories-valid-head and tinyshakespeare; "
                                  "with the internet, try tinystories-v2-valid)")
    results_cmd.add_argument("--vocab-size", type=int, action="append", default=None)
    results_cmd.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.input is None:
            from llmfs.data import fetch_file
            args.input = fetch_file("tinyshakespeare")
        start = time.perf_counter()
        tokenizer = train_from_file(args.input, args.vocab_size, args.special, workers=args.workers, progress=True)
        seconds = time.perf_counter() - start
        tokenizer.save(args.out)
        print(f"trained {tokenizer.vocab_size} tokens on {args.input} in {seconds:.2f} s; saved {args.out}")
    else:
        if __package__:
            from .results import write_results
        else:
            from results import write_results
        write_results(train_from_file, args.corpus or ["tinystories-valid-head", "tinyshakespeare"],
                      args.vocab_size or [4096, 8192, 16384], args.out)


if __name__ == "__main__":
    main()
