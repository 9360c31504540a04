"""Hidden tests for milestone 01 (character bigram): the grade. 100 points.

Reference values never come from the code under test: they are counted with torch.bincount, computed
with torch.nn.functional.cross_entropy, derived from a formula (ln V for uniform logits), or drawn with
the exact torch.randint call the docstrings specify.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from llmfs.data import fetch_file
from llmfs.testing import implementation_fixture, race, record_threshold, thresholds

bigram = implementation_fixture("01", "bigram")
LIMITS = thresholds("01")
SEED = 1337


@contextlib.contextmanager
def must_raise(error: type[Exception], what: str, when: str, match: str = "") -> Iterator[None]:
    """pytest.raises whose failure names the function (`what`) and the case (`when`): "get_batch must raise
    ValueError when data has only block_size ids", not "DID NOT RAISE"."""
    try:
        yield
    except error as raised:
        if match and not re.search(match, str(raised)):
            pytest.fail(f"{what}: the {error.__name__} raised {when} must mention {match!r}, got: {raised}",
                        pytrace=False)
        return
    except NotImplementedError:  # a stub: code still to write, reported as such
        raise
    except Exception as raised:  # noqa: BLE001 - the wrong exception is the learner's mistake to report
        pytest.fail(f"{what} must raise {error.__name__} {when}, not {type(raised).__name__}: {raised}",
                    pytrace=False)
    pytest.fail(f"{what} must raise {error.__name__} {when}", pytrace=False)


