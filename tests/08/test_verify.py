"""Hidden tests for milestone 08, verify.py: the rejection rule (task08_1).

Hand-built cases whose answer follows from the rule on paper, then the theorem itself: for gamma = 1..4 and random
target and draft distributions (with zeros), 200,000 rounds of `verify` on draft tokens drawn from q must give
(a) at every position k, given that the round reached it, tokens distributed as the target's p_k, and (b) accepted
counts distributed as P(accepted >= k) = alpha_1 ... alpha_k with alpha_i = sum min(p_i, q_i). Each is Pearson's
chi-square test; a round of tests fails a correct `verify` with probability below 1e-6 (each test at 1e-6 divided by
the number of tests, a Bonferroni bound).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmfs.loader import load_module
from llmfs.testing import implementation_fixture, thresholds

verify = implementation_fixture("08", "verify")
stats = load_module(Path(__file__).resolve().parents[1], "06", "hf_processors")  # chi_square_p_value
LIMITS = thresholds("08")

pytestmark = pytest.mark.task08_1

P1 = torch.tensor([0.25, 0.25, 0.5])  # the target at position 1
Q1 = torch.tensor([0.5, 0.5, 0.0])  # the draft: d1 = 0 is accepted with probability p/q = 1/2
BONUS = torch.tensor([0.2, 0.3, 0.5])  # the target's distribution after the last draft token


def one_round(verify, u_accept: float, u_next: float, p_next: torch.Tensor = BONUS):
    target = torch.stack([P1, p_next])[None]  # (1, 2, 3)
    return verify.verify(target, Q1[None, None], torch.tensor([[0]]), torch.tensor([[u_accept, u_next]]))


@pytest.mark.points(2)
def test_residual_is_the_normalised_positive_part(verify):
    """residual(p, q) = max(0, p - q) / its sum; p itself where p <= q everywhere, and where q = 0"""
    torch.testing.assert_close(verify.residual(P1, Q1), torch.tensor([0.0, 0.0, 1.0]))
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.2, 0.6])
    torch.testing.assert_close(verify.residual(p, q), torch.tensor([0.75, 0.25, 0.0]))
    same = verify.residual(p, p.clone())
    assert torch.isfinite(same).all(), "residual(p, p) divided 0 by 0: where nothing is left, return p"
    torch.testing.assert_close(same, p)
    torch.testing.assert_close(verify.residual(p, torch.zeros(3)), p)
    batch = verify.residual(torch.stack([p, P1]), torch.stack([q, Q1]))
    assert batch.shape == (2, 3), f"residual must work row by row on (..., V), got shape {tuple(batch.shape)}"


@pytest.mark.points(2)
def test_inverse_cdf_picks_by_cumulative_probability_and_never_a_zero(verify):
    """inverse_cdf: the first token whose cumulative probability exceeds u; tokens of probability 0 never"""
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).expand(5, 4)
    got = verify.inverse_cdf(probs, torch.tensor([0.0, 0.2, 0.4999, 0.5, 0.999999])).tolist()
    assert got == [1, 1, 1, 3, 3], f"inverse_cdf on [0, 0.5, 0, 0.5] gave {got} for u = 0, 0.2, 0.4999, 0.5, " \
                                   "0.999999; expected [1, 1, 1, 3, 3]: a token of probability 0 is never chosen"
    unnormalised = verify.inverse_cdf(torch.tensor([[1.0, 3.0]]), torch.tensor([0.3]))
    assert unnormalised.tolist() == [1], "inverse_cdf must scale u by the row's total (here 4): 0.3 x 4 = 1.2 > 1"


@pytest.mark.points(3)
def test_a_draft_token_is_accepted_with_probability_p_over_q(verify):
    """p(d)/q(d) = 1/2: u = 0.4 accepts, u = 0.6 rejects; p >= q always accepts; p(d) = 0 always rejects"""
    accepted, _ = one_round(verify, 0.4, 0.1)
    assert accepted.tolist() == [1], "u = 0.4 < p/q = 0.5 must accept the draft token (accept when u q < p)"
    accepted, _ = one_round(verify, 0.6, 0.1)
    assert accepted.tolist() == [0], ("u = 0.6 >= p/q = 0.5 must reject the draft token: accept with probability "
                                      "min(1, p/q), not q/p or p")
    target = torch.tensor([[[0.6, 0.2, 0.2], [1.0, 0.0, 0.0]]])
    for u in (0.0, 0.5, 0.999):
        accepted, _ = verify.verify(target, Q1[None, None], torch.tensor([[0]]), torch.tensor([[u, 0.5]]))
        assert accepted.tolist() == [1], f"p(d) = 0.6 >= q(d) = 0.5 must always accept (u = {u} rejected it)"
    target = torch.tensor([[[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]])
    accepted, _ = verify.verify(target, Q1[None, None], torch.tensor([[0]]), torch.tensor([[0.0, 0.5]]))
    assert accepted.tolist() == [0], "p(d) = 0: the target never says d, so it must be rejected even for u = 0"


@pytest.mark.points(3)
def test_after_a_rejection_the_next_token_comes_from_the_residual(verify):
    """rejected d1 = 0: the residual max(0, p - q) is all on token 2, whatever the last uniform says"""
    for u_next in (0.01, 0.3, 0.6, 0.99):
        accepted, token = one_round(verify, 0.6, u_next)
        assert token.tolist() == [2], (
            f"after rejecting d1 = 0 the next token must be drawn from norm(max(0, p - q)) = [0, 0, 1], so it is 2; "
            f"got {token.tolist()} (u = {u_next})" + ("; that is a draw from p itself, which gives the draft's "
                                                      "tokens twice their share" if token.tolist() != [2] else ""))


@pytest.mark.points(3)
def test_when_every_draft_token_is_accepted_a_bonus_token_comes_from_the_last_target_position(verify):
    """all accepted: the next token is inverse_cdf(p_{g+1}, u_g): [0.2, 0.3, 0.5] with u = 0.1, 0.25, 0.9 -> 0, 1, 2"""
    for u_next, expected in ((0.1, 0), (0.25, 1), (0.9, 2)):
        accepted, token = one_round(verify, 0.1, u_next)
        assert accepted.tolist() == [1], "u = 0.1 < p/q = 0.5 must accept the draft token"
        assert token.tolist() == [expected], (
            f"every draft token was accepted, so the next token is the bonus token drawn from the target's last "
            f"position p_(g+1) = {BONUS.tolist()} with the last uniform {u_next}: {expected}; got {token.tolist()}")


@pytest.mark.points(2)
def test_verify_accepts_a_leading_run_row_by_row(verify):
    """accepted counts the *leading* acceptances: a rejection ends the round even if later tokens would pass"""
    V, g = 4, 4
    target = torch.full((2, g + 1, V), 0.25)
    draft = torch.full((2, g, V), 0.25)
    target[0, 1] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # row 0: d2 = 0 has p = 0
    tokens = torch.zeros(2, g, dtype=torch.long)
    accepted, token = verify.verify(target, draft, tokens, torch.full((2, g + 1), 0.5))
    assert accepted.dtype == torch.long and accepted.shape == (2,), "accepted must be an int64 tensor of shape (B,)"
    assert accepted.tolist() == [1, 4], (
        f"row 0 must accept d1 and reject d2 (p = 0), ending the round: accepted 1; row 1 accepts all 4; got "
        f"{accepted.tolist()}")
    assert token[0].item() == 1, "row 0's next token: the residual at position 2 is all on token 1"


@pytest.mark.points(3)
def test_greedy_verification_accepts_while_the_draft_matches_the_targets_argmax(verify):
    """verify_greedy: accepted = leading matches with the target's argmax; next = its argmax at the first mismatch,
    or at position g+1 when all match"""
    logits = torch.tensor([[[0.0, 5.0, 1.0], [3.0, 0.0, 1.0], [0.0, 1.0, 9.0], [2.0, 0.0, 1.0]]])  # argmax 1 0 2 0
    cases = [([1, 0, 2], 3, 0), ([1, 0, 1], 2, 2), ([2, 0, 2], 0, 1), ([1, 2, 2], 1, 0)]
    for draft, n, nxt in cases:
        accepted, token = verify.verify_greedy(logits, torch.tensor([draft]))
        assert (accepted.item(), token.item()) == (n, nxt), (
            f"draft {draft} against argmaxes [1, 0, 2] then 0: expected {n} accepted and next token {nxt}, got "
            f"{accepted.item()} and {token.item()}")


@pytest.mark.parametrize("gamma", [1, 2, 3, 4])
@pytest.mark.points(3)
def test_verified_tokens_have_exactly_the_targets_distribution(verify, gamma):
    """200,000 rounds: position k's tokens (where reached) follow p_k, accepted counts follow prod alpha_i
    (chi-square, a correct verify fails once in a million runs)"""
    g = torch.Generator().manual_seed(gamma)
    V, n = 6, 200_000
    p = torch.rand(gamma + 1, V, generator=g) ** 3
    q = torch.rand(gamma, V, generator=g) ** 3
    p[:, 0] = 0  # a token the target never says; the draft does
    q[:, 1] = 0  # a token the draft never says; the target does
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    draft_tokens = torch.multinomial(q, n, replacement=True, generator=g).T.contiguous()  # (n, gamma)
    uniforms = torch.rand(n, gamma + 1, generator=g)
    accepted, token = verify.verify(p.expand(n, -1, -1), q.expand(n, -1, -1), draft_tokens, uniforms)
    tests = gamma + 2
    limit = LIMITS["chi_square_p_min"] / tests
    produced = torch.cat([draft_tokens, torch.zeros(n, 1, dtype=torch.long)], dim=1)
    produced[torch.arange(n), accepted] = token  # the round's tokens: accepted drafts, then the next token
    for k in range(gamma + 1):
        reached = accepted >= k
        counts = torch.bincount(produced[reached, k], minlength=V).double()
        expected = p[k].double() * reached.sum()
        assert counts[~(p[k] > 0)].sum() == 0, (
            f"position {k + 1} produced token 0, which the target gives probability 0: a rejected token was kept or "
            "the next token was drawn from the draft")
        support = p[k] > 0
        p_value = stats.chi_square_p_value(counts[support], expected[support])
        assert p_value >= limit, (
            f"gamma={gamma}: the tokens at position {k + 1} do not follow the target's p_{k + 1} (chi-square p = "
            f"{p_value:.2g}): expected {[round(x, 3) for x in p[k].tolist()]}, got "
            f"{[round(x, 3) for x in (counts / counts.sum()).tolist()]}. On rejection draw from norm(max(0, p - q)), "
            "and after accepting all gamma draw the bonus token from the last target position")
    alpha = torch.minimum(p[:gamma], q).sum(-1).double()
    reach = torch.cat([torch.ones(1, dtype=torch.float64), alpha.cumprod(0)])  # P(accepted >= k), k = 0..gamma
    dist = torch.cat([reach[:-1] * (1 - alpha), reach[-1:]])  # P(accepted = k)
    counts = torch.bincount(accepted, minlength=gamma + 1).double()
    p_value = stats.chi_square_p_value(counts, dist * n)
    assert p_value >= limit, (
        f"gamma={gamma}: the accepted counts do not follow P(accepted = k) (chi-square p = {p_value:.2g}): expected "
        f"{[round(x, 3) for x in dist.tolist()]}, got {[round(x, 3) for x in (counts / n).tolist()]}. Accept draft "
        "token i when u_i q(d_i) < p(d_i), and stop at the first rejection")
