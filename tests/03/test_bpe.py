"""Hidden tests for milestone 03 (naive byte-level BPE): the grade. 100 points.

References are independent of the code under test: tiktoken's gpt2 encoding and its own pre-tokenizer regex,
CS336's reference merges and vocabulary (fixture files), Hugging Face's GPT-2 byte map, collections.Counter,
a second trainer written here another way (`reference_merges`), and examples worked out by hand in the docstrings.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
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


def expect_error(kind: type[Exception], call: Callable[[], object], rule: str, match: str = "") -> None:
    """`call()` must raise `kind` (with `match` in its message); else fail saying `rule`."""
    try:
        call()
    except kind as error:
        assert match in str(error), f"{rule}; the message {str(error)!r} does not name {match!r}"
    except NotImplementedError:  # a stub: not the wrong exception, code still to write
        raise
    except Exception as error:  # any other exception is the wrong one
        pytest.fail(f"{rule}; it raised {error!r}")
    else:
        pytest.fail(f"{rule}; it raised nothing")


# ---------------------------------------------------------------------------------------------- task03_1


SPLITS = [  # (text, special tokens, expected pieces, the rule it checks)
    (f"a{ENDOFTEXT}b", [ENDOFTEXT], ["a", ENDOFTEXT, "b"], "the special token is kept as an item"),
    (f"{ENDOFTEXT}{ENDOFTEXT}x", [ENDOFTEXT], [ENDOFTEXT, ENDOFTEXT, "x"],
     "empty pieces (between two special tokens, at the start) are dropped"),
    ("no specials here", [ENDOFTEXT], ["no specials here"], "a text without special tokens is one item"),
    ("plain", [], ["plain"], "with no special tokens the text is one item"),
    ("", [ENDOFTEXT], [], "an empty text has no pieces"),
    ("x<|a|><|a|>y", ["<|a|>", "<|a|><|a|>"], ["x", "<|a|><|a|>", "y"],
     "where special tokens overlap the longest wins (try the longest first)"),
    ("1+1=2", ["+"], ["1", "+", "1=2"], "special tokens are literal text, not regexes (escape them)"),
]


@pytest.mark.task03_1
@pytest.mark.points(4)
def test_split_on_special_keeps_special_tokens_as_items(bpe):
    """split_on_special cuts around special tokens, keeps them, drops empty pieces, prefers the longest"""
    wrong = []
    for text, specials, expected, rule in SPLITS:
        try:
            got = bpe.split_on_special(text, specials)
        except NotImplementedError:  # a stub: code still to write
            raise
        except Exception as error:  # noqa: BLE001 - a crash on one case is reported with that case's rule
            got = error
        if got != expected:
            wrong.append(f"split_on_special({text!r}, {specials!r}) gave {got!r}, expected {expected!r}: {rule}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.task03_1
@pytest.mark.points(3)
def test_pretokenize_matches_tiktokens_gpt2_regex_on_real_text(bpe):
    """GPT-2's pattern splits TinyShakespeare, CS336's texts and HellaSwag exactly as tiktoken's r50k regex does"""
    tiktoken_split = regex.compile(ref.TIKTOKEN_GPT2_PATTERN)
    corpora = {"tinyshakespeare": ref.read("tinyshakespeare"), "address.txt": ref.read("cs336-bpe", "address.txt"),
               "german.txt": ref.read("cs336-bpe", "german.txt"),
               "hellaswag": "\n".join(ref.hellaswag_contexts()[:2000])}
    for name, text in corpora.items():
        got, expected = bpe.pretokenize(text), tiktoken_split.findall(text)
        shorter = min(len(got), len(expected))
        i = next((i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e), shorter)
        assert got == expected, (f"pretokenize on {name}: pre-token {i} is {got[i:i + 1]}, tiktoken's regex has "
                                 f"{expected[i:i + 1]} (every match of the pattern, in order: regex.findall)")
    got = bpe.pretokenize("Hello world's 2024!!")
    assert got == ["Hello", " world", "'s", " 2024", "!!"], f"pretokenize(\"Hello world's 2024!!\") gave {got!r}"


