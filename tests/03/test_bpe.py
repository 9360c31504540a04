"""Hidden tests for milestone 03 (naive byte-level BPE): the grade. 100 points.

References are independent of the code under test: tiktoken's gpt2 encoding and its own pre-tokenizer regex,
CS336's reference merges and vocabulary (fixture files), Hugging Face's GPT-2 byte map, collections.Counter,
and examples worked out by hand in the docstrings.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st
from transformers.convert_slow_tokenizer import bytes_to_unicode

from llmfs.data.gpt2_tokenizers import gpt2_tiktoken
from llmfs.loader import load_module
from llmfs.testing import implementation_fixture, race, record_threshold, thresholds

bpe = implementation_fixture("03", "bpe")
ref = load_module(Path(__file__).resolve().parents[1], "03", "bpe_references")
ENDOFTEXT = ref.ENDOFTEXT
LIMITS = thresholds("03")
PROPERTY = ref.property_settings(200)  # the same examples in every grade, no example database


@pytest.fixture(scope="module")
def gpt2(bpe):
    return bpe.Tokenizer.from_gpt2_files(*ref.gpt2_files())


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    return gpt2_tiktoken()


@pytest.fixture(scope="module")
def cs336_trained(bpe):
    return bpe.train(ref.read("cs336-bpe", "corpus.en"), 500, [ENDOFTEXT])


@pytest.fixture(scope="module")
def stories_trained(bpe):
    """A small tokenizer (TinyStories, 400 tokens, two specials): a second to train even naively."""
    return bpe.train(ref.read("tinystories-sample"), 400, [ENDOFTEXT, "<|pad|>"])


# ---------------------------------------------------------------------------------------------- task03_1


@pytest.mark.task03_1
@pytest.mark.points(4)
def test_split_on_special_keeps_special_tokens_as_items(bpe):
    """split_on_special cuts around special tokens, keeps them, drops empty pieces, prefers the longest"""
    assert bpe.split_on_special(f"a{ENDOFTEXT}b", [ENDOFTEXT]) == ["a", ENDOFTEXT, "b"]
    assert bpe.split_on_special(f"{ENDOFTEXT}{ENDOFTEXT}x", [ENDOFTEXT]) == [ENDOFTEXT, ENDOFTEXT, "x"]
    assert bpe.split_on_special("no specials here", [ENDOFTEXT]) == ["no specials here"]
    assert bpe.split_on_special("plain", []) == ["plain"]
    assert bpe.split_on_special("", [ENDOFTEXT]) == []
    assert bpe.split_on_special("x<|a|><|a|>y", ["<|a|>", "<|a|><|a|>"]) == ["x", "<|a|><|a|>", "y"]
    assert bpe.split_on_special("1+1=2", ["+"]) == ["1", "+", "1=2"]  # specials are literal text, not regexes


@pytest.mark.task03_1
@pytest.mark.points(5)
def test_pretokenize_matches_tiktokens_gpt2_regex_on_real_text(bpe):
    """GPT-2's pattern splits TinyShakespeare, CS336's texts and HellaSwag exactly as tiktoken's r50k regex does"""
    tiktoken_split = regex.compile(ref.TIKTOKEN_GPT2_PATTERN)
    corpora = [ref.read("tinyshakespeare"), ref.read("cs336-bpe", "address.txt"), ref.read("cs336-bpe", "german.txt"),
               "\n".join(ref.hellaswag_contexts()[:2000])]
    for text in corpora:
        assert bpe.pretokenize(text) == tiktoken_split.findall(text)
    assert bpe.pretokenize("Hello world's 2024!!") == ["Hello", " world", "'s", " 2024", "!!"]


@pytest.mark.task03_1
@pytest.mark.points(2)
@given(text=ref.texts())
@PROPERTY
def test_pretokenize_matches_tiktoken_on_random_unicode(bpe, text):
    """On random Unicode (emoji, whitespace runs, contractions, digits) the split is tiktoken's"""
    assert bpe.pretokenize(text) == regex.findall(ref.TIKTOKEN_GPT2_PATTERN, text)


