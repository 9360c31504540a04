"""Hidden tests for milestone 06, processors.py and the sampler (tasks 06_1 to 06_4).

Every filter and penalty runs on the same logits as the matching `transformers` logits processor and must give
the same mask, bit for bit where the operation is exact; presence and frequency penalties are checked against the
OpenAI API's formula, with counts made by a Python loop. Where a learner's output matches a realistic mistake (the
token that crosses top_p dropped, padding counted, temperature after top-p), the message names it. The sampler's
draw is checked with a chi-square test.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
import torch

from llmfs.loader import load_module
from llmfs.testing import implementation_fixture, record_threshold, thresholds

processors = implementation_fixture("06", "processors")
sampling = implementation_fixture("06", "sampling")
ref = load_module(Path(__file__).resolve().parents[1], "06", "hf_processors")
LIMITS = thresholds("06")
V = 50257


def random_logits(rows: int = 8, vocab: int = V, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    """Peaked like a trained model's: most of the mass on a few hundred tokens."""
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def kept(logits: torch.Tensor) -> torch.Tensor:
    return logits > float("-inf")


def assert_same_logits(ours: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert ours.shape == expected.shape, f"{what}: shape {tuple(ours.shape)}, expected {tuple(expected.shape)}"
    if message := ref.describe_mask_difference(what, kept(ours), kept(expected)):
        removed = ~kept(expected) & kept(ours)
        if removed.any() and torch.equal(kept(ours), torch.ones_like(removed)):
            message += (f"; the tokens to remove hold {ours[removed].max().item():.3g}: set them to float('-inf'), "
                        "so their probability is exactly 0")
        pytest.fail(message, pytrace=False)
    finite = kept(expected)
    assert torch.equal(ours[finite], expected[finite]), (
        f"{what}: the kept logits must be left exactly as they were (largest change "
        f"{(ours[finite] - expected[finite]).abs().max().item():.3g})")


def assert_input_unchanged(before: torch.Tensor, after: torch.Tensor, what: str) -> None:
    assert torch.equal(before, after), f"{what} changed its input logits in place: return a new tensor instead"


# ---------------------------------------------------------------------------------------------- task06_1


@pytest.mark.task06_1
@pytest.mark.points(3)
def test_temperature_divides_the_logits_as_hugging_face_does(processors):
    """apply_temperature equals TemperatureLogitsWarper for T in {0.3, 0.7, 1, 1.5, 4} on (8, 50257) logits"""
    from transformers import TemperatureLogitsWarper

    logits = random_logits()
    for t in (0.3, 0.7, 1.0, 1.5, 4.0):
        original = logits.clone()
        ours = processors.apply_temperature(logits, t)
        assert_input_unchanged(original, logits, "apply_temperature")
        expected = TemperatureLogitsWarper(t)(None, logits.clone())
        assert torch.equal(ours, expected), f"apply_temperature(T={t}) is not logits / T (max difference " \
            f"{(ours - expected).abs().max().item():.3g}): divide, do not multiply or take a power"
    hot = processors.apply_temperature(logits[:1], 0.5).softmax(-1).max()
    assert hot > logits[:1].softmax(-1).max(), "a temperature below 1 must sharpen the distribution"


@pytest.mark.task06_1
@pytest.mark.points(2)
def test_temperature_rejects_values_that_are_not_positive(processors):
    """apply_temperature raises ValueError naming `temperature` for 0, negatives, nan, inf and strings"""
    processors.apply_temperature(random_logits(1, 10), 0.5)  # a stub fails here, not with a free pass below
    for bad in (0, -1.0, float("nan"), float("inf"), "0.7"):
        with pytest.raises(ValueError, match="temperature"):
            processors.apply_temperature(random_logits(1, 10), bad)


# ---------------------------------------------------------------------------------------------- task06_2


@pytest.mark.task06_2
@pytest.mark.points(1)
@pytest.mark.parametrize("k, keep", [(1, 1), (5, 1), (50, 1), (640, 1), (3, 10), (V + 7, 1)])
def test_top_k_equals_hugging_face_on_random_logits(processors, k, keep):
    """top_k_filter equals TopKLogitsWarper: batch of 8 x 50,257 logits, k from 1 to > V, min_tokens_to_keep"""
    logits = random_logits(seed=k)
    original = logits.clone()
    ours = processors.top_k_filter(logits, k, keep)
    assert_input_unchanged(original, logits, "top_k_filter")
    assert_same_logits(ours, ref.hf_top_k(logits.clone(), k, keep), f"top_k_filter(k={k}, min_tokens_to_keep={keep})")


@pytest.mark.task06_2
@pytest.mark.points(3)
def test_top_k_keeps_every_token_tied_with_the_kth(processors):
    """Ties at the k-th value are kept (HF's rule): logits 5, 3, 3, 3, 1 with k=2 keep four tokens"""
    logits = torch.tensor([[5.0, 3.0, 3.0, 3.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 2.0, -1.0, 2.0]])
    ours = processors.top_k_filter(logits, 2)
    expected = ref.hf_top_k(logits.clone(), 2)
    assert kept(expected).sum(-1).tolist() == [4, 5, 3]  # the reference itself
    assert_same_logits(ours, expected, "top_k_filter(k=2) with ties at the 2nd largest logit")


@pytest.mark.task06_2
@pytest.mark.points(1)
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.9])
def test_top_p_equals_hugging_face_on_random_logits(processors, p):
    """top_p_filter equals TopPLogitsWarper on 8 x 50,257 logits (tokens within float noise of p excepted)"""
    logits = random_logits(seed=int(p * 1000))
    original = logits.clone()
    ours = processors.top_p_filter(logits, p)
    assert_input_unchanged(original, logits, "top_p_filter")
    expected = ref.hf_top_p(logits.clone(), p)
    hf_kept, close = ref.top_p_decisions(logits, p)
    assert (close.sum(-1) == 0).sum() >= 4, "too many rows with a boundary in float noise"  # the test has power
    assert ref.describe_mask_difference("check", kept(expected), hf_kept, close) is None  # HF = the definition
    if message := ref.describe_mask_difference(f"top_p_filter(p={p})", kept(ours), kept(expected), close):
        hints = [what for what, mask in ref.mistaken_top_p(logits, p).items()
                 if ref.describe_mask_difference("", kept(ours), mask, close) is None]
        pytest.fail(message + (f": your filter {hints[0]}" if hints else ""), pytrace=False)
    finite = kept(ours)
    assert torch.equal(ours[finite], logits[finite]), "top_p_filter must leave the kept logits as they were"