@pytest.fixture(scope="module")
def text() -> str:
    return fetch_file("tinyshakespeare").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def corpus(bigram, text):
    """The whole corpus encoded, split 90/10, and the vocabulary size; checked independently below."""
    tokenizer = bigram.CharTokenizer(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n = int(0.9 * len(data))
    return tokenizer, data[:n], data[n:]


@pytest.fixture(scope="module")
def trained(bigram, corpus):
    """The neural bigram trained with the milestone's default settings (3000 AdamW steps, lr 1e-2)."""
    tokenizer, train_data, _ = corpus
    torch.manual_seed(SEED)
    model = bigram.BigramLanguageModel(tokenizer.vocab_size)
    losses = bigram.train(model, train_data, max_iters=3000, batch_size=32, block_size=8, learning_rate=1e-2,
                          generator=torch.Generator().manual_seed(SEED), progress=False)
    return model, losses


def reference_counts(data: torch.Tensor, vocab_size: int) -> torch.Tensor:
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    counts.index_put_((data[:-1], data[1:]), torch.ones(len(data) - 1, dtype=torch.long), accumulate=True)
    return counts


def full_nll(model, data: torch.Tensor) -> float:
    """The model's exact mean NLL over every bigram of `data` (no sampling)."""
    with torch.no_grad():
        logits, _ = model(data[:-1].view(1, -1))
    return F.cross_entropy(logits[0], data[1:]).item()


# ---------------------------------------------------------------------------------------------- task01_1


@pytest.mark.task01_1
@pytest.mark.points(4)
def test_vocabulary_is_the_sorted_distinct_characters(bigram, text):
    """The vocabulary is sorted(set(text)): 65 characters for TinyShakespeare"""
    tokenizer = bigram.CharTokenizer(text)
    assert list(tokenizer.chars) == sorted(set(text)), (
        f"CharTokenizer: chars must be sorted(set(text)), the distinct characters in sorted order; yours start "
        f"{''.join(tokenizer.chars[:12])!r}, sorted ones start {''.join(sorted(set(text))[:12])!r}")
    assert tokenizer.vocab_size == len(set(text)) == 65, f"CharTokenizer: vocab_size {tokenizer.vocab_size}, not 65"


@pytest.mark.task01_1
@pytest.mark.points(4)
def test_encode_decode_round_trips_the_whole_corpus(bigram, text):
    """decode(encode(text)) == text on all 1,115,394 characters, with ids given by sorted position"""
    tokenizer = bigram.CharTokenizer(text)
    ids = tokenizer.encode(text)
    assert len(ids) == len(text), f"CharTokenizer.encode: {len(ids)} ids for {len(text)} characters"
    rank = {ch: i for i, ch in enumerate(sorted(set(text)))}
    for part in (slice(None, 2000), slice(-2000, None)):
        assert ids[part] == [rank[ch] for ch in text[part]], (
            "CharTokenizer.encode: each id must be the character's position in sorted(set(text))")
    assert tokenizer.decode(ids) == text, "CharTokenizer.decode(encode(text)) must give the text back"
    assert tokenizer.decode(torch.tensor(ids[:500])) == text[:500], "CharTokenizer.decode must take a 1-D tensor too"


@pytest.mark.task01_1
@pytest.mark.points(2)
def test_unknown_character_error_names_the_character(bigram):
    """Encoding a character outside the vocabulary raises ValueError naming it"""
    tokenizer = bigram.CharTokenizer("hello world")
    with must_raise(ValueError, "CharTokenizer.encode", "for 'z', a character outside the vocabulary", match="z"):
        tokenizer.encode("hello wzrld")


@pytest.mark.task01_1
@pytest.mark.points(1)
def test_bad_tokenizer_input_raises_clear_errors(bigram):
    """Non-strings, empty texts and out-of-range ids raise TypeError/ValueError"""
    with must_raise(ValueError, "CharTokenizer", "for an empty text"):
        bigram.CharTokenizer("")
    with must_raise(TypeError, "CharTokenizer", "for a list instead of a str"):
        bigram.CharTokenizer(["a", "b"])
    tokenizer = bigram.CharTokenizer("abc")
    with must_raise(TypeError, "CharTokenizer.encode", "for an int instead of a str"):
        tokenizer.encode(123)
    with must_raise(ValueError, "CharTokenizer.decode", "for id 3 of a 3-character vocabulary", match="3"):
        tokenizer.decode([0, 1, 3])
    with must_raise(ValueError, "CharTokenizer.decode", "for id -1"):
        tokenizer.decode([-1])
    with must_raise(TypeError, "CharTokenizer.decode", "for the id 'a'"):
        tokenizer.decode([0, "a"])


@pytest.mark.task01_1
@pytest.mark.points(2)
@pytest.mark.parametrize("n,fraction", [(1001, 0.9), (10, 0.75), (7, 0.5), (1000, 0.6667)])
def test_train_val_split_cuts_at_int_fraction_in_order(bigram, n, fraction):
    """train_val_split keeps order: the first int(fraction * n) ids train, the rest validate (cut points where
    rounding would give one more)"""
    data = torch.randperm(n, generator=torch.Generator().manual_seed(n))  # distinct ids in no particular order
    cut = math.floor(fraction * n)
    train_data, val_data = bigram.train_val_split(data, train_fraction=fraction)
    assert torch.equal(train_data, data[:cut]) and torch.equal(val_data, data[cut:]), (
        f"train_val_split: the first int(train_fraction * len(data)) ids train, in order, and the rest validate: "
        f"for {n} ids at train_fraction={fraction} that is {cut} train ids and {n - cut} validation ids, "
        f"got {len(train_data)} and {len(val_data)}" + (" (in another order)" if len(train_data) == cut else ""))


@pytest.mark.task01_1
@pytest.mark.points(1)
def test_train_val_split_rejects_impossible_splits(bigram):
    """A fraction outside (0, 1), a 2-D tensor or a part that would be empty raises ValueError"""
    data = torch.arange(1001)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with must_raise(ValueError, "train_val_split", f"for train_fraction={bad}"):
            bigram.train_val_split(data, train_fraction=bad)
    with must_raise(ValueError, "train_val_split", "for a 2-D tensor"):
        bigram.train_val_split(torch.zeros(4, 4, dtype=torch.long))
    with must_raise(ValueError, "train_val_split", "when the training part would be empty (1 id at 0.5)"):
        bigram.train_val_split(torch.arange(1), train_fraction=0.5)
    train_data, val_data = bigram.train_val_split(torch.arange(2), train_fraction=0.5)  # the smallest split
    assert train_data.tolist() == [0] and val_data.tolist() == [1], (
        "train_val_split: 2 ids at train_fraction=0.5 split into one train id and one validation id")


@pytest.mark.task01_1
@pytest.mark.points(2)
@pytest.mark.parametrize("batch_size,block_size", [(1, 1), (4, 8), (32, 64), (3, 256)])
def test_get_batch_draws_the_specified_windows(bigram, corpus, batch_size, block_size):
    """get_batch draws starts with one torch.randint call on the generator and cuts (B, T) int64 windows"""
    _, train_data, _ = corpus
    x, y = bigram.get_batch(train_data, batch_size, block_size, torch.Generator().manual_seed(SEED))
    torch.manual_seed(0)  # a generator's draws must not depend on the global seed
    again, _ = bigram.get_batch(train_data, batch_size, block_size, torch.Generator().manual_seed(SEED))
    ix = torch.randint(len(train_data) - block_size, (batch_size,), generator=torch.Generator().manual_seed(SEED))
    expected_x = torch.stack([train_data[i : i + block_size] for i in ix])
    expected_y = torch.stack([train_data[i + 1 : i + 1 + block_size] for i in ix])
    assert x.shape == y.shape == (batch_size, block_size), (
        f"get_batch: x and y must have shape (batch_size, block_size) = {(batch_size, block_size)}, "
        f"got {tuple(x.shape)} and {tuple(y.shape)}")
    assert x.dtype == y.dtype == torch.int64, f"get_batch: x and y must be int64, got {x.dtype} and {y.dtype}"
    assert torch.equal(x, again), (
        "get_batch: the same generator seed must give the same batch: draw the starts with "
        "torch.randint(..., generator=generator)")
    assert torch.equal(x, expected_x), (
        "get_batch: the windows must start at ix = torch.randint(len(data) - block_size, (batch_size,), "
        "generator=generator), one draw, x[b] = data[ix[b] : ix[b] + block_size]")
    assert torch.equal(y, expected_y), (
        "get_batch: targets must be the inputs shifted by one, y[b] = data[ix[b] + 1 : ix[b] + block_size + 1]")


@pytest.mark.task01_1
@pytest.mark.points(1)
def test_targets_are_inputs_shifted_by_one(bigram):
    """y[:, t] is the id that follows x[:, t] in the data"""
    data = torch.randperm(5000, generator=torch.Generator().manual_seed(0))
    position = torch.empty_like(data)
    position[data] = torch.arange(len(data))
    x, y = bigram.get_batch(data, 16, 10, torch.Generator().manual_seed(1))
    message = "get_batch: targets must be the inputs shifted by one (y[:, t] is the id after x[:, t] in data)"
    assert torch.equal(y[:, :-1], x[:, 1:]), message
    assert torch.equal(position[y], position[x] + 1), message


@pytest.mark.task01_1
@pytest.mark.points(1)
def test_get_batch_rejects_impossible_sizes(bigram):
    """Windows longer than the data, and sizes below 1, raise ValueError; the longest window that fits works"""
    data = torch.arange(10)
    with must_raise(ValueError, "get_batch", "when data has only block_size ids (the last one has no target)"):
        bigram.get_batch(data, 2, 10)
    with must_raise(ValueError, "get_batch", "for batch_size=0"):
        bigram.get_batch(data, 0, 4)
    with must_raise(ValueError, "get_batch", "for block_size=0"):
        bigram.get_batch(data, 2, 0)
    try:
        x, y = bigram.get_batch(data, 3, 9, torch.Generator().manual_seed(0))  # the longest window that fits
    except NotImplementedError:  # a stub: code still to write, reported as such
        raise
    except Exception as error:  # noqa: BLE001 - report which call failed, not a bare traceback
        pytest.fail(f"get_batch: data of block_size + 1 ids holds exactly one window, yet it raised {error!r}",
                    pytrace=False)
    assert torch.equal(x, torch.arange(9).expand(3, 9)) and torch.equal(y, torch.arange(1, 10).expand(3, 9)), (
        "get_batch: data of block_size + 1 ids holds one window, x = data[:-1] and y = data[1:]")


# ---------------------------------------------------------------------------------------------- task01_2


@pytest.mark.task01_2
@pytest.mark.points(6)
def test_count_bigrams_matches_an_independent_count(bigram, corpus):
    """count_bigrams equals counting every (a, b) pair of the training split with index_put_"""
    tokenizer, train_data, _ = corpus
    counts = bigram.count_bigrams(train_data, tokenizer.vocab_size)
    expected = reference_counts(train_data, 65)
    assert counts.shape == (65, 65), f"count_bigrams: counts must have shape (V, V) = (65, 65), got {counts.shape}"
    assert torch.equal(counts.long(), expected), (
        "count_bigrams: counts[a, b] must count b following a (the pairs data[i], data[i + 1])"
        + ("; yours is transposed, counts[b, a]" if torch.equal(counts.long(), expected.T) else ""))
    assert counts.sum() == len(train_data) - 1, "count_bigrams: N ids hold N - 1 bigrams"
    with must_raise(ValueError, "count_bigrams", "for id 5 with vocab_size=5 (ids lie in [0, vocab_size))"):
        bigram.count_bigrams(torch.tensor([0, 1, 5]), 5)


def python_loop_counts(data: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The textbook count in plain Python (lists, not tensor indexing, which is ten times slower still)."""
    ids = data.tolist()
    rows = [[0] * vocab_size for _ in range(vocab_size)]
    for a, b in itertools.pairwise(ids):
        rows[a][b] += 1
    return torch.tensor(rows)


@pytest.mark.task01_2
@pytest.mark.benchmark
@pytest.mark.points(2)
def test_count_bigrams_is_vectorised(bigram, corpus, benchmark, leaderboard):
    """count_bigrams over the million characters of the training split is at least count_speedup_min times
    faster than a plain Python loop over its bigrams (interleaved, one thread), the same counts"""
    tokenizer, train_data, _ = corpus
    minimum = LIMITS["count_speedup_min"]
    speedup, out = race({"ours": lambda: bigram.count_bigrams(train_data, tokenizer.vocab_size),
                         "loop": lambda: python_loop_counts(train_data, tokenizer.vocab_size)},
                        "ours", "loop", minimum, benchmark, attempts=3, min_attempts=2)
    assert torch.equal(out["ours"].long(), out["loop"]), "count_bigrams' counts differ from a plain count"
    record_threshold(benchmark, "count_speedup_min", minimum, speedup)
    leaderboard("count_bigrams speed-up over a Python loop", speedup, order="desc")
    assert speedup >= minimum, (
        f"count_bigrams takes {1 / speedup:.2f}x the time of a plain Python loop over the bigrams (it must be at "
        f"least {minimum}x faster): count every pair with one tensor operation (torch.bincount of a * V + b, or "
        "index_put_ with accumulate=True) instead of a loop")


@pytest.mark.task01_2
@pytest.mark.points(2)
@pytest.mark.parametrize("k", [0.5, 1.0, 3.0])
def test_add_k_smoothing_formula(bigram, k):
    """P[a, b] = (c[a, b] + k) / (sum_b c[a, b] + k V), rows sum to 1"""
    counts = torch.tensor([[0, 2, 1], [0, 0, 0], [5, 1, 0]])
    probs = bigram.bigram_probabilities(counts, k=k)
    expected = torch.tensor([[(c + k) / (sum(row) + 3 * k) for c in row] for row in counts.tolist()])
    torch.testing.assert_close(probs.float(), expected, rtol=1e-6, atol=1e-7, msg=lambda m: (
        f"bigram_probabilities(counts, k={k}): P[a, b] must be (counts[a, b] + k) / (sum_b' counts[a, b'] + k * V), "
        f"each row normalised on its own.\n{m}"))
    torch.testing.assert_close(probs.sum(1).float(), torch.ones(3), msg=lambda m: (
        f"bigram_probabilities: each row (the next-id distribution after one id) must sum to 1.\n{m}"))


@pytest.mark.task01_2
@pytest.mark.points(2)
def test_smoothing_rejects_impossible_k(bigram):
    """k < 0, or k = 0 with a character never followed by anything, raises ValueError"""
    counts = torch.tensor([[1, 1], [0, 0]])
    with must_raise(ValueError, "bigram_probabilities", "for k=-1.0"):
        bigram.bigram_probabilities(counts, k=-1.0)
    with must_raise(ValueError, "bigram_probabilities", "for k=0 when a row has no counts (its P would be 0/0)"):
        bigram.bigram_probabilities(counts, k=0.0)
    torch.testing.assert_close(bigram.bigram_probabilities(torch.tensor([[1, 0], [0, 0]]), k=0.5),
                               torch.tensor([[0.75, 0.25], [0.5, 0.5]]),  # (1 + 0.5) / (1 + 2 * 0.5), ...
                               msg="bigram_probabilities: with k=0.5, P = (counts + k) / (row sum + k * V), and a row "
                                   "without counts is uniform")


@pytest.mark.task01_2
@pytest.mark.points(6)
def test_count_model_nll_on_shakespeare(bigram, corpus):
    """bigram_nll equals -mean log P over the validation bigrams, and beats uniform by far"""
    tokenizer, train_data, val_data = corpus
    probs = bigram.bigram_probabilities(reference_counts(train_data, 65), k=1.0)
    expected_probs = (reference_counts(train_data, 65) + 1.0) / (reference_counts(train_data, 65).sum(1, True) + 65)
    nll = bigram.bigram_nll(probs, val_data)
    expected = -expected_probs[val_data[:-1], val_data[1:]].log().mean().item()
    assert nll == pytest.approx(expected, abs=1e-5), (
        f"bigram_nll: the validation NLL must be -(1 / (N - 1)) * sum_i log probs[data[i], data[i + 1]] = "
        f"{expected:.6f}, got {nll:.6f}")
    assert nll < math.log(65) - 1.5  # uniform is 4.17; a bigram knows which letters follow which
    with must_raise(ValueError, "bigram_nll", "for a single id (there is no bigram to score)"):
        bigram.bigram_nll(probs, torch.tensor([3]))


# ---------------------------------------------------------------------------------------------- task01_3


@pytest.mark.task01_3
@pytest.mark.points(6)
def test_forward_returns_logits_and_cross_entropy(bigram):
    """forward gives (B, T, V) logits and F.cross_entropy of them over all B*T positions"""
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(11)
    idx, targets = torch.randint(11, (3, 7)), torch.randint(11, (3, 7))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 7, 11), (
        f"forward: logits must have shape (B, T, V) = (3, 7, 11), with or without targets, got {tuple(logits.shape)}")
    expected = F.cross_entropy(logits.reshape(21, 11), targets.reshape(21))
    torch.testing.assert_close(loss, expected, msg=lambda m: (
        f"forward: the loss must be the mean cross-entropy over all B*T positions, "
        f"F.cross_entropy(logits.view(B * T, V), targets.view(B * T)) = {expected.item():.4f}, got {loss.item():.4f}"))
    logits_only, none = model(idx)
    assert none is None, "forward: the loss must be None when targets is None"
    assert torch.equal(logits_only, logits), "forward: the logits must not depend on whether targets are given"
    loss.backward()
    assert all(p.grad is not None for p in model.parameters()), "forward: the loss must reach every parameter"


@pytest.mark.task01_3
@pytest.mark.points(1)
@pytest.mark.parametrize("vocab_size", [2, 65, 500])
def test_uniform_logits_give_log_vocab_loss(bigram, vocab_size):
    """With every parameter zero, the logits are uniform and the loss is ln(V)"""
    model = bigram.BigramLanguageModel(vocab_size)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    idx = torch.randint(vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    _, loss = model(idx, torch.roll(idx, 1, dims=1))
    assert loss.item() == pytest.approx(math.log(vocab_size), rel=1e-6), (
        f"forward: with uniform logits the loss must be the mean cross-entropy ln V = {math.log(vocab_size):.4f}, "
        f"got {loss.item():.4f}")


@pytest.mark.task01_3
@pytest.mark.points(6)
def test_generate_is_deterministic_for_a_seed(bigram):
    """The same generator seed gives the same sequence, whatever the global seed; another seed gives another"""
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(30)
    prompt = torch.tensor([[3], [7]])
    first = model.generate(prompt, 100, torch.Generator().manual_seed(42))
    torch.manual_seed(1)  # a generator's draws must not depend on the global seed
    again = model.generate(prompt, 100, torch.Generator().manual_seed(42))
    other = model.generate(prompt, 100, torch.Generator().manual_seed(43))
    assert torch.equal(first, again), (
        "generate: the same generator seed must give the same text: pass generator to torch.multinomial")
    assert not torch.equal(first, other), (
        "generate: two generator seeds gave the same 200 tokens: sample each id with torch.multinomial(probs, "
        "num_samples=1, generator=generator), not the most likely id")


@pytest.mark.task01_3
@pytest.mark.points(6)
def test_generate_keeps_the_prompt_and_emits_vocab_ids(bigram):
    """generate returns (B, T + n), the prompt first, every new id in [0, V), following the model"""
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(5)
    with torch.no_grad():  # a deterministic model: after id a always comes (a + 1) mod 5
        model.token_embedding_table.weight.copy_(torch.roll(torch.eye(5), 1, dims=1) * 100)
    prompt = torch.tensor([[0, 2], [4, 1]])
    out = model.generate(prompt, 6, torch.Generator().manual_seed(0))
    assert out.shape == (2, 8) and out.dtype == torch.int64, (
        f"generate: idx (B, T) grows to (B, T + max_new_tokens) = (2, 8) int64, got {tuple(out.shape)} {out.dtype}")
    assert torch.equal(out[:, :2], prompt), "generate: the output must start with the prompt, unchanged"
    expected = torch.tensor([[0, 2, 3, 4, 0, 1, 2, 3], [4, 1, 2, 3, 4, 0, 1, 2]])
    assert torch.equal(out, expected), (
        f"generate: with a table whose row a puts all probability on (a + 1) mod 5, each row must continue its "
        f"own last id: expected {expected.tolist()}, got {out.tolist()} (softmax over the vocabulary of the "
        f"last position's logits, one row per sequence)")
    random_model = bigram.BigramLanguageModel(7)
    sample = random_model.generate(torch.zeros(4, 1, dtype=torch.long), 200, torch.Generator().manual_seed(1))
    assert sample.min() >= 0 and sample.max() < 7, "generate: every new id must lie in [0, V)"


@pytest.mark.task01_3
@pytest.mark.points(3)
def test_generate_rejects_bad_input(bigram):
    """A 1-D prompt or a negative length raises ValueError; zero new tokens returns the prompt"""
    model = bigram.BigramLanguageModel(5)
    with must_raise(ValueError, "generate", "for a 1-D idx (it takes (B, T))"):
        model.generate(torch.tensor([1, 2]), 3)
    with must_raise(ValueError, "generate", "for max_new_tokens=-1"):
        model.generate(torch.tensor([[1, 2]]), -1)
    assert torch.equal(model.generate(torch.tensor([[1, 2]]), 0), torch.tensor([[1, 2]])), (
        "generate: max_new_tokens=0 must return the prompt")


# ---------------------------------------------------------------------------------------------- task01_4


class Recorder(torch.nn.Module):
    """A stand-in model that records how it is called: train/eval mode and whether autograd is on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, idx, targets=None):
        self.calls.append((self.training, torch.is_grad_enabled()))
        loss = idx.float().mean() / 100 + self.weight.sum()
        return None, loss


@pytest.mark.task01_4
@pytest.mark.points(6)
def test_estimate_loss_uses_eval_mode_without_gradients(bigram):
    """estimate_loss runs the model in eval mode with autograd off, then restores the mode"""
    data = torch.arange(100)
    for mode in (True, False):
        model = Recorder().train(mode)
        out = bigram.estimate_loss(model, {"train": data, "val": data}, 4, 8, 3, torch.Generator().manual_seed(0))
        assert set(out) == {"train", "val"} and all(isinstance(v, float) for v in out.values()), (
            f"estimate_loss must return a float for each split, {{'train': ..., 'val': ...}}, got {out!r}")
        assert len(model.calls) == 6, f"estimate_loss: 2 splits x eval_iters=3 batches, {len(model.calls)} calls"
        assert all(training is False for training, _ in model.calls), (
            "estimate_loss: the model must run in eval mode (model.eval(), so dropout is off)")
        assert all(grad is False for _, grad in model.calls), "estimate_loss: run without gradients (torch.no_grad)"
        assert model.training is mode, (
            f"estimate_loss: leave the model in the mode it was in (it was {'train' if mode else 'eval'} mode, "
            f"it is left in {'train' if model.training else 'eval'} mode): model.train(was_training)")
    with must_raise(ValueError, "estimate_loss", "for eval_iters=0"):
        bigram.estimate_loss(Recorder(), {"val": data}, 4, 8, 0)


@pytest.mark.task01_4
@pytest.mark.points(6)
def test_estimate_loss_is_the_mean_over_specified_batches(bigram):
    """Each split's estimate is the mean loss over eval_iters batches drawn in split order"""
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(20)
    splits = {"train": torch.randint(20, (3000,)), "val": torch.randint(20, (800,))}
    out = bigram.estimate_loss(model, splits, 8, 16, 5, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    for name, data in splits.items():
        losses = []
        for _ in range(5):
            ix = torch.randint(len(data) - 16, (8,), generator=g)
            x = torch.stack([data[i : i + 16] for i in ix])
            y = torch.stack([data[i + 1 : i + 17] for i in ix])
            logits = model.token_embedding_table.weight[x]
            losses.append(F.cross_entropy(logits.reshape(-1, 20), y.reshape(-1)).item())
        assert out[name] == pytest.approx(sum(losses) / 5, rel=1e-5), (
            f"estimate_loss: the {name!r} estimate must be the mean loss over eval_iters=5 batches, each from "
            f"get_batch(data, batch_size, block_size, generator) with the generator passed on, splits in the order "
            f"given: expected {sum(losses) / 5:.5f}, got {out[name]:.5f}")


@pytest.mark.task01_4
@pytest.mark.points(6)
def test_train_returns_one_loss_per_step_and_learns(bigram, capfd):
    """train returns max_iters float losses; a short run lowers the loss; the generator alone makes it repeatable;
    progress=False prints nothing"""
    data = torch.arange(2000) % 7  # 0 1 2 ... 6 0 1 ...: every next id is certain

    def run(global_seed: int) -> list[float]:
        torch.manual_seed(3)
        model = bigram.BigramLanguageModel(7)
        torch.manual_seed(global_seed)  # the batches must come from the generator, not the global seed
        return bigram.train(model, data, max_iters=200, batch_size=8, block_size=8, learning_rate=0.1,
                            generator=torch.Generator().manual_seed(3), progress=False)

    capfd.readouterr()
    losses = run(0)
    assert capfd.readouterr().err == "", "train: progress=False must show no progress bar (tqdm's disable=)"
    assert len(losses) == 200, f"train must return one loss per step: {len(losses)} for max_iters=200"
    assert all(isinstance(v, float) for v in losses), (
        "train must return Python floats (loss.item()), not tensors that keep every step's graph alive")
    assert sum(losses[-20:]) / 20 < 0.2 < sum(losses[:5]) / 5, (
        f"train: 200 steps at learning_rate=0.1 on a fully predictable sequence must bring the loss from "
        f"{sum(losses[:5]) / 5:.3f} below 0.2, got {sum(losses[-20:]) / 20:.3f}: each step zero_grad, backward, "
        f"step, with AdamW(lr=learning_rate)")
    assert run(1) == losses, (
        "train: the same generator seed must give the same losses: draw every batch with get_batch(train_data, "
        "batch_size, block_size, generator)")
    with must_raise(ValueError, "train", "for max_iters=-1"):
        bigram.train(bigram.BigramLanguageModel(7), data, max_iters=-1, batch_size=2, block_size=2,
                     learning_rate=0.1, progress=False)


@pytest.mark.task01_4
@pytest.mark.points(4)
def test_neural_bigram_reaches_the_count_model(bigram, corpus, trained):
    """Trained on TinyShakespeare, the neural bigram's validation NLL is within 0.02 of counting's"""
    _, train_data, val_data = corpus
    model, _ = trained
    counts = reference_counts(train_data, 65).double()
    count_nll = -((counts + 1) / (counts.sum(1, keepdim=True) + 65))[val_data[:-1], val_data[1:]].log().mean().item()
    gap = full_nll(model, val_data) - count_nll
    assert gap <= LIMITS["count_model_gap_max"], (
        f"train: after 3000 AdamW steps at lr 1e-2 the validation NLL {full_nll(model, val_data):.4f} is {gap:.4f} "
        f"above the count model's {count_nll:.4f} (at most {LIMITS['count_model_gap_max']})"
    )


@pytest.mark.task01_4
@pytest.mark.points(2)
def test_validation_loss_is_at_most_2_50(bigram, corpus, trained, leaderboard):
    """estimate_loss on the validation split after training is at most 2.50 (the original: 2.47)"""
    _, train_data, val_data = corpus
    model, _ = trained
    out = bigram.estimate_loss(model, {"val": val_data}, 32, 8, 500, torch.Generator().manual_seed(SEED))
    leaderboard("bigram val loss", out["val"], order="asc")
    assert out["val"] <= LIMITS["val_loss_max"], (
        f"train, then estimate_loss: the validation loss after 3000 steps is {out['val']:.4f}, above "
        f"{LIMITS['val_loss_max']}")
