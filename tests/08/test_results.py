"""Hidden tests for milestone 08, results.py: the pair's numbers (task08_4).

alpha from distributions against a float64 loop over the vocabulary; the expected tokens per target pass against
the sum 1 + alpha + ... + alpha^gamma, and against a simulation of rounds; the predicted speed-up against its formula.
"""

from __future__ import annotations

import pytest
import torch

from llmfs.testing import implementation_fixture

results = implementation_fixture("08", "results")

pytestmark = pytest.mark.task08_4


@pytest.mark.points(3)
def test_acceptance_rate_is_the_mean_overlap_of_the_distributions(results):
    """acceptance_rate(p, q) = mean over positions of sum_x min(p(x), q(x)); 1 for p = q, 0 for disjoint"""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 7, 11, generator=g).softmax(-1)
    q = torch.rand(3, 7, 11, generator=g).pow(4).softmax(-1)
    expected = sum(min(a, b) for row_p, row_q in zip(p.double().reshape(-1, 11).tolist(),
                                                     q.double().reshape(-1, 11).tolist(), strict=True)
                   for a, b in zip(row_p, row_q, strict=True)) / 21
    got = results.acceptance_rate(p, q)
    assert abs(got - expected) < 1e-5, f"acceptance_rate = {got}, expected mean sum min(p, q) = {expected:.6f}"
    assert abs(results.acceptance_rate(p, p) - 1) < 1e-5, "identical distributions: every draft token is accepted"
    disjoint = torch.tensor([[0.5, 0.5, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    assert results.acceptance_rate(*disjoint) == pytest.approx(0.0), "disjoint distributions: alpha = 0"


@pytest.mark.points(4)
def test_expected_tokens_per_pass(results):
    """(1 - alpha^(gamma+1)) / (1 - alpha) = 1 + alpha + ... + alpha^gamma; gamma + 1 at alpha = 1; a simulation of
    200,000 rounds agrees; bad alpha or gamma: ValueError"""
    for alpha in (0.0, 0.3, 0.7, 0.9, 0.99):
        for gamma in (0, 1, 4, 8):
            expected = sum(alpha**i for i in range(gamma + 1))
            got = results.expected_tokens(alpha, gamma)
            assert got == pytest.approx(expected, rel=1e-9), (
                f"expected_tokens({alpha}, {gamma}) = {got}; a round yields 1 + alpha + ... + alpha^gamma = "
                f"{expected:.6f} tokens on average (the accepted run and one more)")
    assert results.expected_tokens(1.0, 5) == pytest.approx(6.0), "alpha = 1: every round yields gamma + 1 tokens"
    g = torch.Generator().manual_seed(0)
    accepts = torch.rand(200_000, 4, generator=g) < 0.6
    simulated = float(accepts.long().cumprod(dim=1).sum(dim=1).add(1).double().mean())
    assert results.expected_tokens(0.6, 4) == pytest.approx(simulated, abs=0.02), "the simulation disagrees"
    for alpha, gamma in ((-0.1, 2), (1.5, 2), (0.5, -1)):
        with pytest.raises(ValueError):
            results.expected_tokens(alpha, gamma)


@pytest.mark.points(3)
def test_predicted_speedup(results):
    """expected_tokens / (gamma c + v): cheaper drafts and better acceptance predict more"""
    for alpha, gamma, c, v in ((0.8, 4, 0.1, 1.2), (0.5, 2, 0.3, 1.0), (0.9, 8, 0.05, 1.5)):
        expected = sum(alpha**i for i in range(gamma + 1)) / (gamma * c + v)
        got = results.predicted_speedup(alpha, gamma, c, v)
        assert got == pytest.approx(expected, rel=1e-9), (
            f"predicted_speedup({alpha}, {gamma}, c={c}, v={v}) = {got}, expected E[tokens] / (gamma c + v) = "
            f"{expected:.4f}")
    assert results.predicted_speedup(0.8, 4, 0.1) == pytest.approx(
        results.expected_tokens(0.8, 4) / 1.4), "v defaults to 1 (a verification pass costs one target step)"