@pytest.mark.task03_1
@pytest.mark.points(2)
def test_pretokenize_uses_the_pattern_it_is_given(bpe):
    """With GPT-4's pattern digits come in groups of at most three and contractions ignore case"""
    assert bpe.pretokenize("1234567 I'M", bpe.GPT4_SPLIT_PATTERN) == ["123", "456", "7", " I", "'M"]
    assert bpe.pretokenize("a-b", r"\w") == ["a", "b"]


# ---------------------------------------------------------------------------------------------- task03_2


@pytest.mark.task03_2
@pytest.mark.points(5)
@given(words=st.lists(st.lists(st.integers(0, 5), max_size=12), max_size=8))
@PROPERTY
def test_count_pairs_counts_every_adjacent_pair(bpe, words):
    """count_pairs equals a Counter over zip(ids, ids[1:]), overlapping pairs included"""
    expected = Counter(pair for ids in words for pair in zip(ids, ids[1:], strict=False))
    assert dict(bpe.count_pairs(words)) == dict(expected)
    assert dict(bpe.count_pairs([[1, 2, 3], [1, 2], [7, 7, 7]])) == {(1, 2): 2, (2, 3): 1, (7, 7): 2}


@pytest.mark.task03_2
@pytest.mark.points(5)
@given(ids=st.lists(st.integers(0, 3), max_size=20), a=st.integers(0, 3), b=st.integers(0, 3))
@PROPERTY
def test_merge_pair_replaces_left_to_right(bpe, ids, a, b):
    """merge_pair equals a left-to-right regex substitution on the ids written as letters"""
    letters = "".join("abcd"[i] for i in ids)
    expected = [{"abcd"[k]: k for k in range(4)}.get(ch, 9) for ch in letters.replace("abcd"[a] + "abcd"[b], "Z")]
    assert bpe.merge_pair(ids, (a, b), 9) == expected
    assert bpe.merge_pair([7, 7, 7, 1], (7, 7), 9) == [9, 7, 1]


# ---------------------------------------------------------------------------------------------- task03_3


@pytest.mark.task03_3
@pytest.mark.points(12)
def test_training_reproduces_cs336s_reference_merges_byte_for_byte(cs336_trained):
    """corpus.en, vocab 500, <|endoftext|>: all 243 merges equal CS336's reference, in order"""
    expected, _ = ref.cs336_reference()
    got = [tuple(pair) for pair in cs336_trained.merges]
    assert len(got) == len(expected) == 243
    first_wrong = next((i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e), None)
    assert first_wrong is None, (f"merge {first_wrong} is {got[first_wrong]}, CS336's reference has "
                                 f"{expected[first_wrong]} (check the tie rule and what is counted)")


@pytest.mark.task03_3
@pytest.mark.points(3)
def test_training_reproduces_cs336s_vocabulary_with_this_courses_ids(cs336_trained):
    """The 500 tokens are CS336's; ids are bytes 0-255, merge k at 256 + k, the special token last"""
    _, reference_vocab = ref.cs336_reference()
    vocab = cs336_trained.vocab
    assert set(vocab.values()) | {ENDOFTEXT.encode()} == set(reference_vocab.values())
    assert cs336_trained.vocab_size == 500
    assert all(vocab[i] == bytes([i]) for i in range(256))
    # CS336 numbers the special token 0 and the bytes 1-256, so its merge k has id 257 + k.
    assert all(vocab[256 + k] == reference_vocab[257 + k] for k in range(243))
    assert cs336_trained.special_tokens == {ENDOFTEXT: 499}


@pytest.mark.task03_3
@pytest.mark.points(3)
def test_training_on_the_wikipedia_example_follows_the_tie_rule(bpe):
    """aaabdaaabac: (a, a) x4 first; then (aa, a) beats (a, b), both x2, as b"aa" > b"a"; then (aaa, b)"""
    tokenizer = bpe.train("aaabdaaabac", 259)
    assert [tuple(pair) for pair in tokenizer.merges] == [(b"a", b"a"), (b"aa", b"a"), (b"aaa", b"b")]
    assert tokenizer.vocab[258] == b"aaab"


