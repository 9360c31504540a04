"""Public tests for milestone 04, task04_1 (pretokens.py): one test per function, in the order you write them.

    pytest milestones/04 -m task04_1                # this task
    pytest milestones/04 -k find_chunk_boundaries   # one function (each test is marked @pytest.mark.checks("..."))

A test of a function uses only that function and the ones before it. Expected values come from tiktoken's
own GPT-2 regex (r50k) or from a hand count, never from the reference solution.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
import regex
from tiktoken_ext.openai_public import r50k_pat_str

from llmfs.data import fetch_file
from llmfs.testing import implementation_fixture

pretokens = implementation_fixture("04", "pretokens", default_root=Path(__file__).resolve().parents[1])
ENDOFTEXT = "<|endoftext|>"
MY_TOKEN = "<|end of text|>"  # a special token with a space in it


def tiktoken_pretokens(text: str, special: str | None = None) -> Counter[str]:
    """tiktoken's GPT-2 pre-tokens of `text`, counted, the special token split off and dropped."""
    parts = text.split(special) if special else [text]
    return Counter(p for part in parts for p in regex.findall(r50k_pat_str, part))


@pytest.fixture(scope="module")
def stories() -> str:
    return fetch_file("tinystories-sample", progress=False).read_text(encoding="utf-8")


@pytest.mark.task04_1
@pytest.mark.checks("find_chunk_boundaries")
def test_find_chunk_boundaries_cuts_where_no_pretoken_crosses(pretokens):
    # b"ab cd ef": aim at byte 4 ("d"), move on to the first space after a printable character, byte 5
    assert pretokens.find_chunk_boundaries(io.BytesIO(b"ab cd ef"), 2) == [0, 5, 8]
    assert pretokens.find_chunk_boundaries(io.BytesIO(b"ab cd ef"), 2, window=1) == [0, 5, 8]
    assert pretokens.find_chunk_boundaries(io.BytesIO(b"abcdef"), 3) == [0, 6]  # no safe cut: one chunk
    plain = ("a  b\n\n  c, " * 50).encode()  # whitespace runs: a space after a space belongs to a run
    bounds = pretokens.find_chunk_boundaries(io.BytesIO(plain), 20)
    assert bounds[0] == 0 and bounds[-1] == len(plain) and bounds == sorted(set(bounds)) and len(bounds) > 10
    for cut in bounds[1:-1]:  # at a space right after a printable ASCII character, nowhere else
        assert plain[cut : cut + 1] == b" " and 0x21 <= plain[cut - 1] <= 0x7E, plain[cut - 5 : cut + 5]
    text = ("x" + MY_TOKEN + "y  z ") * 100  # a space inside the special token: cut only where one starts
    bounds = pretokens.find_chunk_boundaries(io.BytesIO(text.encode()), 30, [MY_TOKEN], window=8)
    assert len(bounds) > 10
    for cut in bounds[1:-1]:
        assert text.encode()[cut:].startswith(MY_TOKEN.encode())


@pytest.mark.task04_1
@pytest.mark.checks("count_pretokens")
def test_count_pretokens_counts_tiktokens_pretokens(pretokens, stories):
    assert pretokens.count_pretokens(f"the cat{ENDOFTEXT}the", [ENDOFTEXT]) == Counter({"the": 2, " cat": 1})
    assert pretokens.count_pretokens(stories, [ENDOFTEXT]) == tiktoken_pretokens(stories, ENDOFTEXT)
    assert pretokens.count_pretokens(stories) == tiktoken_pretokens(stories)  # no special: "<|" is text


@pytest.mark.task04_1
@pytest.mark.checks("count_pretokens_in_file")
def test_count_pretokens_in_file_adds_up_the_chunks(pretokens, stories, tmp_path):
    path = tmp_path / "stories.txt"
    path.write_text(stories * 20, encoding="utf-8")
    expected = tiktoken_pretokens(stories, ENDOFTEXT)
    for workers in (1, 2):
        got = pretokens.count_pretokens_in_file(path, [ENDOFTEXT], workers=workers, chunk_bytes=4096)
        assert got == Counter({word: 20 * n for word, n in expected.items()}), f"workers={workers}"
    text = ("x" + MY_TOKEN + "y  z ") * 100
    path.write_text(text, encoding="utf-8")
    got = pretokens.count_pretokens_in_file(path, [MY_TOKEN], workers=2, chunk_bytes=64)
    assert got == tiktoken_pretokens(text, MY_TOKEN)
