"""Milestone 04, task04_3: encode fast, with exactly 03's ids.

tiktoken's merge loop on ints (one merge at a time, by rank), a cache so each distinct pre-token is encoded
once, streaming over a file with bounded memory, and a process pool for batches.

Write the parts marked `# YOUR CODE HERE`: FastTokenizer.encode_word, encode_ordinary, safe_cut,
encode_iterable, encode_batch.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, pairwise, repeat

import regex

from llmfs.loader import dependency

if __package__:  # imported as part of the milestone (the tests do this)
    from .pretokens import default_workers
else:  # run as a script, `python milestones/04/fastbpe.py`: this folder is on sys.path
    from pretokens import default_workers

bpe = dependency("03", "bpe")  # your milestone 03: Tokenizer (save, load, decode, special-token rules)
GPT2_SPLIT_PATTERN = bpe.GPT2_SPLIT_PATTERN
NO_MERGE = 1 << 62  # the rank of a pair that has no merge (greater than every real rank)

_BATCH_TOKENIZER: FastTokenizer | None = None  # the tokenizer encode_batch's forked workers use


def _encode_many(job: tuple[list[str], str | frozenset[str]]) -> list[list[int]]:
    texts, allowed_special = job
    return [_BATCH_TOKENIZER.encode(text, allowed_special) for text in texts]


def _strings(chunks: Iterable[str]) -> Iterator[str]:
    """`chunks`, lazily, each checked to be a str."""
    for chunk in chunks:
        if not isinstance(chunk, str):
            raise TypeError(f"encode_iterable needs an iterable of str, got a {type(chunk).__name__}")
        yield chunk


# ----------------------------------------------------------------------------------------------------
# task04_3: fast encoding


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
        `set`, `map` and `itertools.chain` run the loops over pre-tokens in C (README.md: why it matters).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary needs a str, got {type(text).__name__}")
        ### BEGIN SOLUTION
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
        chunks = _strings(chunks)
        ### BEGIN SOLUTION
        margin = max((len(s) for s in self.special_tokens), default=0)
        waiting: list[str] = []
        n_waiting = 0
        for chunk in chunks:
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
        contiguous slices when there is enough text to pay for starting them (over 1 MB in all); the workers
        find this tokenizer in `_BATCH_TOKENIZER` and run `_encode_many` on each slice."""
        global _BATCH_TOKENIZER
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of str; for one text use encode")
        ### BEGIN SOLUTION
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
