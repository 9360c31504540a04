"""Milestone 03: byte-level BPE, written the naive way so every step is visible.

A byte-level BPE tokenizer starts from the 256 possible bytes and learns merges: repeatedly, the most
frequent adjacent pair of tokens in the training text becomes one new token. GPT-2 (and tiktoken's "gpt2"
encoding) is exactly this with 50,000 merges. You write the trainer, the encoder and decoder, a readable file
format, and a loader for OpenAI's own `encoder.json` + `vocab.bpe`; the tests then check your encoder against
tiktoken on all of TinyShakespeare, and your trainer against the merges of Stanford CS336's reference.

Rules that make the output exact (and identical to milestone 04's fast version):
- Text is first split on special tokens (never merged across), then into pre-tokens with a regex; pairs are
  counted inside pre-tokens only.
- Pairs are counted with overlaps ("aaa" holds the pair (a, a) twice) and merged left to right.
- Ties between equally frequent pairs go to the lexicographically greater pair of byte strings:
  max over (count, left bytes, right bytes).
- Ids: 0-255 are the bytes, then one id per merge in order, then the special tokens; special tokens count
  toward `vocab_size`.

Write the parts marked `# YOUR CODE HERE`; each docstring says exactly what must come out.

    task03_1  split_on_special, pretokenize
    task03_2  count_pairs, merge_pair
    task03_3  train
    task03_4  bytes_to_unicode, Tokenizer.save, Tokenizer.load, Tokenizer.from_gpt2_files
    task03_5  Tokenizer.encode_word, Tokenizer.encode_ordinary, Tokenizer.allowed_specials,
              Tokenizer.encode, Tokenizer.decode_bytes, Tokenizer.decode

Check your work with `pytest milestones/03` (add `-m task03_1` for one task). Then train one:
`python milestones/03/bpe.py --vocab-size 512 --out shakespeare.json` (a minute or two; milestone 04 makes it
a fraction of a second).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

import regex

from llmfs.fsutil import atomic_write_text

# GPT-2's pre-tokenizer (openai/gpt-2 encoder.py): contractions, optional space + letters, optional space +
# digits, optional space + other symbols, whitespace not followed by a non-space, other whitespace.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4's (tiktoken cl100k_base): case-insensitive contractions, digits in groups of at most three.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
FORMAT = "llmfs-bpe"  # the "format" field of a saved tokenizer


def _check_text(text: object, where: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{where} needs a str, got {type(text).__name__}")


# ----------------------------------------------------------------------------------------------------
# task03_1: from text to pre-tokens


def split_on_special(text: str, special_tokens: Iterable[str]) -> list[str]:
    """Split `text` around every occurrence of a special token, keeping the special tokens as items.

    `split_on_special("a<|endoftext|>b", ["<|endoftext|>"]) == ["a", "<|endoftext|>", "b"]`. Empty pieces
    are dropped. Where two special tokens overlap at one position, the longer one wins (so "<|a|><|a|>"
    with specials "<|a|>" and "<|a|><|a|>" is one token). With no special tokens the result is `[text]`
    (or `[]` for an empty text).
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `split_on_special` in milestones/03/bpe.py (see milestones/03/README.md)')


