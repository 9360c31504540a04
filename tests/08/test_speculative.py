"""Hidden tests for milestone 08, speculative.py: the loop with two caches (task08_2) and batches (task08_3).

The target is the *reference* milestone 05 GPT holding a seeded random `GPT2LMHeadModel`'s weights; greedy speculative
decoding must give exactly `GPT2LMHeadModel.generate`'s greedy tokens, with an unrelated random draft and with the
target as its own draft. Every round's logits must equal fresh full forward passes of both models (so both caches are
rolled back right). Sampled, the distribution of whole generated sequences must equal the target's exact one, computed
here from full forward passes over every possible sequence and Hugging Face's own top-k and top-p warpers (Pearson's
chi-square test, a correct loop fails once in a million runs).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from llmfs.course import load_course
from llmfs.loader import load_module
from llmfs.testing import implementation_fixture, thresholds

speculative = implementation_fixture("08", "speculative")
COURSE = load_course()
gpt2 = load_module(COURSE.solutions, "05", "gpt2", COURSE.milestone("05").api["gpt2"])  # the reference 05
hf_ref = load_module(Path(__file__).resolve().parents[1], "05", "hf_reference")
stats = load_module(Path(__file__).resolve().parents[1], "06", "hf_processors")  # chi_square_p_value
LIMITS = thresholds("08")
TARGET = (2, 2, 32, 64, 97)  # (n_layer, n_head, n_embd, block_size, vocab_size)
DRAFT = (1, 1, 16, 64, 97)


def twins(shape=TARGET, seed: int = 0, scale: float = 0.1):
    """A seeded random HF GPT-2 and the reference 05 GPT holding the same weights."""
    hf = hf_ref.random_hf_gpt2(*shape, seed=seed, scale=scale)
    return hf, hf_ref.ours_for(gpt2, hf)


def near_copy(model, noise: float = 0.05, seed: int = 5):
    """The model with seeded noise on every weight: a draft that agrees with it often, not always."""
    import copy

    draft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    return draft


def hf_greedy(hf, idx, max_new_tokens, eos=None, pad=None):
    return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=max_new_tokens, do_sample=False,
                       eos_token_id=eos, pad_token_id=pad if pad is not None else 0, top_k=None)


def prompt(length: int, vocab: int = 97, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


def assert_same(ours: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert ours.shape == expected.shape, f"{what}: shape {tuple(ours.shape)}, expected {tuple(expected.shape)}"
    if not torch.equal(ours, expected):
        first = int((ours != expected).any(dim=0).nonzero()[0])
        pytest.fail(f"{what}: first difference at column {first}: got {ours[:, first:first + 6].tolist()}, the "
                    f"target's own greedy tokens are {expected[:, first:first + 6].tolist()}", pytrace=False)


# ---------------------------------------------------------------------------------------------- task08_2


@pytest.mark.task08_2
@pytest.mark.points(1)
@pytest.mark.parametrize("gamma", [1, 2, 3, 4, 5, 6])
def test_greedy_equals_the_targets_own_greedy_tokens(speculative, gamma):
    """greedy, an unrelated random draft: exactly GPT2LMHeadModel.generate's greedy tokens (fp32), 40 new tokens"""
    hf, target = twins()
    _, draft = twins(DRAFT, seed=1)
    idx = prompt(5)
    ours = speculative.speculative_generate(target, draft, idx, 40, gamma)
    assert_same(ours, hf_greedy(hf, idx, 40), f"speculative_generate(gamma={gamma})")


