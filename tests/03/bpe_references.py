"""References shared by the hidden tests of milestones 03 and 04 (loaded with llmfs.loader.load_module).

Nothing here comes from the code under test: GPT-2's printable byte map is Hugging Face's
(`transformers.convert_slow_tokenizer.bytes_to_unicode`), the reference merges are CS336's fixture files, the
reference ids are tiktoken's, and the pre-tokenizer regex is tiktoken's own r50k pattern.

The property-based tests compare with tiktoken on random Unicode, so their text avoids the few code points where
the installed `regex` module and tiktoken disagree about what a letter, a number or a space is (see
`unicode_disagreements`), and they run with `property_settings`: the same examples in every grade.
"""

from __future__ import annotations

import json
from functools import lru_cache
from itertools import chain
from pathlib import Path

import regex
from hypothesis import HealthCheck, settings
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


# The only character classes in GPT-2's pattern (and in r50k's), each with a member every Unicode version agrees on.
GPT2_CLASSES = {r"\p{L}": "a", r"\p{N}": "7", r"\s": " "}


@lru_cache(maxsize=1)
def unicode_disagreements() -> frozenset[str]:
    """The code points that the installed `regex` module and tiktoken put in different GPT-2 classes.

    GPT-2's pattern reads a character only through three classes: letter (\\p{L}), number (\\p{N}) and space
    (\\s); everything else in it is literal ASCII. Each engine carries its own Unicode tables: `regex` follows the
    newest Unicode (2026.11.19: Unicode 18, where U+3D000 is a Small Seal character, a letter), tiktoken's Rust
    regex an older one (U+3D000 unassigned: tiktoken splits "\\U0003d000's" into "\\U0003d000'" + "s", `regex` into
    "\\U0003d000" + "'s"). On such a code point no learner's `regex`-based pre-tokenizer can match tiktoken except
    by accident, so the strategies below never draw one (code points unassigned in both are drawn as before). On
    every other code point the two engines see the same classes, hence the same pre-tokens: that is what makes a
    comparison with tiktoken deterministic for correct code.

    Computed from the engines installed, not from a table written down here, so it stays right when either is
    upgraded: for each class, tiktoken encodes all 1,112,064 code points (surrogates aside) with an encoding whose
    pattern is that class alone and whose vocabulary is the 256 bytes. tiktoken encodes only what its pattern
    matches, so the bytes that come back are exactly the class's members; `regex.findall` gives the `regex`
    module's. The symmetric differences, united: 17,480 code points with regex 2026.11.19 and tiktoken 0.14.0,
    all unassigned in Python 3.11's unicodedata (Unicode 14). About 0.3 s, once per process.
    """
    import tiktoken

    everything = "".join(map(chr, chain(range(0xD800), range(0xE000, 0x110000))))
    single_bytes = {bytes([b]): b for b in range(256)}
    differ: set[str] = set()
    for cls, member in GPT2_CLASSES.items():
        probe = tiktoken.Encoding(name=f"gpt2-class-probe {cls}", pat_str=cls, mergeable_ranks=single_bytes,
                                  special_tokens={})
        theirs = set(bytes(probe.encode_ordinary(everything)).decode("utf-8"))
        ours = set(regex.findall(cls, everything))
        if member not in theirs or "!" in theirs:  # tiktoken encoded text its pattern did not match
            raise RuntimeError(f"tiktoken's probe for {cls} returned {len(theirs)} code points: this "
                               "tiktoken no longer encodes only the pattern's matches; rewrite the probe")
        differ |= theirs ^ ours
    return frozenset(differ)


def characters(min_codepoint: int = 0, max_codepoint: int = 0x10FFFF) -> st.SearchStrategy[str]:
    """Any one code point (unassigned ones included) but lone surrogates and `unicode_disagreements()`."""
    return st.characters(min_codepoint=min_codepoint, max_codepoint=max_codepoint, exclude_categories=("Cs",),
                         exclude_characters=unicode_disagreements())


def texts(with_special: bool = False) -> st.SearchStrategy[str]:
    """Concatenations of the edge-case pieces above mixed with arbitrary Unicode (`characters`, computed on the
    first draw, not at collection)."""
    piece = st.one_of(st.sampled_from(PIECES), st.text(st.deferred(characters), max_size=4))
    if with_special:
        piece = st.one_of(piece, st.just(ENDOFTEXT))
    return st.lists(piece, max_size=30).map("".join)


def property_settings(max_examples: int = 200) -> settings:
    """Hypothesis settings of the hidden property tests: the same examples in every grade.

    derandomize seeds each test from a hash of its own code (so a grade does not depend on the day it runs) and
    database=None keeps no examples between runs (a failure found once is not replayed into the next grade, and
    nothing is written beside the tests). No deadline: a grading machine may be slow. report_multiple_bugs=False:
    a wrong function shows one minimal example, not "Hypothesis found 2 distinct failures".
    """
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    report_multiple_bugs=False, suppress_health_check=[HealthCheck.function_scoped_fixture])