def pretokenize(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """Every match of the regex `pattern` in `text`, in order (use the `regex` module: it knows \\p{L}).

    With GPT-2's pattern, "Hello world's 2024!!" gives ["Hello", " world", "'s", " 2024", "!!"]. Special
    tokens are not treated specially here: split on them first.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `pretokenize` in milestones/03/bpe.py (see milestones/03/README.md)')


# ----------------------------------------------------------------------------------------------------
# task03_2: counting pairs and merging them


def count_pairs(words: Iterable[Sequence[int]]) -> dict[tuple[int, int], int]:
    """How often each adjacent pair of ids occurs, summed over `words`, overlaps included.

    `count_pairs([[1, 2, 3], [1, 2], [7, 7, 7]]) == {(1, 2): 2, (2, 3): 1, (7, 7): 2}`.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `count_pairs` in milestones/03/bpe.py (see milestones/03/README.md)')


def merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """`ids` with every occurrence of `pair` replaced by `new_id`, scanning left to right.

    `merge_pair([7, 7, 7, 1], (7, 7), 9) == [9, 7, 1]`: once a pair is merged its ids are used up.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `merge_pair` in milestones/03/bpe.py (see milestones/03/README.md)')


# ----------------------------------------------------------------------------------------------------
# task03_3: training


def check_train_args(text: object, vocab_size: object, special_tokens: Sequence[str]) -> None:
    """The errors `train` raises for bad arguments (shared with milestone 04's trainer)."""
    _check_text(text, "train")
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a list of str, not the str {special_tokens!r}")
    if not all(isinstance(s, str) and s for s in special_tokens):
        raise TypeError(f"special_tokens must be non-empty strings, got {list(special_tokens)!r}")
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens has duplicates: {list(special_tokens)!r}")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(f"vocab_size={vocab_size} is too small: it must hold the 256 bytes and the "
                         f"{len(special_tokens)} special token(s), so at least {256 + len(special_tokens)}")


def train(text: str, vocab_size: int, special_tokens: Sequence[str] = (),
          pattern: str = GPT2_SPLIT_PATTERN) -> Tokenizer:
    """Learn `vocab_size - 256 - len(special_tokens)` merges from `text` and return the Tokenizer.

    1. Split `text` on the special tokens (`split_on_special`) and drop them; pre-tokenize the rest.
    2. Turn each pre-token into its UTF-8 bytes: a list of ids 0-255.
    3. For each new id 256, 257, ...: count the pairs over all pre-tokens, take the most frequent pair,
       ties going to the greater `(vocab[a], vocab[b])`, record the merge, and apply it everywhere.
       Stop early when no pair is left (the text is used up).
    4. Give the special tokens the ids after the last merge, in the order given.

    The result: `Tokenizer(vocab, merges, special_ids, pattern)` where `vocab[i]` is token i's bytes and
    `merges` lists `(vocab[a], vocab[b])` in the order learned. Bad arguments raise the errors of
    `check_train_args` (call it first).
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `train` in milestones/03/bpe.py (see milestones/03/README.md)')


# ----------------------------------------------------------------------------------------------------
# task03_4: a readable file format, and OpenAI's GPT-2 files


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte 0-255 to a printable character, used in encoder.json and vocab.bpe.

    The 188 bytes that print well keep their own character: "!" (33) to "~" (126), "¡" (161) to "¬" (172)
    and "®" (174) to "ÿ" (255). The other 68 (control characters, space, 127-160, 173), in increasing
    order, map to chr(256), chr(257), ...: so a space (32) is "Ġ" (chr(288)) and a newline (10) is "Ċ".
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `bytes_to_unicode` in milestones/03/bpe.py (see milestones/03/README.md)')



class Tokenizer:
    """A byte-level BPE tokenizer: a vocabulary of byte strings, an ordered list of merges, special tokens.

    vocab           {id: bytes}: every ordinary token (the 256 single bytes among them)
    merges          [(left bytes, right bytes), ...]: the merges in the order they were learned; the
                    earlier a merge, the higher its priority when encoding
    special_tokens  {str: id}: tokens that are never produced by merges (e.g. "<|endoftext|>")
    pattern         the pre-tokenizer regex
    """

    def __init__(self, vocab: dict[int, bytes], merges: Sequence[tuple[bytes, bytes]],
                 special_tokens: dict[str, int] | None = None, pattern: str = GPT2_SPLIT_PATTERN) -> None:
        self.vocab = dict(vocab)
        self.merges = [tuple(pair) for pair in merges]
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        self.token_ids = {token: i for i, token in self.vocab.items()}  # bytes -> id
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}  # (bytes, bytes) -> priority
        self.special_bytes = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        missing = [b for b in range(256) if bytes([b]) not in self.token_ids]
        if missing:
            raise ValueError(f"the vocabulary lacks single bytes {missing[:8]}: a byte-level BPE needs all 256")
        clash = set(self.special_bytes) & set(self.vocab)
        if clash:
            raise ValueError(f"special token ids {sorted(clash)} are also ordinary token ids")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer as JSON that a person can read, atomically (`llmfs.fsutil.atomic_write_text`).

        Tokens are written in GPT-2's printable form (`bytes_to_unicode`: "Ġthe" is " the"), like
        vocab.bpe: {"format": "llmfs-bpe", "version": 1, "pattern": ..., "special_tokens": {str: id},
        "vocab": {printable token: id}, "merges": ["Ġ t", "h e", ...]}.
        """
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.save` in milestones/03/bpe.py (see milestones/03/README.md)')

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Read a file written by `save`. A file of another format raises ValueError saying what it is not."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.load` in milestones/03/bpe.py (see milestones/03/README.md)')

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike[str], vocab_bpe: str | os.PathLike[str]) -> Tokenizer:
        """GPT-2's tokenizer from OpenAI's files, with GPT-2's pattern.

        encoder.json maps printable tokens to ids (50,257 of them); "<|endoftext|>" (50256) becomes a
        special token. vocab.bpe has a "#version" line, then one merge per line, "Ġ t", in rank order.
        """
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.from_gpt2_files` in milestones/03/bpe.py (see milestones/03/README.md)')

# ----------------------------------------------------------------------------------------------------
# task03_5: encoding and decoding (the rest of the Tokenizer class)

    def encode_word(self, word: bytes) -> list[int]:
        """The ids of one pre-token: start from its single bytes and keep merging the adjacent pair whose
        merge came earliest in training (lowest rank), every occurrence at once, until no pair has a rank.
        b"hello" with merges [(b"l", b"l"), (b"h", b"e"), (b"he", b"ll")] gives [id(b"hell"), id(b"o")]."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.encode_word` in milestones/03/bpe.py (see milestones/03/README.md)')

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text` with no special tokens at all: pre-tokenize, then `encode_word` each pre-token's UTF-8
        bytes. Raises TypeError for a non-str."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.encode_ordinary` in milestones/03/bpe.py (see milestones/03/README.md)')

    def allowed_specials(self, text: str, allowed_special: str | set[str] | frozenset[str]) -> set[str]:
        """The special tokens `encode` should treat as special in `text`, with tiktoken's rules.

        "none_raise" (the default, like tiktoken): none are allowed, and a special token found in the text
        raises ValueError naming it. "all": every special token. "none": none; they are encoded as plain
        text. A set of special-token strings: those; any other special token in the text raises ValueError.
        A set naming a string that is not a special token raises ValueError; anything else TypeError.
        """
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.allowed_specials` in milestones/03/bpe.py (see milestones/03/README.md)')

    def encode(self, text: str, allowed_special: str | set[str] | frozenset[str] = "none_raise") -> list[int]:
        """Encode `text` into ids, with the special tokens that `allowed_specials` allows as single ids and the
        text between them through `encode_ordinary`."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.encode` in milestones/03/bpe.py (see milestones/03/README.md)')

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the tokens `ids`, concatenated. An id that is not in the vocabulary (nor a special
        token) raises ValueError naming it; a non-integer raises TypeError."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.decode_bytes` in milestones/03/bpe.py (see milestones/03/README.md)')

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`: `decode_bytes` read as UTF-8, with invalid sequences as U+FFFD (like tiktoken)."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.decode` in milestones/03/bpe.py (see milestones/03/README.md)')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a byte-level BPE tokenizer (naive) and save it as JSON.")
    parser.add_argument("--input", type=Path, help="a UTF-8 text file (default: TinyShakespeare)")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--special", action="append", default=[], help="a special token (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("tokenizer.json"))
    args = parser.parse_args(argv)
    if args.input is None:
        from llmfs.data import fetch_file
        args.input = fetch_file("tinyshakespeare")
    text = args.input.read_text(encoding="utf-8")
    start = time.perf_counter()
    tokenizer = train(text, args.vocab_size, args.special)
    seconds = time.perf_counter() - start
    tokenizer.save(args.out)
    n_tokens = len(tokenizer.encode(text, allowed_special="all"))
    print(f"trained {tokenizer.vocab_size} tokens on {args.input} in {seconds:.1f} s; "
          f"{len(text.encode()) / n_tokens:.2f} bytes per token; saved {args.out}")


if __name__ == "__main__":
    main()