@pytest.mark.task08_2
@pytest.mark.points(1)
@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_the_target_as_its_own_draft_yields_gamma_plus_one_tokens_per_target_pass(speculative, gamma):
    """draft = target: every draft token is accepted, so every target pass yields gamma + 1 tokens (the bonus too)"""
    hf, target = twins()
    _, draft = twins()
    idx, n = prompt(4), 28
    with hf_ref.FeedCounter(target) as counter:
        ours = speculative.speculative_generate(target, draft, idx, n, gamma)
    assert_same(ours, hf_greedy(hf, idx, n), f"speculative_generate(gamma={gamma}) with draft = target")
    passes = [s for s in counter.shapes if s != (1, idx.size(1) - 1)]  # the prefill of the prompt is extra
    expected = -(-n // (gamma + 1))
    assert len(passes) == expected, (
        f"with draft = target every draft token is accepted: each target pass must yield gamma + 1 = {gamma + 1} "
        f"tokens (the accepted {gamma} and the bonus token from the last position), {expected} passes for {n} "
        f"tokens; the target ran {len(passes)} times with inputs {passes[:6]}...")


@pytest.mark.task08_2
@pytest.mark.points(5)
def test_every_rounds_logits_equal_fresh_forwards_of_both_models(speculative):
    """after every round, rejections included, the next round's draft and target logits equal full forward passes
    over the tokens so far (atol 1e-4): both caches were rolled back to the accepted length"""
    _, target = twins()
    draft = near_copy(target)
    decoder = speculative.SpeculativeDecoder(target, draft, prompt(6), 40, 3)
    rejected = full = 0
    with torch.no_grad():
        while not bool(decoder.finished.all()):
            before = decoder.output()[0]
            step = decoder.step()
            tokens = step.draft_tokens[0]
            g = tokens.numel()
            seq = torch.cat([before, tokens])[None]
            where = f"round {rejected + full + 1} (after {rejected} rejections)"
            torch.testing.assert_close(step.target_logits[0], target(seq)[0][0, -(g + 1):], atol=1e-4, rtol=1e-4,
                                       msg=f"{where}: the target's logits differ from a full forward: roll its cache "
                                       "back to the accepted tokens")
            for i in range(g):
                fresh = draft(seq[:, : before.numel() + i])[0][0, -1]
                torch.testing.assert_close(
                    step.draft_logits[0, i], fresh, atol=1e-4, rtol=1e-4,
                    msg=f"{where}, draft token {i + 1}: the draft's logits differ from a full forward of the draft "
                    "over the tokens so far: roll the draft's cache back too, and feed it d_gamma when every token "
                    "was accepted")
            if g:
                rejected += int(step.accepted[0] < g)
                full += int(step.accepted[0] == g)
    assert rejected >= 3 and full >= 1, f"test setup: {rejected} rounds with a rejection, {full} without"


@pytest.mark.task08_2
@pytest.mark.points(3)
def test_end_of_text_accepted_in_the_middle_of_a_draft_ends_the_row_there(speculative):
    """draft = target, gamma 6: an end-of-text token accepted as the 3rd draft token ends the output after it"""
    hf, target = twins()
    _, draft = twins()
    idx = prompt(4)
    plain = hf_greedy(hf, idx, 12)[0, 4:].tolist()
    eos = plain[2]
    first = plain.index(eos)
    ours = speculative.speculative_generate(target, draft, idx, 12, 6, eos_token_id=eos, pad_token_id=96)
    expected = torch.cat([idx, torch.tensor([plain[: first + 1]])], dim=1)
    assert_same(ours, expected, f"speculative_generate with eos_token_id={eos} (new token {first + 1} of 12)")


@pytest.mark.task08_2
@pytest.mark.points(3)
def test_exactly_max_new_tokens(speculative):
    """max_new_tokens = 0..13 with gamma 4, for an unrelated draft and for the target as draft: exactly that many"""
    hf, target = twins()
    _, other = twins(DRAFT, seed=1)
    _, same = twins()
    idx = prompt(3)
    reference = hf_greedy(hf, idx, 13)
    for n in range(14):
        for name, draft in (("an unrelated draft", other), ("draft = target", same)):
            ours = speculative.speculative_generate(target, draft, idx, n, 4)
            assert ours.shape == (1, 3 + n), (f"max_new_tokens={n} with {name}: got {ours.size(1) - 3} new tokens; "
                                              "cut the last round's tokens to exactly max_new_tokens")
            assert torch.equal(ours, reference[:, : 3 + n]), f"max_new_tokens={n} with {name}: wrong tokens"


def exact_distribution(target, idx: torch.Tensor, n: int, vocab: int, **settings) -> dict[tuple[int, ...], float]:
    """P(the n new tokens = s) for every s, from full forwards of the target and Hugging Face's warpers (float64)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList()
    if settings.get("temperature", 1.0) != 1.0:
        warpers.append(TemperatureLogitsWarper(settings["temperature"]))
    if settings.get("top_k"):
        warpers.append(TopKLogitsWarper(settings["top_k"]))
    if settings.get("top_p", 1.0) < 1.0:
        warpers.append(TopPLogitsWarper(settings["top_p"]))
    sequences = torch.tensor(list(itertools.product(range(vocab), repeat=n)))  # (V^n, n)
    full = torch.cat([idx.expand(len(sequences), -1), sequences], dim=1)
    with torch.no_grad():
        logits = target(full)[0].double()  # (V^n, T + n, V)
    T = idx.size(1)
    prob = torch.ones(len(sequences), dtype=torch.float64)
    for k in range(n):
        step = warpers(full[:, : T + k], logits[:, T + k - 1].clone())
        prob *= step.softmax(-1).gather(1, sequences[:, k : k + 1]).squeeze(1)
    return {tuple(s): float(pr) for s, pr in zip(sequences.tolist(), prob, strict=True)}


def assert_follows(samples: list[tuple[int, ...]], exact: dict[tuple[int, ...], float], what: str) -> None:
    """Pearson's chi-square over whole sequences; sequences expected fewer than 5 times are pooled."""
    n = len(samples)
    counts: dict[tuple[int, ...], int] = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    impossible = [s for s in counts if exact[s] == 0]
    assert not impossible, f"{what}: generated {impossible[:3]}, which the target (with its filters) never would"
    big = [s for s in exact if exact[s] * n >= 5]
    observed = [counts.get(s, 0) for s in big]
    expected = [exact[s] * n for s in big]
    if n - sum(expected) >= 1:  # the pooled rare sequences, unless there are (almost) none
        observed.append(n - sum(observed))
        expected.append(n - sum(expected))
    p_value = stats.chi_square_p_value(torch.tensor(observed, dtype=torch.float64),
                                       torch.tensor(expected, dtype=torch.float64))
    worst = max(big, key=lambda s: abs(counts.get(s, 0) - exact[s] * n) / (exact[s] * n) ** 0.5)
    assert p_value >= LIMITS["chi_square_p_min"], (
        f"{what}: the generated sequences do not follow the target's distribution (chi-square p = {p_value:.2g}); "
        f"e.g. {worst} came {counts.get(worst, 0)} times in {n}, expected {exact[worst] * n:.0f}. Draw the draft's "
        "tokens from q after the same filters as the target's, and verify against the filtered p")


SETTINGS = [{}, {"temperature": 0.8, "top_k": 3, "top_p": 0.8}]


def tiny_pair(vocab: int = 5):
    _, target = twins((1, 1, 8, 16, vocab), seed=3, scale=0.6)
    _, draft = twins((1, 1, 8, 16, vocab), seed=4, scale=0.6)
    return target, draft


@pytest.mark.task08_2
@pytest.mark.points(3)
@pytest.mark.parametrize("settings", SETTINGS, ids=["plain", "temperature-top-k-top-p"])
def test_sampled_sequences_have_the_targets_exact_distribution(speculative, settings):
    """1,500 runs of one row, gamma 2, 3 new tokens over a vocabulary of 4: the 64 sequences' frequencies against
    the target's exact probabilities (filters included)"""
    target, draft = tiny_pair(4)
    idx = torch.tensor([[1, 2]])
    generator = torch.Generator().manual_seed(0)
    samples = [tuple(speculative.speculative_generate(target, draft, idx, 3, 2, do_sample=True, generator=generator,
                                                      **settings)[0, 2:].tolist()) for _ in range(1500)]
    assert_follows(samples, exact_distribution(target, idx, 3, 4, **settings), f"sampling with {settings or 'T = 1'}")


@pytest.mark.task08_2
@pytest.mark.points(4)
def test_bad_input_gets_a_clear_error(speculative):
    """gamma < 1 or not an int, different vocabularies or tokenizers, a prompt beyond the draft's block_size,
    penalties: ValueError naming the problem"""
    _, target = twins()
    _, draft = twins(DRAFT, seed=1)
    idx = prompt(4)
    for gamma in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="gamma"):
            speculative.speculative_generate(target, draft, idx, 5, gamma)
    _, other_vocab = twins((1, 1, 16, 64, 50), seed=1)
    with pytest.raises(ValueError, match="vocab"):
        speculative.speculative_generate(target, other_vocab, idx, 5, 2)
    _, twin = twins(DRAFT, seed=1)
    target.tokenizer_name, twin.tokenizer_name = "gpt2", "char"
    with pytest.raises(ValueError, match="tokenizer"):
        speculative.speculative_generate(target, twin, idx, 5, 2)
    _, short = twins((1, 1, 16, 8, 97), seed=1)
    with pytest.raises(ValueError, match="block_size") as error:
        speculative.speculative_generate(target, short, idx, 5, 2)
    assert "draft" in str(error.value), f"the error must say that the draft's block_size is too short: {error.value}"
    with pytest.raises(ValueError, match="penalt"):
        speculative.speculative_generate(target, draft, idx, 5, 2, repetition_penalty=1.3)