@pytest.mark.task06_2
@pytest.mark.points(1)
@pytest.mark.parametrize("p, expected_kept", [(0.25, 1), (0.5, 2), (0.75, 3), (0.7500001, 4), (1.0, 4)])
def test_top_p_boundary_on_exactly_representable_probabilities(processors, p, expected_kept):
    """Four equal logits (probabilities exactly 1/4) and four at -inf: a nucleus of mass exactly p ends there"""
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0] + [float("-inf")] * 4])
    assert logits.softmax(-1)[0, :4].tolist() == [0.25] * 4  # exactly representable
    hf = ref.hf_top_p(logits.clone(), p) if p < 1 else logits
    assert int(kept(hf).sum()) == expected_kept  # the reference agrees with the definition
    ours = processors.top_p_filter(logits, p)
    n = int(kept(ours).sum())
    hint = {expected_kept - 1: ": the token that crosses (or reaches) top_p belongs to the nucleus",
            expected_kept + 1: ": stop as soon as the mass kept reaches top_p"}.get(n, "")
    assert n == expected_kept, f"top_p_filter(p={p}) on probabilities 1/4 x 4 keeps {n} tokens, " \
                               f"Hugging Face keeps {expected_kept}{hint}"


@pytest.mark.task06_2
@pytest.mark.points(1)
@pytest.mark.parametrize("keep", [1, 5, 40])
def test_min_tokens_to_keep_overrides_a_tiny_nucleus(processors, keep):
    """top_p=0.01 on peaked logits keeps one token, or min_tokens_to_keep of them, as TopPLogitsWarper does"""
    logits = random_logits(4, 1000, seed=keep, scale=6.0)
    ours = processors.top_p_filter(logits, 0.01, keep)
    expected = ref.hf_top_p(logits.clone(), 0.01, keep)
    assert_same_logits(ours, expected, f"top_p_filter(p=0.01, min_tokens_to_keep={keep})")