@pytest.mark.task03_3
@pytest.mark.points(3)
def test_ties_go_to_the_greater_pair_of_byte_strings(bpe):
    """Words "ab", "cd", "ba" once each: all pairs tie, so (c, d) wins, then (b, a), then (a, b)"""
    tokenizer = bpe.train("ab cd ba", 259, pattern=r"\S+")
    assert [tuple(pair) for pair in tokenizer.merges] == [(b"c", b"d"), (b"b", b"a"), (b"a", b"b")]


@pytest.mark.task03_3
@pytest.mark.points(3)
def test_special_tokens_are_never_merged_across_and_count_toward_the_vocabulary(bpe):
    """On TinyStories with <|endoftext|>: vocab_size is exact, the special token is last, no token spans it"""
    text = ref.read("tinystories-sample")
    tokenizer = bpe.train(text, 400, [ENDOFTEXT, "<|pad|>"])
    assert tokenizer.vocab_size == 400 and len(tokenizer.merges) == 400 - 256 - 2
    assert tokenizer.special_tokens == {ENDOFTEXT: 398, "<|pad|>": 399}
    assert not any(b"<|" in token or b"|>" in token for token in tokenizer.vocab.values())


@pytest.mark.task03_3
@pytest.mark.points(2)
def test_training_stops_when_the_text_is_used_up(bpe):
    """ "abab" has two merges to learn (ab, then abab); asking for more gives a smaller vocabulary"""
    tokenizer = bpe.train("abab", 300)
    assert [tuple(pair) for pair in tokenizer.merges] == [(b"a", b"b"), (b"ab", b"ab")]
    assert tokenizer.vocab_size == 258


@pytest.mark.task03_3
@pytest.mark.points(2)
def test_training_respects_the_pattern(bpe):
    """With GPT-4's pattern no token holds four digits; with GPT-2's, 1234 repeated becomes one token"""
    text = "1234 " * 50
    assert not any(token.strip().isdigit() and len(token.strip()) > 3
                   for token in bpe.train(text, 270, pattern=bpe.GPT4_SPLIT_PATTERN).vocab.values())
    assert b" 1234" in bpe.train(text, 270).vocab.values()


@pytest.mark.task03_3
@pytest.mark.benchmark
@pytest.mark.points(3)
def test_training_is_no_slower_than_tiktokens_educational_trainer(bpe, benchmark, leaderboard):
    """corpus.en, 143 merges: train takes at most educational_train_ratio_max times tiktoken's own naive teaching
    trainer (tiktoken._educational.bpe_train, which also recounts every pre-token occurrence after each merge)"""
    from tiktoken._educational import bpe_train

    text = ref.read("cs336-bpe", "corpus.en")
    plain = text.replace(ENDOFTEXT, "")  # the educational trainer knows no special tokens
    runs = {"ours": lambda: bpe.train(text, 400, [ENDOFTEXT]),
            "tiktoken": lambda: bpe_train(plain, 399, bpe.GPT2_SPLIT_PATTERN, visualise=None)}
    limit = LIMITS["educational_train_ratio_max"]
    speed, out = race(runs, "ours", "tiktoken", 1 / limit, benchmark, attempts=2)
    expected, _ = ref.cs336_reference()
    assert [tuple(pair) for pair in out["ours"].merges] == expected[:143], (
        "the timed training did not give CS336's first 143 merges")
    record_threshold(benchmark, "educational_train_ratio_max", limit, 1 / speed)
    leaderboard("training time / tiktoken's educational trainer", 1 / speed)
    assert 1 / speed <= limit, (
        f"training on corpus.en takes {1 / speed:.2f}x the time of tiktoken's educational trainer (limit {limit}x): "
        "pre-tokenize once before the merge loop, and make count_pairs and merge_pair one pass each")


