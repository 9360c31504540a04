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
    ### BEGIN SOLUTION
    r = (p - q).clamp(min=0)
    total = r.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, r / total.clamp(min=torch.finfo(r.dtype).tiny), p)
    ### END SOLUTION


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row of probs (B, V), chosen by the uniform draws u (B,) in [0, 1): the first index whose
    cumulative probability exceeds u times the total (`torch.searchsorted`). A token of probability 0 is never
    chosen, and the result is always a valid index, 0..V-1."""
    ### BEGIN SOLUTION
    cdf = probs.cumsum(dim=-1)  # (B, V)
    target = (u.to(cdf.dtype) * cdf[:, -1])[:, None]  # (B, 1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.size(-1) - 1)
    ### END SOLUTION


def verify(target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_tokens: torch.Tensor,
           uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rejection rule. target_probs (B, g+1, V), draft_probs (B, g, V), draft_tokens (B, g) (d_i drawn from
    draft_probs[:, i]), uniforms (B, g+1) in [0, 1) -> (accepted (B,) int64 in 0..g, next_token (B,) int64).

    Draft token i is accepted when uniforms[:, i] * q_i(d_i) < p_i(d_i); `accepted` counts the leading run of
    acceptances. The next token is `inverse_cdf` with uniforms[:, g] of the residual at the first rejected
    position, or of p_{g+1} when all g were accepted (the bonus token: the residual against q = 0).
    """
    ### BEGIN SOLUTION
    B, g = draft_tokens.shape
    p = target_probs[:, :g].gather(-1, draft_tokens[..., None]).squeeze(-1)  # (B, g): p_i(d_i)
    q = draft_probs.gather(-1, draft_tokens[..., None]).squeeze(-1)  # (B, g): q_i(d_i)
    ok = uniforms[:, :g] * q < p  # (B, g)
    accepted = ok.long().cumprod(dim=1).sum(dim=1)  # (B,): leading acceptances
    rows = torch.arange(B, device=draft_tokens.device)
    q_padded = F.pad(draft_probs, (0, 0, 0, 1))  # (B, g+1, V): q = 0 after the last draft token
    next_probs = residual(target_probs[rows, accepted], q_padded[rows, accepted])  # (B, V)
    return accepted, inverse_cdf(next_probs, uniforms[:, g])
    ### END SOLUTION


def verify_greedy(target_logits: torch.Tensor, draft_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification: target_logits (B, g+1, V) (or probabilities), draft_tokens (B, g) -> (accepted (B,),
    next_token (B,)): d_i is accepted while it equals the target's argmax at position i; the next token is the
    target's argmax at the first mismatch, or at position g+1 when all match."""
    ### BEGIN SOLUTION
    best = target_logits.argmax(dim=-1)  # (B, g+1)
    g = draft_tokens.size(1)
    accepted = (draft_tokens == best[:, :g]).long().cumprod(dim=1).sum(dim=1)  # (B,)
    return accepted, best.gather(1, accepted[:, None]).squeeze(1)
    ### END SOLUTION
