"""Milestone 03: byte-level BPE, written the naive way so every step is visible.

A byte-level BPE tokenizer starts from the 256 possible bytes and learns merges: repeatedly, the most
frequent adjacent pair of tokens in the training text becomes one new token. GPT-2 (and tiktoken's "gpt2"
encoding) is exactly this with 50,000 merges. The rules that make the output exact (special tokens, overlaps,
ties, ids) are in milestones/03/README.md. Write the parts marked `# YOUR CODE HERE`, in this order:

    task03_1  split_on_special, pretokenize
    task03_2  count_pairs, merge_pair
    task03_3  train
    task03_4  (in bpe_files.py) bytes_to_unicode, save_tokenizer, load_tokenizer, read_gpt2_files
    task03_5  Tokenizer.encode_word, Tokenizer.encode_ordinary, Tokenizer.allowed_specials,
              Tokenizer.encode, Tokenizer.decode_bytes, Tokenizer.decode

`pytest milestones/03 -k NAME` checks one function. After task03_5, train one:
`python milestones/03/bpe.py --vocab-size 512 --out shakespeare.json` (a minute or two).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

import regex

if __package__:  # imported as part of the milestone (the tests do this)
    from .bpe_files import bytes_to_unicode, load_tokenizer, read_gpt2_files, save_tokenizer  # noqa: F401
else:  # run as a script, `python milestones/03/bpe.py`: this folder is on sys.path
    from bpe_files import bytes_to_unicode, load_tokenizer, read_gpt2_files, save_tokenizer  # noqa: F401

# GPT-2's pre-tokenizer (openai/gpt-2 encoder.py): contractions, optional space + letters, optional space +
# digits, optional space + other symbols, whitespace not followed by a non-space, other whitespace.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4's (tiktoken cl100k_base): case-insensitive contractions, digits in groups of at most three.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


def _check_text(text: object, where: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{where} needs a str, got {type(text).__name__}")


def check_allowed_special(allowed_special: object, special_tokens: dict[str, int]) -> None:
    """The errors of `Tokenizer.allowed_specials` for a bad `allowed_special`: a str other than "all", "none",
    "none_raise" or a set naming a string that is not a special token raises ValueError; anything else TypeError."""
    if isinstance(allowed_special, str):
        if allowed_special not in ("all", "none", "none_raise"):
            raise ValueError(f'allowed_special must be "all", "none", "none_raise" or a set of special tokens, '
                             f"got {allowed_special!r}")
    elif isinstance(allowed_special, (set, frozenset)):
        unknown = set(allowed_special) - set(special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names {sorted(unknown)}, which are not special tokens of this "
                             f"tokenizer (it has {sorted(special_tokens)})")
    else:
        raise TypeError(f"allowed_special must be a str or a set, got {type(allowed_special).__name__}")


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

    1. Split `text` on the special tokens and drop them; pre-tokenize the rest; each pre-token -> its UTF-8 bytes.
    2. For each new id 256, 257, ...: count the pairs over all pre-tokens, take the most frequent pair, ties
       going to the greater `(vocab[a], vocab[b])`, record the merge, and apply it everywhere. Stop early
       when no pair is left (the text is used up).
    3. Give the special tokens the ids after the last merge, in the order given.

    Return `Tokenizer(vocab, merges, special_ids, pattern)`: `vocab[i]` is token i's bytes and `merges` lists
    `(vocab[a], vocab[b])` in the order learned.
    """
    check_train_args(text, vocab_size, special_tokens)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `train` in milestones/03/bpe.py (see milestones/03/README.md)')


# ----------------------------------------------------------------------------------------------------
# task03_5: the Tokenizer: encoding and decoding


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
        """Write the tokenizer as JSON that a person can read, atomically (bpe_files.save_tokenizer)."""
        save_tokenizer(path, self.vocab, self.merges, self.special_tokens, self.pattern)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Read a file written by `save` (bpe_files.load_tokenizer)."""
        return cls(*load_tokenizer(path))

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike[str], vocab_bpe: str | os.PathLike[str]) -> Tokenizer:
        """GPT-2's tokenizer from OpenAI's encoder.json and vocab.bpe (bpe_files.read_gpt2_files)."""
        return cls(*read_gpt2_files(encoder_json, vocab_bpe), GPT2_SPLIT_PATTERN)

    def check_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` as a list of ints; a non-integer raises TypeError, an id of no token ValueError naming it."""
        checked = []
        for i in ids:
            if isinstance(i, bool) or not hasattr(i, "__index__"):
                raise TypeError(f"token ids must be ints, got {i!r} ({type(i).__name__})")
            i = i.__index__()  # numpy and torch integer scalars too
            if i not in self.vocab and i not in self.special_bytes:
                raise ValueError(f"token id {i} is not in the vocabulary (ids run from 0 to {self.vocab_size - 1})")
            checked.append(i)
        return checked

    def encode_word(self, word: bytes) -> list[int]:
        """The ids of one pre-token: start from the ids of its single bytes and keep merging (`merge_pair`) the
        adjacent pair whose merge came earliest in training (lowest `ranks[(vocab[a], vocab[b])]`) into the id
        of its joined bytes, until no adjacent pair has a rank. b"hello" with merges
        [(b"l", b"l"), (b"h", b"e"), (b"he", b"ll")] gives [id of b"hell", id of b"o"]."""
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.encode_word` in milestones/03/bpe.py (see milestones/03/README.md)')

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text` with no special tokens at all: pre-tokenize, then `encode_word` each pre-token's UTF-8
        bytes."""
        _check_text(text, "encode_ordinary")
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.encode_ordinary` in milestones/03/bpe.py (see milestones/03/README.md)')

    def allowed_specials(self, text: str, allowed_special: str | set[str] | frozenset[str]) -> set[str]:
        """The special tokens `encode` should treat as special in `text`, with tiktoken's rules.

        "none_raise" (the default, like tiktoken): none are allowed, and a special token found in the text
        raises ValueError naming it. "all": every special token. "none": none; they are encoded as plain
        text. A set of special tokens: those; any other special token in the text raises ValueError.
        """
        check_allowed_special(allowed_special, self.special_tokens)
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.allowed_specials` in milestones/03/bpe.py (see milestones/03/README.md)')

    def encode(self, text: str, allowed_special: str | set[str] | frozenset[str] = "none_raise") -> list[int]:
        """Encode `text` into ids, with the special tokens that `allowed_specials` allows as single ids and the
        text between them through `encode_ordinary`."""
        _check_text(text, "encode")
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 03: write `Tokenizer.encode` in milestones/03/bpe.py (see milestones/03/README.md)')

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the tokens `ids`, concatenated: an ordinary token's from `vocab`, a special token's from
        `special_bytes`. (`check_ids` has made them a list of known ids.)"""
        ids = self.check_ids(ids)
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