@pytest.mark.task03_3
@pytest.mark.points(3)
def test_training_rejects_bad_arguments_clearly(bpe):
    """vocab_size below 256 + specials, a non-str text, a str as special_tokens: ValueError/TypeError"""
    with pytest.raises(ValueError, match="257"):
        bpe.train("hello", 256, [ENDOFTEXT])
    with pytest.raises(ValueError):
        bpe.train("hello", 100)
    with pytest.raises(TypeError):
        bpe.train(b"hello", 300)
    with pytest.raises(TypeError):
        bpe.train("hello", 300, ENDOFTEXT)
    with pytest.raises(TypeError):
        bpe.train("hello", 300.0)


# ---------------------------------------------------------------------------------------------- task03_4


@pytest.mark.task03_4
@pytest.mark.points(4)
def test_bytes_to_unicode_is_gpt2s_map(bpe):
    """bytes_to_unicode equals the map in Hugging Face transformers (space -> Ġ, newline -> Ċ)"""
    assert bpe.bytes_to_unicode() == bytes_to_unicode()


@pytest.mark.task03_4
@pytest.mark.points(5)
def test_gpt2_files_give_tiktokens_ranks(gpt2, tiktoken_gpt2):
    """from_gpt2_files: every token's id equals tiktoken's rank for its bytes; 50,000 merges; <|endoftext|> 50256"""
    ranks = tiktoken_gpt2._mergeable_ranks
    assert len(gpt2.vocab) == len(ranks) == 50256
    assert all(ranks[token] == i for i, token in gpt2.vocab.items())
    assert len(gpt2.merges) == 50000
    assert tuple(gpt2.merges[0]) == (b" ", b"t") and tuple(gpt2.merges[-1]) == (b" g", b"azed")
    assert gpt2.special_tokens == {ENDOFTEXT: 50256} and gpt2.vocab_size == 50257


@pytest.mark.task03_4
@pytest.mark.points(5)
def test_save_and_load_round_trip_in_a_readable_file(bpe, stories_trained, tmp_path):
    """save writes JSON with printable tokens ("Ġ" for a space); load gives back the same tokenizer"""
    path = tmp_path / "tokenizer.json"
    stories_trained.save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    printable = bytes_to_unicode()
    a, b = stories_trained.merges[0]
    assert document["merges"][0] == "".join(printable[x] for x in a) + " " + "".join(printable[x] for x in b)
    assert any(token.startswith("Ġ") for token in document["vocab"]) and "Ġ" not in "".join(document["special_tokens"])
    loaded = bpe.Tokenizer.load(path)
    assert loaded.vocab == stories_trained.vocab
    assert [tuple(p) for p in loaded.merges] == [tuple(p) for p in stories_trained.merges]
    assert loaded.special_tokens == stories_trained.special_tokens and loaded.pattern == stories_trained.pattern


@pytest.mark.task03_4
@pytest.mark.points(3)
def test_save_is_atomic_and_load_rejects_other_files(bpe, stories_trained, tmp_path):
    """save replaces a file without leaving temporary files; loading another JSON raises ValueError"""
    path = tmp_path / "tokenizer.json"
    path.write_text("old")
    stories_trained.save(path)
    assert os.listdir(tmp_path) == ["tokenizer.json"] and path.read_text() != "old"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": "something else"}))
    with pytest.raises(ValueError):
        bpe.Tokenizer.load(other)


# ---------------------------------------------------------------------------------------------- task03_5


@pytest.mark.task03_5
@pytest.mark.points(5)
def test_encode_equals_tiktoken_on_all_of_tinyshakespeare(gpt2, tiktoken_gpt2):
    """GPT-2's files: encode(TinyShakespeare) equals tiktoken's 338,025 ids, and decodes back exactly"""
    text = ref.read("tinyshakespeare")
    ids = gpt2.encode(text)
    expected = tiktoken_gpt2.encode_ordinary(text)
    assert len(ids) == len(expected)
    first_wrong = next((i for i, (a, b) in enumerate(zip(ids, expected, strict=False)) if a != b), None)
    assert first_wrong is None, f"token {first_wrong}: {ids[first_wrong]} where tiktoken has {expected[first_wrong]}"
    assert gpt2.decode(ids) == text


