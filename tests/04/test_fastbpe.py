"""Hidden tests for milestone 04 (optimized byte-level BPE): the grade. 100 points.

The references: the *reference* milestone 03 (solutions/03, whatever the learner's own 03 does), tiktoken's
gpt2 encoding and r50k regex, CS336's reference merges, Hugging Face `tokenizers` and GPT2TokenizerFast for
speed. Benchmarks time two implementations in the same run, interleaved, and assert a ratio.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import regex
from hypothesis import given

from llmfs.course import load_course
from llmfs.data.corpora import build_mixed_corpus
from llmfs.data.gpt2_tokenizers import gpt2_hf_tokenizer, gpt2_tiktoken
from llmfs.loader import implementation_root, load_module
from llmfs.testing import implementation_fixture, raise_if_stub, record_threshold, thresholds

fastbpe = implementation_fixture("04", "fastbpe")
COURSE = load_course()
naive = load_module(COURSE.solutions, "03", "bpe", COURSE.milestone("03").api["bpe"])  # the reference 03
ref = load_module(Path(__file__).resolve().parents[1], "03", "bpe_references")
hf_results = load_module(COURSE.solutions, "04", "results", COURSE.milestone("04").api["results"])
ENDOFTEXT = ref.ENDOFTEXT
LIMITS = thresholds("04")
PROPERTY = ref.property_settings(200)  # the same examples in every grade, no example database


@pytest.fixture(scope="module")
def gpt2(fastbpe):
    return fastbpe.FastTokenizer.from_gpt2_files(*ref.gpt2_files())


@pytest.fixture(scope="module")
def corpus_en() -> str:
    return ref.read("cs336-bpe", "corpus.en")


def pairs(tokenizer) -> list[tuple[bytes, bytes]]:
    return [tuple(pair) for pair in tokenizer.merges]


def peak_rss_mb(proc: subprocess.Popen, baseline_marker: str | None = None) -> tuple[float, str]:
    """Wait for `proc`, sampling the RSS of it and its children every 20 ms; the peak in MB above the RSS at the
    moment it prints `baseline_marker` (or above zero), and its output."""
    process = psutil.Process(proc.pid)
    state = {"peak": 0, "baseline": 0}

    def sample() -> None:
        while proc.poll() is None:
            try:
                rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
            except psutil.Error:
                continue
            state["peak"] = max(state["peak"], rss)
            time.sleep(0.02)

    lines = []
    watcher = None
    if baseline_marker is None:
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
    for line in proc.stdout:
        lines.append(line)
        if baseline_marker and line.strip() == baseline_marker:
            state["baseline"] = process.memory_info().rss
            watcher = threading.Thread(target=sample, daemon=True)
            watcher.start()
            proc.stdin.write("go\n")
            proc.stdin.flush()
    proc.wait()
    if watcher:
        watcher.join()
    return (state["peak"] - state["baseline"]) / 1e6, "".join(lines)


# ---------------------------------------------------------------------------------------------- task04_1


@pytest.mark.task04_1
@pytest.mark.points(4)
def test_count_pretokens_counts_tiktokens_pretokens(fastbpe):
    """count_pretokens equals a Counter of tiktoken's r50k regex matches, special tokens removed"""
    text = ref.read("tinystories-sample")
    expected = Counter()
    for part in text.split(ENDOFTEXT):
        expected.update(regex.findall(ref.TIKTOKEN_GPT2_PATTERN, part))
    assert fastbpe.count_pretokens(text, [ENDOFTEXT]) == expected
    assert fastbpe.count_pretokens(f"the cat{ENDOFTEXT}the", [ENDOFTEXT]) == Counter({"the": 2, " cat": 1})