@pytest.mark.task03_1
@pytest.mark.points(2)
@given(text=ref.texts())
@PROPERTY
def test_pretokenize_matches_tiktoken_on_random_unicode(bpe, text):
    """On random Unicode (emoji, whitespace runs, contractions, digits) the split is tiktoken's"""
    got, expected = bpe.pretokenize(text), regex.findall(ref.TIKTOKEN_GPT2_PATTERN, text)
    assert got == expected, f"pretokenize({text!r}) gave {got!r}, tiktoken's regex gives {expected!r}"


@pytest.mark.task03_1
@pytest.mark.points(4)
def test_pretokenize_uses_the_pattern_it_is_given(bpe):
    """With GPT-4's pattern digits come in groups of at most three and contractions ignore case"""
    for text, pattern, expected in (("1234567 I'M", bpe.GPT4_SPLIT_PATTERN, ["123", "456", "7", " I", "'M"]),
                                    ("a-b", r"\w", ["a", "b"])):
        got = bpe.pretokenize(text, pattern)
        assert got == expected, f"pretokenize({text!r}, {pattern!r}) gave {got!r}: it must split with the pattern given"


# ---------------------------------------------------------------------------------------------- task03_2


@pytest.mark.task03_2
@pytest.mark.points(5)
@given(words=st.lists(st.lists(st.integers(0, 5), max_size=12), max_size=8))
@PROPERTY
def test_count_pairs_counts_every_adjacent_pair(bpe, words):
    """count_pairs equals a Counter over zip(ids, ids[1:]), overlapping pairs included"""
    expected = Counter(pair for ids in words for pair in zip(ids, ids[1:], strict=False))
    got = dict(bpe.count_pairs(words))
    assert got == dict(expected), (f"count_pairs({words!r}) gave {got!r}, expected {dict(expected)!r}: every adjacent "
                                   "pair of every word, overlaps included, summed over the words")
    got = dict(bpe.count_pairs([[1, 2, 3], [1, 2], [7, 7, 7]]))
    assert got == {(1, 2): 2, (2, 3): 1, (7, 7): 2}, f"count_pairs([[1, 2, 3], [1, 2], [7, 7, 7]]) gave {got!r}"


@pytest.mark.task03_2
@pytest.mark.points(5)
@given(ids=st.lists(st.integers(0, 3), max_size=20), a=st.integers(0, 3), b=st.integers(0, 3))
@PROPERTY
def test_merge_pair_replaces_left_to_right(bpe, ids, a, b):
    """merge_pair equals a left-to-right regex substitution on the ids written as letters"""
    letters = "".join("abcd"[i] for i in ids)
    expected = [{"abcd"[k]: k for k in range(4)}.get(ch, 9) for ch in letters.replace("abcd"[a] + "abcd"[b], "Z")]
    got = bpe.merge_pair(ids, (a, b), 9)
    assert got == expected, (f"merge_pair({ids!r}, {(a, b)!r}, 9) gave {got!r}, expected {expected!r}: every "
                             "occurrence, scanning left to right, a merged pair's ids used up")
    got = bpe.merge_pair([7, 7, 7, 1], (7, 7), 9)
    assert got == [9, 7, 1], f"merge_pair([7, 7, 7, 1], (7, 7), 9) gave {got!r}: (7, 7) then 7, 1 is left"


# ---------------------------------------------------------------------------------------------- task03_3


