"""References shared by the hidden tests of milestones 03 and 04 (loaded with llmfs.loader.load_module).

Nothing here comes from the code under test: GPT-2's printable byte map is Hugging Face's
(`transformers.convert_slow_tokenizer.bytes_to_unicode`), the reference merges are CS336's fixture files, the
reference ids are tiktoken's, and the pre-tokenizer regex is tiktoken's own r50k pattern.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from hypothesis import strategies as st
from tiktoken_ext.openai_public import r50k_pat_str
from transformers.convert_slow_tokenizer import bytes_to_unicode

from llmfs.data import fetch, fetch_file

ENDOFTEXT = "<|endoftext|>"
TIKTOKEN_GPT2_PATTERN = r50k_pat_str  # tiktoken's spelling of GPT-2's regex (possessive quantifiers)


def gpt2_files() -> tuple[Path, Path]:
    folder = fetch("gpt2-bpe", progress=False)
    return folder / "encoder.json", folder / "vocab.bpe"


TO_BYTE = {ch: b for b, ch in bytes_to_unicode().items()}  # GPT-2's printable characters back to bytes


def unprintable(token: str) -> bytes:
    """GPT-2's printable form ("Ġthe") back to bytes (b" the")."""
    return bytes(TO_BYTE[ch] for ch in token)


@lru_cache(maxsize=1)
def cs336_reference() -> tuple[list[tuple[bytes, bytes]], dict[int, bytes]]:
    """CS336's reference merges and vocabulary for corpus.en, vocab_size 500, special token <|endoftext|>."""
    folder = fetch("cs336-bpe", progress=False)
    lines = (folder / "train-bpe-reference-merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [(unprintable(a), unprintable(b)) for a, b in (line.split(" ") for line in lines if line)]
    vocab = json.loads((folder / "train-bpe-reference-vocab.json").read_text(encoding="utf-8"))
    return merges, {i: (token.encode() if token == ENDOFTEXT else unprintable(token)) for token, i in vocab.items()}


def read(name: str, filename: str | None = None) -> str:
    return fetch_file(name, filename, progress=False).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def hellaswag_contexts() -> list[str]:
    lines = fetch_file("hellaswag-val", progress=False).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["ctx"] for line in lines]


# Property-based text: the characters where byte-level BPE and GPT-2's regex have edge cases.
PIECES = [
    " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u3000", "\u2028",  # whitespace runs, odd spaces
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'", "''",  # contractions (GPT-2's are lowercase)
    "0", "7", "42", "2024", "3.14", "١٢٣",  # digits, including Arabic-Indic ones
    "a", "the", "The", " hello", "naïve", "Straße", "ǅ", "ﬁ",  # letters, combining forms, ligatures
    "日本語", "한국어", "Привет", "مرحبا", "עברית",  # other scripts
    "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "\U0001f9d1\u200d\U0001f52c",  # emoji, skin tones, ZWJ sequences, flags
    "!", "?!", "...", "—", "«»", "$", "%", "@", "#", "(", ")", "\\", "\"", "`", "~", "<|", "|>", "\u0301",
]


def texts(with_special: bool = False) -> st.SearchStrategy[str]:
    """Concatenations of the edge-case pieces above mixed with arbitrary Unicode (no lone surrogates)."""
    piece = st.one_of(st.sampled_from(PIECES), st.text(st.characters(exclude_categories=("Cs",)), max_size=4))
    if with_special:
        piece = st.one_of(piece, st.just(ENDOFTEXT))
    return st.lists(piece, max_size=30).map("".join)
