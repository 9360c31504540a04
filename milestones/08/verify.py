"""Milestone 08: the rule that makes speculative decoding exact (Leviathan et al. 2023; Chen et al. 2023).

The draft proposes d_1..d_gamma, d_i drawn from q_i; the target's one pass gives p_1..p_{gamma+1}. Left to right,
accept d_i with probability min(1, p_i(d_i) / q_i(d_i)) (draw u ~ U[0, 1): accept when u q < p). The first
rejection, at i, ends the round with a token from the *residual* norm(max(0, p_i - q_i)); if all are accepted, a
*bonus* token comes from p_{gamma+1}. Each token then has exactly the target's distribution (README: The rule).
Greedy: accept while d_i is the target's argmax; the next token is the target's argmax at the first mismatch.
The random draws are inputs (`uniforms`), so `verify` is a pure function. Shapes: B rows, g draft tokens, V vocab.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# ----------------------------------------------------------------------------------------------------
# task08_1: verification


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) along the last dimension: p, q (..., V) -> (..., V), each row summing to 1.

    Where p <= q everywhere (p == q: then nothing is ever rejected), the sum is 0: return p there, never 0 / 0.
    With q = 0 the residual is p itself: that is how `verify` draws the bonus token.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 08: write `residual` in milestones/08/verify.py (see milestones/08/README.md)')


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row of probs (B, V), chosen by the uniform draws u (B,) in [0, 1): the first index whose
    cumulative probability exceeds u times the total (`torch.searchsorted`). A token of probability 0 is never
    chosen, and the result is always a valid index, 0..V-1."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 08: write `inverse_cdf` in milestones/08/verify.py (see milestones/08/README.md)')


def verify(target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_tokens: torch.Tensor,
           uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rejection rule. target_probs (B, g+1, V), draft_probs (B, g, V), draft_tokens (B, g) (d_i drawn from
    draft_probs[:, i]), uniforms (B, g+1) in [0, 1) -> (accepted (B,) int64 in 0..g, next_token (B,) int64).

    Draft token i is accepted when uniforms[:, i] * q_i(d_i) < p_i(d_i); `accepted` counts the leading run of
    acceptances. The next token is `inverse_cdf` with uniforms[:, g] of the residual at the first rejected
    position, or of p_{g+1} when all g were accepted (the bonus token: the residual against q = 0).
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 08: write `verify` in milestones/08/verify.py (see milestones/08/README.md)')


def verify_greedy(target_logits: torch.Tensor, draft_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification: target_logits (B, g+1, V) (or probabilities), draft_tokens (B, g) -> (accepted (B,),
    next_token (B,)): d_i is accepted while it equals the target's argmax at position i; the next token is the
    target's argmax at the first mismatch, or at position g+1 when all match."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 08: write `verify_greedy` in milestones/08/verify.py (see milestones/08/README.md)')