@pytest.mark.task06_2
@pytest.mark.points(2)
def test_filters_accept_logits_already_at_minus_infinity(processors):
    """-inf already present (a previous filter): top-k and top-p still equal HF's, rows of one token too"""
    logits = random_logits(6, 2000, seed=3)
    logits[:, ::3] = float("-inf")
    logits[5, 2:] = float("-inf")  # a row with one token left: id 1 (id 0 is already -inf)
    for k in (1, 10, 1500):
        assert_same_logits(processors.top_k_filter(logits, k), ref.hf_top_k(logits.clone(), k), f"top_k_filter(k={k})")
    for p in (0.3, 0.9):
        ours, expected = processors.top_p_filter(logits, p), ref.hf_top_p(logits.clone(), p)
        _, close = ref.top_p_decisions(logits, p)
        if message := ref.describe_mask_difference(f"top_p_filter(p={p}) with -inf logits", kept(ours),
                                                   kept(expected), close):
            pytest.fail(message, pytrace=False)
    assert kept(ref.hf_top_k(logits.clone(), 10))[5].tolist().count(True) == 1  # the reference: one token left
    assert not torch.isnan(processors.top_p_filter(logits, 0.5)).any(), "top_p_filter produced NaN"


@pytest.mark.task06_2
@pytest.mark.points(1)
def test_filters_reject_bad_settings(processors):
    """top_k < 1 or not an int, top_p outside (0, 1], min_tokens_to_keep < 1: ValueError naming the setting"""
    logits = random_logits(1, 20)
    processors.top_k_filter(logits, 3)  # a stub fails here
    processors.top_p_filter(logits, 0.5)
    for k in (0, -3, 2.5):
        with pytest.raises(ValueError, match="top_k"):
            processors.top_k_filter(logits, k)
    for p in (0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="top_p"):
            processors.top_p_filter(logits, p)
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        processors.top_p_filter(logits, 0.5, 0)


# ---------------------------------------------------------------------------------------------- task06_3


@pytest.mark.task06_3
@pytest.mark.points(3)
def test_token_counts_count_each_row_and_skip_padding(processors):
    """token_counts equals a Python loop's counts, with and without a padding mask"""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(30, (4, 40), generator=g)
    mask = torch.rand(4, 40, generator=g) > 0.3
    for m in (None, mask):
        ours = processors.token_counts(tokens, 30, m)
        assert ours.shape == (4, 30)
        assert torch.equal(ours.double(), ref.counts_by_loop(tokens, 30, m)), \
            f"token_counts {'with' if m is not None else 'without'} a mask differs from counting by hand"


@pytest.mark.task06_3
@pytest.mark.points(2)
@pytest.mark.parametrize("penalty", [1.2, 2.0, 0.5])
def test_repetition_penalty_equals_hugging_face(processors, penalty):
    """repetition_penalty equals RepetitionPenaltyLogitsProcessor: repeated ids, negative logits, batch of 8"""
    logits = random_logits(seed=7)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(2000, (8, 300), generator=g)  # many ids occur several times
    tokens[:, :10] = tokens[:, 10:20]
    original = logits.clone()
    ours = processors.repetition_penalty(logits, tokens, penalty)
    assert_input_unchanged(original, logits, "repetition_penalty")
    expected = ref.hf_repetition(logits.clone(), tokens, penalty)
    if not torch.equal(ours, expected):
        twice = ref.hf_repetition(expected.clone(), tokens, penalty)
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, tokens, True)
        if torch.allclose(ours[seen], twice[seen]):
            pytest.fail("repetition_penalty penalized a token id once per occurrence: Hugging Face penalizes each "
                        "id once, however often it occurs", pytrace=False)
        neg = seen & (logits < 0)
        if not torch.equal(ours[neg], expected[neg]):
            pytest.fail(f"repetition_penalty({penalty}) is wrong on negative logits: multiply them by the penalty "
                        "(dividing would make a negative logit larger)", pytrace=False)
        pytest.fail(f"repetition_penalty({penalty}) differs from Hugging Face's by up to "
                    f"{(ours - expected).abs().max().item():.3g}", pytrace=False)


