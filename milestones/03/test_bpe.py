"""Public tests for milestone 03, bpe.py and bpe_files.py: one or more per function you write.

Run the tests of one function with `pytest milestones/03 -k merge_pair` (or of one task with `-m task03_2`). Each
checks on small inputs against an independent reference (tiktoken, OpenAI's and CS336's files, a worked example),
and uses only the function it checks and the functions before it. The hidden tests that grade you check the same
things at full size: all 243 of CS336's merges, all of TinyShakespeare and HellaSwag against tiktoken, and hundreds
of random Unicode strings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import regex
from tiktoken_ext.openai_public import r50k_pat_str

from llmfs.data import fetch, fetch_file
from llmfs.data.gpt2_tokenizers import gpt2_tiktoken
from llmfs.testing import implementation_fixture

ROOT = Path(__file__).resolve().parents[1]
bpe = implementation_fixture("03", "bpe", default_root=ROOT)
bpe_files = implementation_fixture("03", "bpe_files", default_root=ROOT)
ENDOFTEXT = "<|endoftext|>"
TRICKY = "Hello world's 2024!!  \n\n  tabs\tand  spaces   naïve 日本語 😀👍🏽 I'LL don't\n"
BYTES = {i: bytes([i]) for i in range(256)}


@pytest.fixture(scope="module")
def enc():
    return gpt2_tiktoken()


@pytest.fixture(scope="module")
def gpt2(bpe):
    folder = fetch("gpt2-bpe", progress=False)
    return bpe.Tokenizer.from_gpt2_files(folder / "encoder.json", folder / "vocab.bpe")


@pytest.fixture(scope="module")
def shakespeare():
    return fetch_file("tinyshakespeare", progress=False).read_text(encoding="utf-8")[:20_000] + TRICKY


# ---------------------------------------------------------------------------------------------- task03_1


@pytest.mark.task03_1
@pytest.mark.checks("split_on_special")
def test_split_on_special(bpe):
    assert bpe.split_on_special(f"a{ENDOFTEXT}b", [ENDOFTEXT]) == ["a", ENDOFTEXT, "b"]
    assert bpe.split_on_special(f"{ENDOFTEXT}{ENDOFTEXT}x", [ENDOFTEXT]) == [ENDOFTEXT, ENDOFTEXT, "x"]  # no empties
    assert bpe.split_on_special("x<|a|><|a|>y", ["<|a|>", "<|a|><|a|>"]) == ["x", "<|a|><|a|>", "y"]  # longest wins
    assert bpe.split_on_special("1+1=2", ["+"]) == ["1", "+", "1=2"]  # special tokens are text, not regexes
    assert bpe.split_on_special("plain", []) == ["plain"] and bpe.split_on_special("", [ENDOFTEXT]) == []


@pytest.mark.task03_1
@pytest.mark.checks("pretokenize")
def test_pretokenize(bpe):
    assert bpe.pretokenize(TRICKY) == regex.findall(r50k_pat_str, TRICKY)  # tiktoken's own regex
    assert bpe.pretokenize("Hello world's 2024!!") == ["Hello", " world", "'s", " 2024", "!!"]
    assert bpe.pretokenize("1234567", bpe.GPT4_SPLIT_PATTERN) == ["123", "456", "7"]  # the pattern it is given


# ---------------------------------------------------------------------------------------------- task03_2


@pytest.mark.task03_2
@pytest.mark.checks("count_pairs")
def test_count_pairs(bpe):
    assert dict(bpe.count_pairs([[1, 2, 3], [1, 2], [7, 7, 7]])) == {(1, 2): 2, (2, 3): 1, (7, 7): 2}
    assert dict(bpe.count_pairs([[5], []])) == {}


@pytest.mark.task03_2
@pytest.mark.checks("merge_pair")
def test_merge_pair(bpe):
    assert bpe.merge_pair([7, 7, 7, 1], (7, 7), 9) == [9, 7, 1]  # left to right, a merged pair's ids used up
    assert bpe.merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]  # the last pair too
    assert bpe.merge_pair([2, 1], (1, 2), 9) == [2, 1] and bpe.merge_pair([], (1, 2), 9) == []


# ---------------------------------------------------------------------------------------------- task03_3


@pytest.mark.task03_3
@pytest.mark.checks("train")
def test_train_follows_the_tie_rule(bpe):
    # (a, a) x4; then (aa, a) and (a, b) tie at 2, and b"aa" > b"a"; then (aaa, b)
    tokenizer = bpe.train("aaabdaaabac", 259)
    assert [tuple(p) for p in tokenizer.merges] == [(b"a", b"a"), (b"aa", b"a"), (b"aaa", b"b")]
    assert tokenizer.vocab[256] == b"aa" and tokenizer.vocab[258] == b"aaab"


@pytest.mark.task03_3
@pytest.mark.checks("train")
def test_train_breaks_ties_on_bytes_and_stops_when_the_text_is_used_up(bpe):
    # (a, a) x3 first, as id 256; then (aa, x) and (b, c) tie at 2: b"b" > b"aa", though 256 > 98
    tokenizer = bpe.train("aax aax aa bc bc", 259, pattern=r"\S+")
    assert [tuple(p) for p in tokenizer.merges] == [(b"a", b"a"), (b"b", b"c"), (b"aa", b"x")]
    # "abab" holds two merges (ab, then abab): asking for 44 gives two and a smaller vocabulary
    tokenizer = bpe.train("abab", 300)
    assert [tuple(p) for p in tokenizer.merges] == [(b"a", b"b"), (b"ab", b"ab")] and tokenizer.vocab_size == 258


@pytest.mark.task03_3
@pytest.mark.checks("train")
def test_train_never_learns_from_special_tokens(bpe):
    # "<|x|>" three times would make ("<", "|") the most frequent pair, were it trained on as text
    tokenizer = bpe.train("<|x|> <|x|> <|x|> ab", 258, special_tokens=["<|x|>"])
    assert [tuple(p) for p in tokenizer.merges] == [(b"a", b"b")]  # 256 bytes + 1 merge + 1 special = 258
    assert tokenizer.special_tokens == {"<|x|>": 257}


@pytest.mark.task03_3
@pytest.mark.checks("train")
def test_train_matches_the_first_cs336_merges(bpe):
    folder = fetch("cs336-bpe", progress=False)
    text = (folder / "corpus.en").read_text(encoding="utf-8")
    tokenizer = bpe.train(text, 266, [ENDOFTEXT])  # 9 merges; the hidden test checks all 243 of vocab 500
    lines = (folder / "train-bpe-reference-merges.txt").read_text(encoding="utf-8").splitlines()[:9]
    # The file writes bytes in GPT-2's printable form (task03_4); its first merges only need "Ġ" = space.
    expected = [tuple(part.replace("Ġ", " ").encode() for part in line.split(" ")) for line in lines]
    assert [tuple(p) for p in tokenizer.merges] == expected


# ---------------------------------------------------------------------------------------------- task03_4


@pytest.mark.task03_4
@pytest.mark.checks("bytes_to_unicode")
def test_bytes_to_unicode(bpe_files, enc):
    mapping = bpe_files.bytes_to_unicode()
    assert sorted(mapping) == list(range(256)) and len(set(mapping.values())) == 256
    assert mapping[ord("!")] == "!" and mapping["é".encode()[0]] == "Ã"  # printable bytes keep their character
    # the other 68 in order from chr(256): 0-32 are chr(256)-chr(288), 127-160 follow, then 173
    assert (mapping[0], mapping[ord("\n")], mapping[ord(" ")], mapping[127], mapping[173]) == ("Ā", "Ċ", "Ġ", "ġ", "Ń")
    # OpenAI's encoder.json writes each single byte with this map, under tiktoken's id for that byte
    encoder = json.loads((fetch("gpt2-bpe", progress=False) / "encoder.json").read_text(encoding="utf-8"))
    assert all(encoder[mapping[b]] == enc.encode_single_token(bytes([b])) for b in range(256))


def tiny_tokenizer_parts():
    """A tokenizer written by hand: 256 bytes, merges " t" and "he", a special token, a pattern."""
    return {**BYTES, 256: b" t", 257: b"he"}, [(b" ", b"t"), (b"h", b"e")], {ENDOFTEXT: 258}, r"\S+|\s+"


@pytest.mark.task03_4
@pytest.mark.checks("save_tokenizer")
def test_save_tokenizer_writes_readable_json(bpe_files, tmp_path):
    path = tmp_path / "tok.json"
    bpe_files.save_tokenizer(path, *tiny_tokenizer_parts())
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == "llmfs-bpe" and document["version"] == 1 and document["pattern"] == r"\S+|\s+"
    assert document["special_tokens"] == {ENDOFTEXT: 258}
    assert document["merges"] == ["Ġ t", "h e"]  # GPT-2's printable form: "Ġ" is a space
    assert document["vocab"]["Ġt"] == 256 and document["vocab"]["Ċ"] == ord("\n") and len(document["vocab"]) == 258
    assert "Ġt" in path.read_text(encoding="utf-8")  # readable: not escaped as \u0120


@pytest.mark.task03_4
@pytest.mark.checks("save_tokenizer")
def test_save_tokenizer_is_atomic(bpe_files, tmp_path):
    path = tmp_path / "tok.json"
    path.write_text("an older file")
    inode = path.stat().st_ino
    bpe_files.save_tokenizer(path, *tiny_tokenizer_parts())
    # atomic: a temporary file renamed over the old one (a new inode), nothing left beside it
    assert path.stat().st_ino != inode and [p.name for p in tmp_path.iterdir()] == ["tok.json"]


@pytest.mark.task03_4
@pytest.mark.checks("load_tokenizer")
def test_load_tokenizer_reads_what_save_wrote(bpe_files, bpe, tmp_path):
    parts = tiny_tokenizer_parts()
    bpe_files.save_tokenizer(tmp_path / "tok.json", *parts)
    vocab, merges, special_tokens, pattern = bpe_files.load_tokenizer(tmp_path / "tok.json")
    assert vocab == parts[0] and [tuple(p) for p in merges] == parts[1]
    assert special_tokens == parts[2] and pattern == parts[3]
    trained = bpe.train("hello hello world", 260)  # Tokenizer.save and Tokenizer.load (given) call them
    trained.save(tmp_path / "trained.json")
    assert bpe.Tokenizer.load(tmp_path / "trained.json").merges == trained.merges


@pytest.mark.task03_4
@pytest.mark.checks("load_tokenizer")
def test_load_tokenizer_refuses_other_files(bpe_files, tmp_path):
    document = {"format": "llmfs-bpe", "version": 1, "pattern": r"\S+", "special_tokens": {},
                "vocab": {"Ġ": 32, "Ġt": 256}, "merges": ["Ġ t"]}  # written by hand (a real one has 256 bytes)
    (tmp_path / "hand.json").write_text(json.dumps(document), encoding="utf-8")
    vocab, merges, special_tokens, _ = bpe_files.load_tokenizer(tmp_path / "hand.json")
    assert vocab == {32: b" ", 256: b" t"} and [tuple(p) for p in merges] == [(b" ", b"t")] and special_tokens == {}
    (tmp_path / "other.json").write_text('{"model": "something else"}')
    with pytest.raises(ValueError, match="other.json"):
        bpe_files.load_tokenizer(tmp_path / "other.json")


@pytest.mark.task03_4
@pytest.mark.checks("read_gpt2_files")
def test_read_gpt2_files_gives_tiktokens_tokens(bpe_files, enc):
    folder = fetch("gpt2-bpe", progress=False)
    vocab, merges, special_tokens = bpe_files.read_gpt2_files(folder / "encoder.json", folder / "vocab.bpe")
    assert special_tokens == {ENDOFTEXT: 50256} and len(vocab) == 50256 and len(merges) == 50000
    assert vocab[15496] == b"Hello" and tuple(merges[0]) == (b" ", b"t")  # no "#version" merge
    assert all(token == enc.decode_single_token_bytes(i) for i, token in vocab.items())
    assert all(a + b == enc.decode_single_token_bytes(256 + rank) for rank, (a, b) in enumerate(merges))


# ---------------------------------------------------------------------------------------------- task03_5


@pytest.mark.task03_5
@pytest.mark.checks("Tokenizer.encode_word")
def test_encode_word(bpe, gpt2, enc):
    vocab = {**BYTES, 256: b"ll", 257: b"he", 258: b"hell"}
    tiny = bpe.Tokenizer(vocab, [(b"l", b"l"), (b"h", b"e"), (b"he", b"ll")])
    assert tiny.encode_word(b"hello") == [258, ord("o")]  # ll, then he, then he+ll
    assert tiny.encode_word(b"lll") == [256, ord("l")] and tiny.encode_word(b"") == []
    for piece in regex.findall(r50k_pat_str, TRICKY + " tokenization supercalifragilistic"):
        assert gpt2.encode_word(piece.encode("utf-8")) == enc.encode_ordinary(piece), piece


@pytest.mark.task03_5
@pytest.mark.checks("Tokenizer.encode_ordinary")
def test_encode_ordinary(gpt2, enc, shakespeare):
    assert gpt2.encode_ordinary(shakespeare) == enc.encode_ordinary(shakespeare)
    text = f"a{ENDOFTEXT}b"  # no special tokens at all: <|endoftext|> is text
    assert gpt2.encode_ordinary(text) == enc.encode_ordinary(text)


@pytest.mark.task03_5
@pytest.mark.checks("Tokenizer.allowed_specials")
def test_allowed_specials(gpt2):
    assert gpt2.allowed_specials("hi", "none_raise") == set()
    assert gpt2.allowed_specials(f"a{ENDOFTEXT}", "all") == {ENDOFTEXT}
    assert gpt2.allowed_specials(f"a{ENDOFTEXT}", {ENDOFTEXT}) == {ENDOFTEXT}
    assert gpt2.allowed_specials(f"a{ENDOFTEXT}", "none") == set()
    with pytest.raises(ValueError, match="endoftext"):
        gpt2.allowed_specials(f"a{ENDOFTEXT}", "none_raise")  # tiktoken's default: a special token in the text
    with pytest.raises(ValueError, match="endoftext"):
        gpt2.allowed_specials(f"a{ENDOFTEXT}", set())


@pytest.mark.task03_5
@pytest.mark.checks("Tokenizer.encode")
def test_encode_follows_tiktokens_rules(gpt2, enc, shakespeare):
    assert gpt2.encode(shakespeare) == enc.encode(shakespeare)
    text = f"Hello{ENDOFTEXT} world"
    for allowed in ("all", {ENDOFTEXT}):
        assert gpt2.encode(text, allowed_special=allowed) == enc.encode(text, allowed_special=allowed)
    assert gpt2.encode(text, allowed_special="none") == enc.encode(text, disallowed_special=())
    with pytest.raises(ValueError):
        gpt2.encode(text)
    with pytest.raises(ValueError):
        gpt2.encode("hi", allowed_special={"<|not a special token|>"})


@pytest.mark.task03_5
@pytest.mark.checks("Tokenizer.decode_bytes")
def test_decode_bytes(gpt2, enc):
    ids = [*enc.encode("Hello wörld"), 50256, enc.encode_single_token(b"\xc3")]
    assert gpt2.decode_bytes(ids) == enc.decode_bytes(ids) == "Hello wörld".encode() + ENDOFTEXT.encode() + b"\xc3"
    assert gpt2.decode_bytes([]) == b""
    with pytest.raises(ValueError, match="50300"):
        gpt2.decode_bytes([15496, 50300])  # no token has id 50300: a ValueError naming it, not a KeyError


@pytest.mark.task03_5
@pytest.mark.checks("Tokenizer.decode")
def test_decode_like_tiktoken(gpt2, enc, shakespeare):
    ids = enc.encode(shakespeare)
    assert gpt2.decode(ids) == shakespeare
    assert gpt2.decode([15496, 50256]) == enc.decode([15496, 50256]) == f"Hello{ENDOFTEXT}"
    cut = [enc.encode_single_token(b"\xc3"), *enc.encode(" a")]  # half of "é" (c3 a9), then " a"
    assert gpt2.decode(cut) == enc.decode(cut) == "\ufffd a"
