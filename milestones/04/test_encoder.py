"""Public tests for milestone 04, task04_3 (encoder.py): one test per function, in the order you write them.

    pytest milestones/04 -m task04_3      # this task
    pytest milestones/04 -k safe_cut      # one function (each test is marked @pytest.mark.checks("..."))

A test of a function uses only that function and the ones before it (and your milestone 03). Expected ids
come from tiktoken's "gpt2" encoding, your milestone 03's encoder, or a hand count, never from the reference
solution. The hidden tests also stream endless input and time the encoder against tiktoken.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import regex
from tiktoken_ext.openai_public import r50k_pat_str

from llmfs.data import fetch, fetch_file
from llmfs.data.gpt2_tokenizers import gpt2_tiktoken
from llmfs.testing import implementation_fixture

encoder = implementation_fixture("04", "encoder", default_root=Path(__file__).resolve().parents[1])
MY_TOKEN = "<|my token|>"  # a special token with a space in it: never cut there
# a vocabulary that merges spaces: cutting "\n    " after the newline or between two spaces changes its ids
SPACE_MERGES = [(b"\n", b" "), (b"\n ", b" "), (b" ", b" "), (b"  ", b"  ")]


@pytest.fixture(scope="module")
def gpt2(encoder):
    folder = fetch("gpt2-bpe", progress=False)
    return encoder.FastTokenizer.from_gpt2_files(folder / "encoder.json", folder / "vocab.bpe")


@pytest.fixture(scope="module")
def enc():
    return gpt2_tiktoken()


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return fetch_file("tinyshakespeare", progress=False).read_text(encoding="utf-8")


def spaces_tokenizer(encoder, special_tokens: dict[str, int] | None = None):
    vocab = {i: bytes([i]) for i in range(256)} | {256 + i: a + b for i, (a, b) in enumerate(SPACE_MERGES)}
    return encoder.FastTokenizer(vocab, SPACE_MERGES, special_tokens or {})


@pytest.mark.task04_3
@pytest.mark.checks("FastTokenizer.encode_word")
def test_encode_word_equals_tiktoken_and_milestone_03(encoder, gpt2, enc, shakespeare):
    words = sorted(set(regex.findall(r50k_pat_str, shakespeare[:50_000])))
    assert [gpt2.encode_word(w.encode("utf-8")) for w in words] == [enc.encode_ordinary(w) for w in words]
    assert gpt2.encode_word(b"") == [] and gpt2.encode_word(b"\xff") == [enc.encode_single_token(b"\xff")]
    spaces = spaces_tokenizer(encoder)
    naive = encoder.bpe.Tokenizer(spaces.vocab, SPACE_MERGES, {})  # your milestone 03
    for word in [b"\n    ", b"\n   ", b"       ", b"\n\n  ", b" \n  "]:
        assert spaces.encode_word(word) == naive.encode_word(word), word


@pytest.mark.task04_3
@pytest.mark.checks("FastTokenizer.encode_ordinary")
def test_encode_ordinary_equals_tiktoken_with_a_bounded_cache(encoder, enc, shakespeare):
    folder = fetch("gpt2-bpe", progress=False)
    gpt2 = encoder.FastTokenizer.from_gpt2_files(folder / "encoder.json", folder / "vocab.bpe")
    text = shakespeare[:100_000]
    assert gpt2.encode_ordinary(text) == enc.encode_ordinary(text)
    assert "First" in gpt2.cache and " speak" in gpt2.cache and gpt2.encode_ordinary(text) == enc.encode_ordinary(text)  # from the cache
    gpt2.cache_size = 100  # texts of 60 words, each sharing 30 with the one before: the cache fills and is cleared
    words = [f"w{i}x" for i in range(5000)]
    for text in [" ".join(words[i : i + 60]) for i in range(0, 240, 30)] + [" ".join(words)]:
        assert gpt2.encode_ordinary(text) == enc.encode_ordinary(text) and len(gpt2.cache) <= 100


@pytest.mark.task04_3
@pytest.mark.checks("FastTokenizer.safe_cut")
def test_safe_cut_finds_the_last_space_after_a_printable_character(encoder, gpt2, enc, shakespeare):
    plain = spaces_tokenizer(encoder, {MY_TOKEN: 260})
    text = "ab cd  ef"  # spaces at 2, 5 and 6; the one at 6 follows a space
    assert [plain.safe_cut(text, end) for end in range(len(text))] == [0, 0, 2, 2, 2, 5, 5, 5, 5]
    assert plain.safe_cut(" ab", 2) == 0 and plain.safe_cut("a\n b", 3) == 0  # at 0, or after a newline
    text = f"x{MY_TOKEN} y"  # the space at 5 is inside the special token; the one at 13 follows ">"
    assert plain.safe_cut(text, 12) == 0 and plain.safe_cut(text, 13) == 13
    sample = shakespeare[:3000]
    for end in range(0, len(sample), 97):  # cutting there changes no id
        cut = gpt2.safe_cut(sample, end)
        assert cut <= end and enc.encode_ordinary(sample[:cut]) + enc.encode_ordinary(sample[cut:]) == \
            enc.encode_ordinary(sample)


def stream(tokenizer, text: str, piece: int, buffer_chars: int) -> list[int]:
    chunks = (text[i : i + piece] for i in range(0, len(text), piece))
    return list(tokenizer.encode_iterable(chunks, allowed_special="all", buffer_chars=buffer_chars))


@pytest.mark.task04_3
@pytest.mark.checks("FastTokenizer.encode_iterable")
def test_encode_iterable_equals_encoding_the_whole_text(encoder, gpt2, enc, shakespeare):
    stories = fetch_file("tinystories-sample", progress=False).read_text(encoding="utf-8")
    assert stream(gpt2, stories, 5, 1 << 16) == enc.encode(stories, allowed_special="all")
    assert stream(gpt2, shakespeare[:20_000], 7, 256) == enc.encode_ordinary(shakespeare[:20_000])  # many cuts
    runs = "a\n    " * 300
    spaces = spaces_tokenizer(encoder)
    assert stream(spaces, runs, 7, 64) == spaces.encode(runs)  # cut only at a space after a printable character
    tokenizer = encoder.FastTokenizer(gpt2.vocab, gpt2.merges, {MY_TOKEN: 50257})
    for piece in (3, 4096):  # a special token split over two chunks must be seen whole before cutting
        assert stream(tokenizer, f"ab{MY_TOKEN}" * 300, piece, 16).count(50257) == 300
    assert list(gpt2.encode_iterable([])) == []


@pytest.mark.task04_3
@pytest.mark.checks("FastTokenizer.encode_batch")
def test_encode_batch_equals_encoding_one_by_one(gpt2, enc, shakespeare):
    lines = sorted(shakespeare.splitlines(keepends=True), key=len, reverse=True)  # the first slices take longest
    assert gpt2.encode_batch(lines, workers=2) == enc.encode_ordinary_batch(lines)  # over 1 MB: in parallel, in order
    assert gpt2.encode_batch(["ab<|endoftext|>", "c"], allowed_special="all") == [[397, 50256], [66]]
    assert gpt2.encode_batch([]) == []
    with pytest.raises(TypeError):  # (a given check)
        gpt2.encode_batch("one string is not a batch")
