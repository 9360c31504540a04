"""Milestone 03, files: GPT-2's printable form of bytes, this course's tokenizer file, and OpenAI's GPT-2 files.

Tokens are bytes, and many bytes do not print (a space, a newline, half of "é"). GPT-2's files write each byte
as one printable character (`bytes_to_unicode`: a space is "Ġ"), so the token b" the" is written "Ġthe". The
given `Tokenizer.save`, `Tokenizer.load` and `Tokenizer.from_gpt2_files` in bpe.py call the functions here.

    task03_4  bytes_to_unicode, save_tokenizer, load_tokenizer, read_gpt2_files
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

from llmfs.fsutil import atomic_write_text

FORMAT = "llmfs-bpe"  # the "format" field of a saved tokenizer
Vocab = dict[int, bytes]  # {id: token bytes}
Merges = list[tuple[bytes, bytes]]  # [(left bytes, right bytes), ...] in the order learned


def printable(token: bytes) -> str:
    """`token` in GPT-2's printable form (`bytes_to_unicode`, one character per byte): b" the" -> "Ġthe"."""
    chars = _byte_to_char()
    return "".join(chars[b] for b in token)


def unprintable(text: str) -> bytes:
    """The bytes of a token written in GPT-2's printable form: "Ġthe" -> b" the"."""
    to_byte = _char_to_byte()
    return bytes(to_byte[ch] for ch in text)


@functools.cache
def _byte_to_char() -> dict[int, str]:
    return bytes_to_unicode()


@functools.cache
def _char_to_byte() -> dict[str, int]:
    return {ch: b for b, ch in bytes_to_unicode().items()}


def check_format(document: object, path: str | os.PathLike[str]) -> None:
    """The error `load_tokenizer` raises for a JSON file that `save_tokenizer` did not write."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tokenizer saved by Tokenizer.save (no \"format\": \"{FORMAT}\")")


# ----------------------------------------------------------------------------------------------------
# task03_4: GPT-2's byte-to-unicode map, this course's file, OpenAI's files


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte 0-255 to a printable character, used in encoder.json and vocab.bpe.

    The 188 bytes that print well keep their own character: "!" (33) to "~" (126), "¡" (161) to "¬" (172)
    and "®" (174) to "ÿ" (255). The other 68 (control characters, space, 127-160, 173), in increasing
    order, map to chr(256), chr(257), ...: so a space (32) is "Ġ" (chr(288)) and a newline (10) is "Ċ".
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `bytes_to_unicode` in milestones/03/bpe_files.py (see milestones/03/README.md)')


def save_tokenizer(path: str | os.PathLike[str], vocab: Vocab, merges: Sequence[tuple[bytes, bytes]],
                   special_tokens: dict[str, int], pattern: str) -> None:
    """Write a tokenizer as JSON a person can read, atomically (`llmfs.fsutil.atomic_write_text`).

    Tokens are written with `printable`, like vocab.bpe: {"format": "llmfs-bpe", "version": 1,
    "pattern": ..., "special_tokens": {str: id}, "vocab": {printable token: id} in id order,
    "merges": ["Ġ t", "h e", ...]}.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `save_tokenizer` in milestones/03/bpe_files.py (see milestones/03/README.md)')


def load_tokenizer(path: str | os.PathLike[str]) -> tuple[Vocab, Merges, dict[str, int], str]:
    """Read a file written by `save_tokenizer`: (vocab, merges, special_tokens, pattern).

    Check the JSON with `check_format(document, path)` before reading its fields.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `load_tokenizer` in milestones/03/bpe_files.py (see milestones/03/README.md)')


def read_gpt2_files(encoder_json: str | os.PathLike[str],
                    vocab_bpe: str | os.PathLike[str]) -> tuple[Vocab, Merges, dict[str, int]]:
    """GPT-2's (vocab, merges, special_tokens) from OpenAI's files.

    encoder.json maps printable tokens to ids (50,257 of them); "<|endoftext|>" (50256) is a special token,
    not an ordinary one. vocab.bpe has a "#version" line, then one merge per line, "Ġ t", in rank order.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 03: write `read_gpt2_files` in milestones/03/bpe_files.py (see milestones/03/README.md)')