@pytest.mark.task03_5
@pytest.mark.points(4)
def test_encode_equals_tiktoken_on_hellaswag_and_cs336_texts(gpt2, tiktoken_gpt2):
    """All 10,042 HellaSwag contexts, CS336's address.txt and german.txt"""
    contexts = ref.hellaswag_contexts()
    assert [gpt2.encode(c) for c in contexts] == tiktoken_gpt2.encode_ordinary_batch(contexts, num_threads=1)
    for name in ("address.txt", "german.txt"):
        text = ref.read("cs336-bpe", name)
        assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text), name


@pytest.mark.task03_5
@pytest.mark.points(5)
@given(text=ref.texts(with_special=True))
@PROPERTY
def test_encode_equals_tiktoken_on_random_unicode(gpt2, tiktoken_gpt2, text):
    """Emoji, whitespace runs, digits, contractions and <|endoftext|> inside text (allowed_special="all")"""
    ids = gpt2.encode(text, allowed_special="all")
    assert ids == tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.decode(ids) == text


@pytest.mark.task03_5
@pytest.mark.points(3)
@given(text=ref.texts())
@PROPERTY
def test_a_trained_tokenizer_round_trips_any_text(bpe, stories_trained, text):
    """decode(encode(x)) == x for a tokenizer trained on TinyStories, whatever x holds"""
    assert stories_trained.decode(stories_trained.encode(text)) == text


@pytest.mark.task03_5
@pytest.mark.points(4)
def test_special_tokens_follow_tiktokens_rules(gpt2, tiktoken_gpt2):
    """allowed_special: "none_raise" raises, "all" and {"<|endoftext|>"} give 50256, "none" encodes it as text"""
    text = f"Hello{ENDOFTEXT} world"
    with pytest.raises(ValueError, match="endoftext"):
        gpt2.encode(text)
    for ours, theirs in (("all", "all"), ({ENDOFTEXT}, {ENDOFTEXT})):
        assert gpt2.encode(text, allowed_special=ours) == tiktoken_gpt2.encode(text, allowed_special=theirs)
    assert 50256 in gpt2.encode(text, allowed_special="all")
    assert gpt2.encode(text, allowed_special="none") == tiktoken_gpt2.encode(text, disallowed_special=())
    assert gpt2.encode(text, allowed_special="none") == gpt2.encode_ordinary(text)
    with pytest.raises(ValueError, match="nope"):
        gpt2.encode("hi", allowed_special={"<|nope|>"})


@pytest.mark.task03_5
@pytest.mark.points(3)
def test_decode_replaces_invalid_utf8_as_tiktoken_does(gpt2, tiktoken_gpt2):
    """A token sequence that cuts a character in half decodes with U+FFFD, exactly like tiktoken"""
    e_acute = tiktoken_gpt2.encode("é")  # two bytes, c3 a9
    lone = [tiktoken_gpt2.encode_single_token(bytes([0xC3])), tiktoken_gpt2.encode_single_token(b"a")]
    for ids in (lone, e_acute[:1], [*lone, *e_acute]):
        assert gpt2.decode(ids) == tiktoken_gpt2.decode(ids)
    assert gpt2.decode_bytes(lone) == b"\xc3a"


@pytest.mark.task03_5
@pytest.mark.points(2)
def test_encode_and_decode_reject_bad_input_clearly(gpt2):
    """Non-str text: TypeError; an id outside the vocabulary: ValueError naming it; a str id: TypeError"""
    with pytest.raises(TypeError):
        gpt2.encode(b"bytes")
    with pytest.raises(TypeError):
        gpt2.encode(None)
    with pytest.raises(ValueError, match="50257"):
        gpt2.decode([15496, 50257])
    with pytest.raises(TypeError):
        gpt2.decode(["15496"])
    with pytest.raises(TypeError):
        gpt2.encode("x", allowed_special=["<|endoftext|>"])