@pytest.mark.task06_3
@pytest.mark.points(1)
@pytest.mark.parametrize("presence, frequency", [(0.5, 0.0), (0.0, 0.7), (1.5, -0.4), (-2.0, 2.0)])
def test_presence_and_frequency_follow_the_openai_formula(processors, presence, frequency):
    """logit - frequency * count - presence * [count > 0], counts by a Python loop (the API's documented formula)"""
    logits = random_logits(4, 500, seed=2)
    tokens = torch.randint(500, (4, 60), generator=torch.Generator().manual_seed(2))
    original = logits.clone()
    ours = processors.presence_frequency_penalty(logits, tokens, presence, frequency)
    assert_input_unchanged(original, logits, "presence_frequency_penalty")
    expected = ref.openai_penalties(logits, ref.counts_by_loop(tokens, 500), presence, frequency)
    torch.testing.assert_close(ours.double(), expected, atol=1e-5, rtol=1e-6,
                               msg=lambda m: f"presence_frequency_penalty({presence}, {frequency}) does not follow "
                                             f"logit - frequency * count - presence * [count > 0]: {m}")


@pytest.mark.task06_3
@pytest.mark.points(7)
def test_padding_never_counts_in_any_penalty(processors):
    """With a mask, ids that occur only at padded positions keep their logits, in both penalties"""
    logits = random_logits(3, 100, seed=4)
    tokens = torch.tensor([[0, 0, 0, 5, 6, 7], [0, 9, 9, 9, 9, 9], [11, 12, 13, 14, 15, 16]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    counts = ref.counts_by_loop(tokens, 100, mask)
    counted = ref.counts_by_loop(tokens, 100)
    ours = processors.presence_frequency_penalty(logits, tokens, 0.5, 0.3, mask).double()
    expected = ref.openai_penalties(logits, counts, 0.5, 0.3)
    if torch.allclose(ours, ref.openai_penalties(logits, counted, 0.5, 0.3)):
        pytest.fail("presence_frequency_penalty counted padded positions (mask 0): the pad id 0 was penalized",
                    pytrace=False)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-6)
    rep = processors.repetition_penalty(logits, tokens, 1.5, mask)
    expected_rep = torch.where((counts > 0) & (logits < 0), logits * 1.5,
                               torch.where(counts > 0, logits / 1.5, logits))
    if not torch.equal(rep, expected_rep):
        wrong = (rep != expected_rep).nonzero()[:, 1].unique().tolist()
        pytest.fail(f"repetition_penalty with a padding mask changed the wrong logits (ids {wrong[:5]}): ids that "
                    "occur only where the mask is 0 are padding and must keep their logits", pytrace=False)


@pytest.mark.task06_3
@pytest.mark.points(2)
def test_penalties_reject_bad_settings(processors):
    """A repetition penalty <= 0, presence or frequency outside [-2, 2]: ValueError naming the setting"""
    logits, tokens = random_logits(1, 20), torch.tensor([[1, 2]])
    processors.repetition_penalty(logits, tokens, 1.1)  # a stub fails here
    for bad in (0, -1.2, float("nan")):
        with pytest.raises(ValueError, match="repetition_penalty"):
            processors.repetition_penalty(logits, tokens, bad)
    with pytest.raises(ValueError, match="presence"):
        processors.presence_frequency_penalty(logits, tokens, 2.5, 0.0)
    with pytest.raises(ValueError, match="frequency"):
        processors.presence_frequency_penalty(logits, tokens, 0.0, -3)


# ---------------------------------------------------------------------------------------------- task06_4

ORDER_MISTAKES = {
    ("rep", "k", "p", "temp"): "temperature after top-k and top-p",
    ("rep", "k", "temp", "p"): "temperature after top-k",
    ("rep", "temp", "p", "k"): "top-p before top-k",
    ("temp", "k", "p", "rep"): "the repetition penalty last",
    ("temp", "rep", "k", "p"): "the repetition penalty after temperature",
}


@pytest.mark.task06_4
@pytest.mark.points(2)
@pytest.mark.parametrize("settings", [
    dict(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.3),
    dict(temperature=2.0, top_p=0.6),
    dict(temperature=0.5, top_k=200, top_p=0.95, repetition_penalty=0.8),
    dict(temperature=1.3, top_k=3, repetition_penalty=2.0),
], ids=["all four", "hot top-p", "cold", "top-k only"])
def test_process_logits_equals_hugging_faces_logits_processor_list(sampling, settings):
    """process_logits (do_sample) equals LogitsProcessorList(repetition, temperature, top-k, top-p) of HF"""
    logits = random_logits(seed=11, scale=2.0)
    tokens = torch.randint(V, (8, 64), generator=torch.Generator().manual_seed(11))
    config = sampling.SamplingConfig(do_sample=True, **settings)
    ours = sampling.process_logits(logits.clone(), tokens, tokens.size(1), config)
    expected = ref.hf_chain(logits, tokens, **settings)
    close = None  # tokens within float noise of the top-p boundary, which may go either way
    if "top_p" in settings:
        _, close = ref.top_p_decisions(ref.hf_chain(logits, tokens, **{**settings, "top_p": 1.0}), settings["top_p"])
    if message := ref.describe_mask_difference("process_logits", kept(ours), kept(expected), close):
        matches = [what for order, what in ORDER_MISTAKES.items()
                   if ref.describe_mask_difference("", kept(ours), kept(ref.hf_chain(logits, tokens, order=order,
                                                                                   **settings)), close) is None]
        hint = f": it matches HF's processors with {matches[0]}" if matches else ""
        pytest.fail(message + hint + "; the order is repetition -> presence/frequency -> temperature -> top-k -> "
                    "top-p", pytrace=False)
    both = kept(ours) & kept(expected)
    torch.testing.assert_close(ours[both], expected[both], atol=1e-5, rtol=1e-5)


@pytest.mark.task06_4
@pytest.mark.points(3)
def test_process_logits_greedy_penalizes_but_never_warps(sampling):
    """do_sample=False: the repetition penalty applies (as in HF's greedy search); temperature, top-k, top-p do not;
    presence and frequency count the generated tokens only, never the prompt"""
    logits = random_logits(2, 300, seed=5)
    tokens = torch.randint(300, (2, 30), generator=torch.Generator().manual_seed(5))
    greedy = sampling.SamplingConfig(do_sample=False, temperature=0.5, top_k=3, top_p=0.5, repetition_penalty=1.4)
    ours = sampling.process_logits(logits.clone(), tokens, 30, greedy)
    assert torch.equal(ours, ref.hf_repetition(logits.clone(), tokens, 1.4)), \
        "process_logits with do_sample=False must apply the repetition penalty and nothing else"
    penalties = sampling.SamplingConfig(presence_penalty=0.8, frequency_penalty=0.5)
    ours = sampling.process_logits(logits.clone(), tokens, 20, penalties).double()
    generated_only = ref.openai_penalties(logits, ref.counts_by_loop(tokens[:, 20:], 300), 0.8, 0.5)
    if torch.allclose(ours, ref.openai_penalties(logits, ref.counts_by_loop(tokens, 300), 0.8, 0.5)):
        pytest.fail("process_logits counted the prompt in the presence/frequency penalties: the API counts the "
                    "generated tokens only (tokens[:, prompt_length:])", pytrace=False)
    torch.testing.assert_close(ours, generated_only, atol=1e-5, rtol=1e-6)


@pytest.mark.task06_4
@pytest.mark.points(4)
def test_the_sampler_draws_from_the_processed_distribution(sampling):
    """200,000 draws (sample_next_token after process_logits) against the distribution computed in float64 here:
    no filtered token is ever drawn, and Pearson's chi-square test passes at p >= 1e-6, so a correct sampler
    fails it once in a million seeds"""
    logits = torch.tensor([[2.0, 1.5, 1.4, 1.0, 0.5, 0.2, 0.0, -0.5, -1.0, -2.0, -3.0, 3.0]])
    tokens = torch.tensor([[11, 0, 0]])  # the two most likely tokens were seen before
    config = sampling.SamplingConfig(do_sample=True, temperature=0.7, top_k=8, top_p=0.9, repetition_penalty=1.3)
    processed = sampling.process_logits(logits.clone(), tokens, 1, config)
    n = 200_000
    draws = sampling.sample_next_token(processed.expand(n, -1).contiguous(), torch.Generator().manual_seed(0))
    assert draws.shape == (n,), f"sample_next_token must return one id per row, shape ({n},), got {tuple(draws.shape)}"
    # the expected distribution, step by step in float64
    x = logits[0].double().clone()
    for seen in (0, 11):
        x[seen] = x[seen] / 1.3 if x[seen] > 0 else x[seen] * 1.3
    x = x / 0.7
    x[x < x.sort(descending=True).values[7]] = float("-inf")
    probs = x.softmax(-1)
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]
    probs[order[before >= 0.9]] = 0
    probs = probs / probs.sum()
    counts = torch.bincount(draws, minlength=12).double()
    never = (probs == 0).nonzero().flatten()
    assert counts[never].sum() == 0, f"tokens {never.tolist()} have probability 0 after the processors but were " \
                                     f"drawn {int(counts[never].sum())} times"
    support = probs > 0
    p_value = ref.chi_square_p_value(counts[support], probs[support] * n)
    assert p_value >= LIMITS["chi_square_p_min"], (
        f"the draws do not follow the processed distribution (chi-square p = {p_value:.2g}): expected frequencies "
        f"{[round(v, 4) for v in probs[support].tolist()]}, drawn {[round(v / n, 4) for v in counts[support].tolist()]}"
        "; sample with softmax over the processed logits (no second temperature, no argmax)")