@pytest.mark.task04_1
@pytest.mark.points(4)
@pytest.mark.parametrize("specials", [[], [ENDOFTEXT]])
def test_chunk_boundaries_cut_where_no_pretoken_crosses(fastbpe, tmp_path, specials):
    """Cuts of a file with whitespace runs, newlines and specials: 0 first, size last, increasing, and the
    pre-tokens of the chunks, one after another, are exactly the pre-tokens of the whole file"""
    text = (ref.read("tinystories-sample") + "  \n\n\t x  y\u00a0 z ,  " * 20 + ref.read("cs336-bpe", "german.txt")) * 3
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    with open(path, "rb") as f:
        bounds = fastbpe.find_chunk_boundaries(f, 40, specials, window=64)
    size = path.stat().st_size
    assert bounds[0] == 0 and bounds[-1] == size and bounds == sorted(set(bounds)) and len(bounds) > 10
    data = path.read_bytes()
    chunks = [data[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:], strict=False)]
    split = regex.compile(ref.TIKTOKEN_GPT2_PATTERN)
    whole = [p for part in text.split(ENDOFTEXT) for p in split.findall(part)]
    assert [p for chunk in chunks for part in chunk.split(ENDOFTEXT) for p in split.findall(part)] == whole


@pytest.mark.task04_1
@pytest.mark.points(6)
def test_counting_a_file_in_parallel_equals_counting_it_whole(fastbpe, tmp_path):
    """count_pretokens_in_file with 2 workers and 64 KB chunks equals count_pretokens of the whole text"""
    text = ref.read("tinyshakespeare")[:400_000] + ENDOFTEXT + ref.read("tinystories-sample")
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    expected = fastbpe.count_pretokens(text, [ENDOFTEXT])
    assert fastbpe.count_pretokens_in_file(path, [ENDOFTEXT], workers=2, chunk_bytes=1 << 16) == expected
    assert fastbpe.count_pretokens_in_file(path, [ENDOFTEXT], workers=1, chunk_bytes=1 << 16) == expected


@pytest.mark.task04_1
@pytest.mark.points(2)
def test_a_file_that_is_not_utf8_is_a_clear_error(fastbpe, tmp_path):
    """Invalid UTF-8 raises ValueError (not a crash in a worker)"""
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 ".encode("latin-1") * 100)
    with pytest.raises(ValueError):
        fastbpe.count_pretokens_in_file(path, workers=1)


# ---------------------------------------------------------------------------------------------- task04_2


@pytest.mark.task04_2
@pytest.mark.points(8)
def test_training_reproduces_cs336s_reference_merges(fastbpe, corpus_en):
    """corpus.en, vocab 500, <|endoftext|>: CS336's 243 reference merges in order, and its vocabulary"""
    tokenizer = fastbpe.train(corpus_en, 500, [ENDOFTEXT])
    expected, reference_vocab = ref.cs336_reference()
    assert pairs(tokenizer) == expected
    assert set(tokenizer.vocab.values()) | {ENDOFTEXT.encode()} == set(reference_vocab.values())
    assert tokenizer.special_tokens == {ENDOFTEXT: 499}


CASES = [  # (corpus, slice, vocab size, special tokens, pattern)
    ("tinystories-sample", None, 420, [ENDOFTEXT], "GPT2_SPLIT_PATTERN"),
    ("tinyshakespeare", 30_000, 600, [], "GPT2_SPLIT_PATTERN"),
    ("tinyshakespeare", 20_000, 500, [], "GPT4_SPLIT_PATTERN"),
    ("tinystories-valid-head", 30_000, 512, [ENDOFTEXT, "<|pad|>"], "GPT2_SPLIT_PATTERN"),
]