# ---------------------------------------------------------------------------------------------- task08_3


def left_padded(prompts: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(p) for p in prompts)
    idx = torch.tensor([[pad] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    return idx, mask


PROMPTS = [[5, 17, 33, 2, 8], [44], [60, 61, 62], [7, 7, 7, 7, 7, 7, 7, 9]]


@pytest.mark.task08_3
@pytest.mark.points(5)
@pytest.mark.parametrize("gamma", [2, 4])
def test_each_row_of_a_left_padded_batch_equals_its_own_greedy_run(speculative, gamma):
    """4 prompts of lengths 5, 1, 3, 8 in one left-padded batch, an unrelated draft: row b equals
    GPT2LMHeadModel.generate on prompt b alone; rows accept different numbers of tokens in the same round"""
    hf, target = twins()
    _, draft = twins(DRAFT, seed=1)
    idx, mask = left_padded(PROMPTS)
    decoder = speculative.SpeculativeDecoder(target, draft, idx, 30, gamma, attention_mask=mask)
    differing = 0
    while not bool(decoder.finished.all()):
        step = decoder.step()
        differing += int(len(set(step.accepted[~decoder.finished].tolist())) > 1)
    out = decoder.output()
    assert differing, "test setup: no round where the rows accepted different numbers of tokens"
    for b, p in enumerate(PROMPTS):
        alone = hf_greedy(hf, torch.tensor([p]), 30)[0, len(p):]
        assert torch.equal(out[b, idx.size(1):], alone), (
            f"row {b} (a prompt of {len(p)} tokens, {idx.size(1) - len(p)} of padding) differs from its own run: "
            f"first difference at new token {int((out[b, idx.size(1):] != alone).nonzero()[0])}. Mask each row's "
            "rejected positions (holes) out of attention and out of its position ids, like padding")


@pytest.mark.task08_3
@pytest.mark.points(4)
def test_rows_end_at_their_own_end_of_text(speculative):
    """eos in a batch: each row is cut after its own end of text and padded after it; the others go on"""
    hf, target = twins()
    _, draft = twins(DRAFT, seed=1)
    runs = [hf_greedy(hf, torch.tensor([p]), 20)[0, len(p):].tolist() for p in PROMPTS]
    eos = runs[0][4]  # row 0 ends at its 5th new token; the others when (if) they produce it
    idx, mask = left_padded(PROMPTS)
    out = speculative.speculative_generate(target, draft, idx, 20, 3, attention_mask=mask, eos_token_id=eos,
                                           pad_token_id=96)
    for b, run in enumerate(runs):
        end = run.index(eos) + 1 if eos in run else 20
        got = out[b, idx.size(1):].tolist()
        assert got[:end] == run[:end] and all(t == 96 for t in got[end:]), (
            f"row {b}: expected {run[:end]} then padding (96), got {got}")


@pytest.mark.task08_3
@pytest.mark.points(3)
@pytest.mark.parametrize("settings", SETTINGS, ids=["plain", "temperature-top-k-top-p"])
def test_a_batch_of_sampled_rows_has_the_targets_exact_distribution(speculative, settings):
    """one batch of 6,000 rows of the same prompt, gamma 3: the rows' sequences follow the target's exact
    distribution, though every row accepts its own number of tokens per round"""
    target, draft = tiny_pair()
    idx = torch.tensor([[1, 2]]).expand(6000, -1).contiguous()
    out = speculative.speculative_generate(target, draft, idx, 3, 3, do_sample=True,
                                           generator=torch.Generator().manual_seed(1), **settings)
    samples = [tuple(row) for row in out[:, 2:].tolist()]
    assert_follows(samples, exact_distribution(target, idx[:1], 3, 5, **settings),
                   f"a batch sampled with {settings or 'T = 1'}")