@pytest.mark.task06_4
@pytest.mark.benchmark
@pytest.mark.points(2)
def test_processor_chain_speed_is_close_to_hugging_faces(sampling, benchmark, leaderboard):
    """process_logits (temperature, top-k, top-p, repetition penalty) on (8, 50257) logits with 256 tokens of
    history takes at most 1.5x LogitsProcessorList of the same four (interleaved, median of 30 rounds)"""
    settings = dict(temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.2)
    config = sampling.SamplingConfig(do_sample=True, **settings)
    logits = random_logits(seed=21)
    tokens = torch.randint(V, (8, 256), generator=torch.Generator().manual_seed(21))
    ours = sampling.process_logits(logits.clone(), tokens, 256, config)  # stubs fail here, before any timing
    expected = ref.hf_chain(logits, tokens, **settings)
    assert torch.equal(kept(ours), kept(expected)), "process_logits keeps other tokens than Hugging Face's chain"
    times: dict[str, list[float]] = {"ours": [], "hf": []}
    runs = {"ours": lambda: sampling.process_logits(logits.clone(), tokens, 256, config),
            "hf": lambda: ref.hf_chain(logits, tokens, **settings)}

    def both() -> None:
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    benchmark.pedantic(both, rounds=30, warmup_rounds=3)
    ours_s, hf_s = (statistics.median(times[k]) for k in ("ours", "hf"))
    benchmark.extra_info.update({"ours_ms": 1000 * ours_s, "hf_ms": 1000 * hf_s, "ratio": ours_s / hf_s})
    record_threshold(benchmark, "processor_time_ratio_max", LIMITS["processor_time_ratio_max"], ours_s / hf_s)
    leaderboard("processor chain time / HF's", ours_s / hf_s)
    assert ours_s / hf_s <= LIMITS["processor_time_ratio_max"], (
        f"process_logits takes {1000 * ours_s:.2f} ms, {ours_s / hf_s:.2f}x Hugging Face's {1000 * hf_s:.2f} ms (limit "
        f"{LIMITS['processor_time_ratio_max']}x): avoid Python loops over rows or tokens, and sort the vocabulary once")