@pytest.mark.task04_2
@pytest.mark.points(4)
@pytest.mark.parametrize("corpus,size,vocab_size,specials,pattern", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_training_is_identical_to_milestone_03(fastbpe, corpus, size, vocab_size, specials, pattern):
    """Merges, vocabulary and special ids equal the reference 03's, on several corpora, patterns and sizes"""
    text = ref.read(corpus)[:size]
    if corpus == "tinystories-valid-head":
        text = text.replace("\n\n", f"\n{ENDOFTEXT}")
    got = fastbpe.train(text, vocab_size, specials, getattr(naive, pattern))  # first: a stub fails at once
    expected = naive.train(text, vocab_size, specials, getattr(naive, pattern))
    first_wrong = next((i for i, (g, e) in enumerate(zip(pairs(got), pairs(expected), strict=False)) if g != e), None)
    assert first_wrong is None, f"merge {first_wrong}: {pairs(got)[first_wrong]}, 03 has {pairs(expected)[first_wrong]}"
    assert len(got.merges) == len(expected.merges)
    assert got.vocab == expected.vocab and got.special_tokens == expected.special_tokens


@pytest.mark.task04_2
@pytest.mark.points(4)
@given(text=ref.texts(with_special=True))
@ref.property_settings(100)
def test_training_is_identical_to_milestone_03_on_random_text(fastbpe, text):
    """Random Unicode, whitespace runs and special tokens: the same merges as the reference 03"""
    got = pairs(fastbpe.train(text, 300, [ENDOFTEXT]))
    assert got == pairs(naive.train(text, 300, [ENDOFTEXT]))


@pytest.mark.task04_2
@pytest.mark.points(4)
def test_training_from_a_file_equals_training_on_its_text(fastbpe, tmp_path):
    """train_from_file (2 workers) gives the tokenizer that train gives on the file's text"""
    text = ref.read("tinystories-valid-head")[:300_000]
    path = tmp_path / "stories.txt"
    path.write_text(text, encoding="utf-8")
    from_file = fastbpe.train_from_file(path, 1000, [ENDOFTEXT], workers=2)
    in_memory = fastbpe.train(text, 1000, [ENDOFTEXT])
    assert pairs(from_file) == pairs(in_memory) and from_file.vocab == in_memory.vocab
    with pytest.raises(FileNotFoundError):
        fastbpe.train_from_file(tmp_path / "missing.txt", 1000)


@pytest.mark.task04_2
@pytest.mark.points(2)
def test_training_rejects_bad_arguments_like_milestone_03(fastbpe):
    """vocab_size too small, a non-str text, a str as special_tokens: ValueError/TypeError"""
    with pytest.raises(ValueError):
        fastbpe.train("hello", 256, [ENDOFTEXT])
    with pytest.raises(TypeError):
        fastbpe.train(b"hello", 300)
    with pytest.raises(TypeError):
        fastbpe.train("hello", 300, ENDOFTEXT)


def median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.task04_2
@pytest.mark.benchmark
@pytest.mark.points(4)
def test_training_is_at_least_50x_faster_than_milestone_03(fastbpe, corpus_en, benchmark, leaderboard):
    """corpus.en, vocab 500: the reference 03 (once) against 04 (median of 5), in the same run"""
    fast_s = median_time(lambda: fastbpe.train(corpus_en, 500, [ENDOFTEXT]), 5)  # first: a stub fails at once
    naive_s = median_time(lambda: naive.train(corpus_en, 500, [ENDOFTEXT]), 1)
    benchmark.pedantic(fastbpe.train, args=(corpus_en, 500, [ENDOFTEXT]), rounds=1)
    speedup = naive_s / fast_s
    benchmark.extra_info.update({"naive_s": naive_s, "fast_s": fast_s, "speedup": speedup})
    record_threshold(benchmark, "train_speedup_min", LIMITS["train_speedup_min"], speedup)
    leaderboard("training speed-up over 03 (corpus.en, 500)", speedup, order="desc")
    assert speedup >= LIMITS["train_speedup_min"], (
        f"training took {fast_s:.3f} s against 03's {naive_s:.2f} s: {speedup:.0f}x, not "
        f"{LIMITS['train_speedup_min']:.0f}x; are pair counts updated incrementally, and is the best pair "
        "popped from a heap?")


@pytest.mark.task04_2
@pytest.mark.benchmark
@pytest.mark.points(2)
@pytest.mark.parametrize("corpus,vocab_size", [("cs336-bpe", 500), ("tinyshakespeare", 1024)])
def test_training_is_within_3x_of_hugging_face_tokenizers(fastbpe, tmp_path, benchmark, leaderboard, corpus,
                                                          vocab_size):
    """The same file and vocabulary size: train_from_file against tokenizers' BpeTrainer, interleaved, medians"""
    text = ref.read(corpus, "corpus.en" if corpus == "cs336-bpe" else None)
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    ours, theirs = [], []

    def both() -> None:
        start = time.perf_counter()
        fastbpe.train_from_file(path, vocab_size, [ENDOFTEXT])
        ours.append(time.perf_counter() - start)
        theirs.append(hf_results.hf_bpe_trainer(path, vocab_size)[0])

    benchmark.pedantic(both, rounds=3, warmup_rounds=1)
    ratio = statistics.median(ours) / statistics.median(theirs)
    benchmark.extra_info.update({"ours_s": statistics.median(ours), "tokenizers_s": statistics.median(theirs),
                                 "ratio": ratio})
    record_threshold(benchmark, "hf_train_ratio_max", LIMITS["hf_train_ratio_max"], ratio)
    leaderboard(f"training time / tokenizers' ({corpus}, {vocab_size})", ratio)
    assert ratio <= LIMITS["hf_train_ratio_max"], (
        f"train_from_file takes {statistics.median(ours):.2f} s, {ratio:.1f}x tokenizers' "
        f"{statistics.median(theirs):.2f} s (limit {LIMITS['hf_train_ratio_max']}x)")


@pytest.mark.task04_2
@pytest.mark.benchmark
@pytest.mark.slow
@pytest.mark.points(3)
def test_a_16k_vocabulary_on_100_mb_stays_under_2_gb(fastbpe, tmp_path, benchmark, leaderboard):
    """16,384 tokens on a 100 MB file (built from the local datasets): peak RSS of the whole process tree"""
    small = tmp_path / "small.txt"
    small.write_text(ref.read("tinystories-sample"), encoding="utf-8")
    fastbpe.train_from_file(small, 300, [ENDOFTEXT])  # a stub fails here, before 100 MB are written
    path = build_mixed_corpus(tmp_path / "mixed.txt", 100_000_000)
    script = textwrap.dedent(f"""
        import sys, time
        from llmfs.loader import load_module
        from llmfs.course import load_course
        fastbpe = load_module({str(implementation_root())!r}, "04", "fastbpe",
                              load_course().milestone("04").api["fastbpe"])
        start = time.perf_counter()
        tokenizer = fastbpe.train_from_file({str(path)!r}, 16384, ["<|endoftext|>"])
        print("seconds", time.perf_counter() - start, "merges", len(tokenizer.merges), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.PIPE, text=True)
    try:
        peak_mb, output = peak_rss_mb(proc)
    finally:
        proc.kill()
    raise_if_stub(output)
    assert proc.returncode == 0, output[-3000:]
    seconds, merges = float(output.split()[-3]), int(output.split()[-1])
    benchmark.extra_info.update({"seconds": seconds, "peak_rss_mb": peak_mb, "merges": merges})
    benchmark.pedantic(lambda: None, rounds=1)
    leaderboard("16K vocabulary on 100 MB: seconds", seconds)
    assert merges == 16384 - 257
    limit = LIMITS["big_train_rss_mb_max"]
    assert peak_mb < limit, f"peak RSS {peak_mb:.0f} MB (limit {limit} MB): is a whole file or chunk list held at once?"


# ---------------------------------------------------------------------------------------------- task04_3


@pytest.mark.task04_3
@pytest.mark.points(6)
def test_encode_equals_tiktoken_on_real_text(gpt2):
    """GPT-2's files: TinyShakespeare, every HellaSwag context, CS336's texts, equal tiktoken's ids"""
    enc = gpt2_tiktoken()
    text = ref.read("tinyshakespeare")
    assert gpt2.encode(text) == enc.encode_ordinary(text)
    contexts = ref.hellaswag_contexts()
    assert [gpt2.encode(c) for c in contexts] == enc.encode_ordinary_batch(contexts, num_threads=1)
    for name in ("address.txt", "german.txt"):
        assert gpt2.encode(ref.read("cs336-bpe", name)) == enc.encode_ordinary(ref.read("cs336-bpe", name))


@pytest.mark.task04_3
@pytest.mark.points(4)
@given(text=ref.texts(with_special=True))
@PROPERTY
def test_encode_equals_tiktoken_on_random_unicode(gpt2, text):
    """Random Unicode and special tokens (allowed_special="all"), and a cold cache gives the same as a warm one"""
    ids = gpt2.encode(text, allowed_special="all")
    assert ids == gpt2_tiktoken().encode(text, allowed_special="all")
    assert gpt2.decode(ids) == text


@pytest.mark.task04_3
@pytest.mark.points(1)
def test_the_cache_stays_bounded(fastbpe):
    """With cache_size=100, encoding 5,000 distinct words never holds more than 100 cached pre-tokens"""
    tokenizer = fastbpe.FastTokenizer.from_gpt2_files(*ref.gpt2_files())
    tokenizer.cache_size = 100
    words = " ".join(f"w{i}x" for i in range(5000))
    assert tokenizer.encode(words) == gpt2_tiktoken().encode_ordinary(words)
    assert len(tokenizer.cache) <= 100


@pytest.mark.task04_3
@pytest.mark.points(3)
@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_encode_iterable_equals_encode_on_any_chunking(gpt2, piece):
    """Chunks of 1, 7 or 4096 characters (cutting whitespace runs, words and <|endoftext|> in half) give the
    ids of the whole text"""
    text = (ref.read("tinystories-sample") + "a\n\n\n b  \t\n" * 50 + "x" * 3000 + "  ") * 3
    chunks = [text[i : i + piece] for i in range(0, len(text), piece)]
    expected = gpt2_tiktoken().encode(text, allowed_special="all")
    assert list(gpt2.encode_iterable(iter(chunks), allowed_special="all", buffer_chars=256)) == expected
    assert list(gpt2.encode_iterable(iter(chunks), allowed_special="all")) == expected
    with pytest.raises(ValueError):
        list(gpt2.encode_iterable(iter(chunks)))


@pytest.mark.task04_3
@pytest.mark.points(2)
def test_encode_iterable_is_lazy(gpt2):
    """The first ids come out before the input is used up (an infinite input works)"""

    def endless():
        while True:
            yield "All the world's a stage, and all the men and women merely players.\n"

    ids = gpt2.encode_iterable(endless())
    first = [next(ids) for _ in range(20)]
    assert first == gpt2_tiktoken().encode_ordinary(
        "All the world's a stage, and all the men and women merely players.\n" * 2)[:20]


@pytest.mark.task04_3
@pytest.mark.points(4)
def test_encode_iterable_streams_tinyshakespeare_in_bounded_memory(fastbpe, tmp_path):
    """Eight passes over TinyShakespeare's lines (8.9 MB) through encode_iterable: under 50 MB above baseline"""
    script = textwrap.dedent(f"""
        import sys
        from llmfs.loader import load_module
        from llmfs.course import load_course
        fastbpe = load_module({str(implementation_root())!r}, "04", "fastbpe",
                              load_course().milestone("04").api["fastbpe"])
        tokenizer = fastbpe.FastTokenizer.from_gpt2_files({str(ref.gpt2_files()[0])!r}, {str(ref.gpt2_files()[1])!r})
        path = {str(ref.fetch_file("tinyshakespeare"))!r}
        def lines():
            for _ in range(8):
                with open(path, encoding="utf-8") as f:
                    yield from f
        print("baseline", flush=True)
        sys.stdin.readline()
        n = sum(1 for _ in tokenizer.encode_iterable(lines()))
        print("tokens", n, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.PIPE, text=True)
    try:
        above_mb, output = peak_rss_mb(proc, baseline_marker="baseline")
    finally:
        proc.kill()
    raise_if_stub(output)
    assert proc.returncode == 0, output[-3000:]
    assert int(output.split()[-1]) == 8 * 338025
    assert above_mb < LIMITS["encode_iterable_rss_mb_max"], f"{above_mb:.0f} MB above the baseline"


@pytest.mark.task04_3
@pytest.mark.points(2)
def test_encode_iterable_never_cuts_inside_a_special_token(fastbpe, gpt2):
    """A special token with spaces in it ("<|my token|>"), streamed in 3-character chunks, stays one token"""
    special = "<|my token|>"
    tokenizer = fastbpe.FastTokenizer(gpt2.vocab, gpt2.merges, {special: 50257})
    text = f"one two{special} three {special}four  five {special}" * 40
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    ids = list(tokenizer.encode_iterable(chunks, allowed_special="all", buffer_chars=16))
    assert ids == tokenizer.encode(text, allowed_special="all") and ids.count(50257) == 120


@pytest.mark.task04_3
@pytest.mark.points(2)
def test_encode_batch_in_parallel_equals_encoding_one_by_one(gpt2):
    """encode_batch with 2 workers over 3 MB of HellaSwag contexts equals tiktoken's ids, in order"""
    contexts = ref.hellaswag_contexts()
    texts = contexts + contexts[:3000]
    assert gpt2.encode_batch(texts, workers=2) == gpt2_tiktoken().encode_ordinary_batch(texts, num_threads=1)
    with pytest.raises(TypeError):
        gpt2.encode_batch("one string")


@pytest.mark.task04_3
@pytest.mark.benchmark
@pytest.mark.points(5)
def test_encoding_speed_against_tiktoken_and_gpt2_tokenizer_fast(gpt2, benchmark, leaderboard):
    """TinyShakespeare, cold cache, one thread each, interleaved, best of 7, garbage collector paused (as timeit
    does): at least 0.25x tiktoken's throughput and faster than transformers' GPT2TokenizerFast"""
    text = ref.read("tinyshakespeare")
    enc, hf = gpt2_tiktoken(), gpt2_hf_tokenizer()
    times: dict[str, list[float]] = {"ours": [], "tiktoken": [], "hf": []}

    def ours() -> None:
        gpt2.cache.clear()
        gpt2.encode_ordinary(text)

    def all_three() -> None:
        for name, fn in (("ours", ours), ("tiktoken", lambda: enc.encode_ordinary(text)),
                         ("hf", lambda: hf.encode(text))):
            gc.collect()
            gc.disable()  # as timeit does: a collection of the grader's own objects is not the encoder's time
            try:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
            finally:
                gc.enable()

    benchmark.pedantic(all_three, rounds=7, warmup_rounds=1)
    mb = len(text.encode("utf-8")) / 1e6
    speed = {name: mb / min(t) for name, t in times.items()}  # each at its best: noise only ever adds time
    # The ratio is taken within each round, where the two ran a moment apart on the same machine state, and the
    # median of the 7 is kept: a fast moment that favours one encoder's best time does not decide the verdict.
    ratio = statistics.median(t / o for o, t in zip(times["ours"], times["tiktoken"], strict=True))
    benchmark.extra_info.update({**{f"{name}_mb_s": s for name, s in speed.items()}, "ratio": ratio})
    record_threshold(benchmark, "tiktoken_encode_ratio_min", LIMITS["tiktoken_encode_ratio_min"], ratio)
    leaderboard("encoding throughput / tiktoken's", ratio, order="desc")
    assert ratio >= LIMITS["tiktoken_encode_ratio_min"], (
        f"{speed['ours']:.2f} MB/s against tiktoken's {speed['tiktoken']:.2f} MB/s ({ratio:.3f}x, the median of 7 "
        f"interleaved rounds): is every repeated pre-token served from the cache?")
    assert speed["ours"] > speed["hf"], f"{speed['ours']:.2f} MB/s, GPT2TokenizerFast {speed['hf']:.2f} MB/s"