def merge_word(word: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    """`word` (a tuple of tokens' bytes) with `pair` merged, left to right."""
    out, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def reference_merges(text: str, n_merges: int, special_tokens: list[str]) -> list[tuple[bytes, bytes]]:
    """A second trainer, written another way: distinct pre-tokens as tuples of bytes, weighted by their count
    (collections.Counter), tiktoken's own regex, special tokens cut with str.split, ties to the greater bytes."""
    pieces = [text]
    for special in special_tokens:
        pieces = [part for piece in pieces for part in piece.split(special)]
    words = Counter(tuple(bytes([b]) for b in token.encode("utf-8"))
                    for piece in pieces for token in regex.findall(ref.TIKTOKEN_GPT2_PATTERN, piece))
    merges: list[tuple[bytes, bytes]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, n in words.items():
            merged[merge_word(word, best)] += n
        words = merged
    return merges


@pytest.mark.task03_3
@pytest.mark.points(8)
def test_training_reproduces_cs336s_reference_merges_byte_for_byte(cs336_trained):
    """corpus.en, vocab 500, <|endoftext|>: all 243 merges equal CS336's reference, in order"""
    expected, _ = ref.cs336_reference()
    got = [tuple(pair) for pair in cs336_trained.merges]
    first_wrong = next((i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e), None)
    assert first_wrong is None, (f"train: merge {first_wrong} is {got[first_wrong]}, CS336's reference has "
                                 f"{expected[first_wrong]} (check the tie rule and what is counted)")
    assert len(got) == len(expected) == 243, (
        f"train learned {len(got)} merges for vocab_size 500 and one special token: it must learn "
        "vocab_size - 256 - len(special_tokens) = 243 (special tokens count toward vocab_size)")


@pytest.mark.task03_3
@pytest.mark.points(3)
def test_training_reproduces_cs336s_vocabulary_with_this_courses_ids(cs336_trained):
    """The 500 tokens are CS336's; ids are bytes 0-255, merge k at 256 + k, the special token last"""
    _, reference_vocab = ref.cs336_reference()
    vocab = cs336_trained.vocab
    assert cs336_trained.vocab_size == 500, (
        f"train(corpus.en, 500, [<|endoftext|>]) has vocab_size {cs336_trained.vocab_size}: special tokens count "
        "toward vocab_size")
    assert set(vocab.values()) | {ENDOFTEXT.encode()} == set(reference_vocab.values()), (
        "train: the tokens differ from CS336's reference vocabulary")
    assert all(vocab[i] == bytes([i]) for i in range(256)), "train: ids 0-255 must be the single bytes"
    # CS336 numbers the special token 0 and the bytes 1-256, so its merge k has id 257 + k.
    assert all(vocab[256 + k] == reference_vocab[257 + k] for k in range(243)), (
        "train: merge k must get id 256 + k, in the order learned")
    assert cs336_trained.special_tokens == {ENDOFTEXT: 499}, (
        f"train: special token ids are {cs336_trained.special_tokens}, expected {{'<|endoftext|>': 499}} (after the "
        "last merge)")


@pytest.mark.task03_3
@pytest.mark.points(2)
def test_training_on_the_wikipedia_example_follows_the_tie_rule(bpe):
    """aaabdaaabac: (a, a) x4 first; then (aa, a) beats (a, b), both x2, as b"aa" > b"a"; then (aaa, b)"""
    tokenizer = bpe.train("aaabdaaabac", 259)
    got = [tuple(pair) for pair in tokenizer.merges]
    assert got == [(b"a", b"a"), (b"aa", b"a"), (b"aaa", b"b")], (
        f"train('aaabdaaabac', 259) learned {got}: ties go to the greater (vocab[a], vocab[b]), compared as bytes")
    assert tokenizer.vocab[258] == b"aaab", f"train: vocab[258] is {tokenizer.vocab[258]!r}, expected b'aaab'"


@pytest.mark.task03_3
@pytest.mark.points(3)
def test_ties_go_to_the_greater_pair_of_byte_strings(bpe):
    """Words "ab", "cd", "ba" once each: all pairs tie, so (c, d) wins, then (b, a), then (a, b). In "aax aax aa bc
    bc", (a, a) x3 first; then (aa, x) and (b, c) tie at 2 and (b, c) wins: b"b" > b"aa", though aa's id is greater"""
    for text, expected in (("ab cd ba", [(b"c", b"d"), (b"b", b"a"), (b"a", b"b")]),
                           ("aax aax aa bc bc", [(b"a", b"a"), (b"b", b"c"), (b"aa", b"x")])):
        got = [tuple(pair) for pair in bpe.train(text, 259, pattern=r"\S+").merges]
        assert got == expected, (f"train({text!r}, 259) learned {got}, expected {expected}: ties go to the greater "
                                 "(vocab[a], vocab[b]), compared as bytes, not as ids")


@pytest.mark.task03_3
@pytest.mark.points(3)
def test_special_tokens_are_never_merged_across_and_count_toward_the_vocabulary(bpe):
    """On TinyStories with <|endoftext|>: vocab_size is exact, the special token is last, no token spans it"""
    text = ref.read("tinystories-sample")
    tokenizer = bpe.train(text, 400, [ENDOFTEXT, "<|pad|>"])
    assert tokenizer.vocab_size == 400 and len(tokenizer.merges) == 400 - 256 - 2, (
        f"train(..., 400, two specials) gave vocab_size {tokenizer.vocab_size} with {len(tokenizer.merges)} merges: "
        "special tokens count toward vocab_size")
    assert tokenizer.special_tokens == {ENDOFTEXT: 398, "<|pad|>": 399}, (
        f"train: special token ids are {tokenizer.special_tokens}, expected 398 and 399 in the order given")
    spanning = [token for token in tokenizer.vocab.values() if b"<|" in token or b"|>" in token]
    assert not spanning, f"train learned {spanning[:3]}: special tokens must be split off and dropped, never trained on"


@pytest.mark.task03_3
@pytest.mark.points(6)
def test_training_with_special_tokens_equals_a_second_trainer(stories_trained):
    """TinyStories (special tokens between the stories), vocab 400 with <|endoftext|> and <|pad|>: the 142 merges
    equal those of `reference_merges`, a trainer written another way"""
    expected = reference_merges(ref.read("tinystories-sample"), 400 - 256 - 2, [ENDOFTEXT, "<|pad|>"])
    got = [tuple(pair) for pair in stories_trained.merges]
    first_wrong = next((i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e), None)
    assert first_wrong is None, (f"train on TinyStories: merge {first_wrong} is {got[first_wrong]}, the reference "
                                 f"trainer's is {expected[first_wrong]} (split the text on the special tokens and "
                                 "drop them; count pairs inside pre-tokens; ties to the greater bytes)")
    assert len(got) == len(expected) == 142, (
        f"train(TinyStories, 400, two special tokens) learned {len(got)} merges, not 400 - 256 - 2 = 142: special "
        "tokens count toward vocab_size")


@pytest.mark.task03_3
@pytest.mark.points(2)
def test_training_stops_when_the_text_is_used_up(bpe):
    """ "abab" has two merges to learn (ab, then abab); asking for more gives a smaller vocabulary"""
    try:
        tokenizer = bpe.train("abab", 300)
    except ValueError as error:
        pytest.fail(f"train('abab', 300) raised {error!r}: stop early when no pair is left (the text is used up)")
    assert [tuple(pair) for pair in tokenizer.merges] == [(b"a", b"b"), (b"ab", b"ab")]
    assert tokenizer.vocab_size == 258, f"train('abab', 300) has vocab_size {tokenizer.vocab_size}, expected 258"


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
@pytest.mark.points(2)
def test_training_rejects_bad_arguments_clearly(bpe):
    """vocab_size below 256 + specials, a non-str text, a str as special_tokens: ValueError/TypeError"""
    bpe.train("hello", 257)  # the checks are given (check_train_args): count them once train itself runs
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
    got, expected = bpe.bytes_to_unicode(), bytes_to_unicode()
    wrong = {b: got.get(b) for b in range(256) if got.get(b) != expected[b]}
    assert not wrong and len(got) == 256, (
        f"bytes_to_unicode maps {dict(list(wrong.items())[:4])}; GPT-2 maps them to "
        f"{ {b: expected[b] for b in list(wrong)[:4]} } (printable bytes keep their character, the others take "
        "chr(256), chr(257), ... in increasing order)")


@pytest.mark.task03_4
@pytest.mark.points(5)
def test_gpt2_files_give_tiktokens_ranks(gpt2, tiktoken_gpt2):
    """from_gpt2_files: every token's id equals tiktoken's rank for its bytes; 50,000 merges; <|endoftext|> 50256"""
    ranks = tiktoken_gpt2._mergeable_ranks
    assert gpt2.special_tokens == {ENDOFTEXT: 50256} and gpt2.vocab_size == 50257, (
        f"from_gpt2_files: special_tokens {gpt2.special_tokens}, vocab_size {gpt2.vocab_size}; <|endoftext|> (50256) "
        "is a special token, not an ordinary one")
    assert len(gpt2.vocab) == len(ranks) == 50256, f"from_gpt2_files: {len(gpt2.vocab)} ordinary tokens, not 50256"
    wrong = [(i, token) for i, token in gpt2.vocab.items() if ranks.get(token) != i]
    assert not wrong, f"from_gpt2_files: token ids {wrong[:3]} differ from tiktoken's ranks"
    assert len(gpt2.merges) == 50000, (
        f"from_gpt2_files read {len(gpt2.merges)} merges from vocab.bpe, not 50000 (skip its #version line)")
    assert tuple(gpt2.merges[0]) == (b" ", b"t") and tuple(gpt2.merges[-1]) == (b" g", b"azed"), (
        f"from_gpt2_files: merges run from {gpt2.merges[0]} to {gpt2.merges[-1]}")


@pytest.mark.task03_4
@pytest.mark.points(5)
def test_save_and_load_round_trip_in_a_readable_file(bpe, stories_trained, tmp_path):
    """save writes JSON with printable tokens ("Ġ" for a space); load gives back the same tokenizer"""
    path = tmp_path / "tokenizer.json"
    stories_trained.save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    printable = bytes_to_unicode()
    a, b = stories_trained.merges[0]
    shown = "".join(printable[x] for x in a) + " " + "".join(printable[x] for x in b)
    assert document["merges"][0] == shown, (
        f"save wrote the merge {a!r} {b!r} as {document['merges'][0]!r}, expected {shown!r} (GPT-2's printable form)")
    assert any(token.startswith("Ġ") for token in document["vocab"]), (
        "save: vocab tokens must be written in GPT-2's printable form (a space is Ġ)")
    assert "Ġ" not in "".join(document["special_tokens"]), "save: special tokens are written as they are"
    loaded = bpe.Tokenizer.load(path)
    assert loaded.vocab == stories_trained.vocab, "Tokenizer.load did not give back the vocab that save wrote"
    assert [tuple(p) for p in loaded.merges] == [tuple(p) for p in stories_trained.merges], (
        "Tokenizer.load did not give back the merges that save wrote, in order")
    assert loaded.special_tokens == stories_trained.special_tokens and loaded.pattern == stories_trained.pattern, (
        "Tokenizer.load did not give back the special tokens and the pattern")


@pytest.mark.task03_4
@pytest.mark.points(3)
def test_save_is_atomic_and_load_rejects_other_files(bpe, stories_trained, tmp_path):
    """save replaces a file by renaming a new one over it, leaving no temporary file; loading another JSON raises
    ValueError"""
    path = tmp_path / "tokenizer.json"
    path.write_text("old")
    old_inode = path.stat().st_ino
    stories_trained.save(path)
    assert os.listdir(tmp_path) == ["tokenizer.json"] and path.read_text() != "old", (
        f"save left {sorted(os.listdir(tmp_path))} where only tokenizer.json, replaced, should be")
    # An atomic write fills a temporary file beside the target, then renames it over the target: a new file
    # (a new inode). Writing into the old file in place leaves half a tokenizer if the process dies midway.
    assert path.stat().st_ino != old_inode, (
        "save wrote into the existing file in place: it is not atomic (write a temporary file and rename it over the "
        "target, e.g. llmfs.fsutil.atomic_write_text)")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": "something else"}))
    expect_error(ValueError, lambda: bpe.Tokenizer.load(other), "Tokenizer.load of a JSON file that save did not "
                 'write must raise ValueError: check its "format"')


# ---------------------------------------------------------------------------------------------- task03_5


def first_difference(got: list[int], expected: list[int], what: str) -> str:
    """Where two id lists part, in words, or '' when they are equal."""
    if got == expected:
        return ""
    i = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
    return (f"encode({what}): token {i} is {got[i:i + 1]} where tiktoken has {expected[i:i + 1]} ({len(got)} ids, "
            f"tiktoken {len(expected)}): pre-tokenize, then merge each pre-token's pair of lowest rank first")


@pytest.mark.task03_5
@pytest.mark.points(5)
def test_encode_equals_tiktoken_on_all_of_tinyshakespeare(gpt2, tiktoken_gpt2):
    """GPT-2's files: encode(TinyShakespeare) equals tiktoken's 338,025 ids, and decodes back exactly"""
    text = ref.read("tinyshakespeare")
    ids = gpt2.encode(text)
    wrong = first_difference(ids, tiktoken_gpt2.encode_ordinary(text), "TinyShakespeare")
    assert not wrong, wrong
    assert gpt2.decode(ids) == text, "decode(encode(TinyShakespeare)) is not TinyShakespeare"


@pytest.mark.task03_5
@pytest.mark.points(4)
def test_encode_equals_tiktoken_on_hellaswag_and_cs336_texts(gpt2, tiktoken_gpt2):
    """All 10,042 HellaSwag contexts, CS336's address.txt and german.txt"""
    contexts = ref.hellaswag_contexts()
    expected = tiktoken_gpt2.encode_ordinary_batch(contexts, num_threads=1)
    wrong = next((first_difference(gpt2.encode(c), e, f"HellaSwag context {i}")
                  for i, (c, e) in enumerate(zip(contexts, expected, strict=True)) if gpt2.encode(c) != e), "")
    assert not wrong, wrong
    for name in ("address.txt", "german.txt"):
        text = ref.read("cs336-bpe", name)
        wrong = first_difference(gpt2.encode(text), tiktoken_gpt2.encode_ordinary(text), name)
        assert not wrong, wrong


@pytest.mark.task03_5
@pytest.mark.points(5)
@given(text=ref.texts(with_special=True))
@PROPERTY
def test_encode_equals_tiktoken_on_random_unicode(gpt2, tiktoken_gpt2, text):
    """Emoji, whitespace runs, digits, contractions and <|endoftext|> inside text (allowed_special="all")"""
    ids = gpt2.encode(text, allowed_special="all")
    wrong = first_difference(ids, tiktoken_gpt2.encode(text, allowed_special="all"), f"{text!r}, allowed_special='all'")
    assert not wrong, wrong
    assert gpt2.decode(ids) == text, f"decode(encode({text!r})) is {gpt2.decode(ids)!r}"


@pytest.mark.task03_5
@pytest.mark.points(3)
@given(text=ref.texts())
@PROPERTY
def test_a_trained_tokenizer_round_trips_any_text(bpe, stories_trained, text):
    """decode(encode(x)) == x for a tokenizer trained on TinyStories, whatever x holds"""
    back = stories_trained.decode(stories_trained.encode(text))
    assert back == text, f"a trained tokenizer: decode(encode({text!r})) is {back!r}"


@pytest.mark.task03_5
@pytest.mark.points(4)
def test_special_tokens_follow_tiktokens_rules(gpt2, tiktoken_gpt2):
    """allowed_special: "none_raise" raises, "all" and {"<|endoftext|>"} give 50256, "none" encodes it as text"""
    text = f"Hello{ENDOFTEXT} world"
    expect_error(ValueError, lambda: gpt2.encode(text), 'encode(text with <|endoftext|>) must raise ValueError naming '
                 'it by default ("none_raise"), as tiktoken does: allowed_specials checks the text', match="endoftext")
    for allowed in ("all", {ENDOFTEXT}):
        ids, expected = gpt2.encode(text, allowed_special=allowed), tiktoken_gpt2.encode(text, allowed_special=allowed)
        assert ids == expected, (f"encode({text!r}, allowed_special={allowed!r}) gave {ids}, tiktoken {expected}: an "
                                 "allowed special token is one id, the text around it is encoded alone")
        assert gpt2.decode(ids) == text, f"decode({ids}) is {gpt2.decode(ids)!r}: decode_bytes must decode special ids"
    assert 50256 in gpt2.encode(text, allowed_special="all")
    ids = gpt2.encode(text, allowed_special="none")
    assert ids == tiktoken_gpt2.encode(text, disallowed_special=()) == gpt2.encode_ordinary(text), (
        f'encode({text!r}, allowed_special="none") gave {ids}: "none" encodes special tokens as ordinary text')
    expect_error(ValueError, lambda: gpt2.encode("hi", allowed_special={"<|nope|>"}),
                 'encode(allowed_special={"<|nope|>"}) must raise ValueError: allowed_specials checks that the set '
                 "names special tokens of this tokenizer", match="nope")


@pytest.mark.task03_5
@pytest.mark.points(3)
def test_decode_replaces_invalid_utf8_as_tiktoken_does(gpt2, tiktoken_gpt2):
    """A token sequence that cuts a character in half decodes with U+FFFD, exactly like tiktoken"""
    e_acute = tiktoken_gpt2.encode("é")  # two bytes, c3 a9
    lone = [tiktoken_gpt2.encode_single_token(bytes([0xC3])), tiktoken_gpt2.encode_single_token(b"a")]
    for ids in (lone, e_acute[:1], [*lone, *e_acute]):
        try:
            got = gpt2.decode(ids)
        except UnicodeDecodeError as error:
            pytest.fail(f"decode({ids}) raised {error!r}: invalid UTF-8 becomes U+FFFD (errors='replace'), as tiktoken")
        assert got == tiktoken_gpt2.decode(ids), (
            f"decode({ids}) is {got!r}, tiktoken {tiktoken_gpt2.decode(ids)!r}: invalid UTF-8 becomes U+FFFD")
    assert gpt2.decode_bytes(lone) == b"\xc3a", f"decode_bytes({lone}) is {gpt2.decode_bytes(lone)!r}"


@pytest.mark.task03_5
@pytest.mark.points(2)
def test_encode_and_decode_reject_bad_input_clearly(gpt2):
    """Non-str text: TypeError; an id outside the vocabulary: ValueError naming it; a str id: TypeError"""
    for bad in (b"bytes", None):
        expect_error(TypeError, lambda bad=bad: gpt2.encode(bad), f"encode({bad!r}) must raise TypeError")
    expect_error(ValueError, lambda: gpt2.decode([15496, 50257]),
                 "decode([15496, 50257]) must raise ValueError naming 50257: decode_bytes checks every id",
                 match="50257")
    expect_error(TypeError, lambda: gpt2.decode(["15496"]),
                 'decode(["15496"]) must raise TypeError: decode_bytes takes integer ids')
    expect_error(TypeError, lambda: gpt2.encode("x", allowed_special=["<|endoftext|>"]),
                 "encode(allowed_special=[...]) must raise TypeError: allowed_specials takes a str or a set")
