"""Milestone 06: logits processors, the small functions that turn a model's next-token logits into the
distribution you sample from; each matches a Hugging Face processor or the OpenAI API's formula (README.md).

Each takes logits (B, V) (B batch, T tokens so far, V vocabulary) and returns new logits (B, V), never changing
its input in place; a token that must never be drawn gets -inf. The checks are given (`check`, `check_tokens`).

    task06_1  apply_temperature
    task06_2  top_k_filter, top_p_filter
    task06_3  token_counts, repetition_penalty, presence_frequency_penalty
"""

from __future__ import annotations

import math

import torch

# The allowed values of each setting: what `check` accepts, and how its error describes them.
RULES = {
    "temperature": (lambda v: _is_number(v) and v > 0, "a finite number > 0 (for greedy decoding use do_sample=False)"),
    "top_k": (lambda v: _is_int(v) and v >= 1, "an int >= 1 (None turns top-k off)"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1] (1 turns top-p off)"),
    "min_tokens_to_keep": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "repetition_penalty": (lambda v: _is_number(v) and v > 0, "a finite number > 0 (1.0 means no penalty)"),
    "presence_penalty": (lambda v: _is_number(v) and -2 <= v <= 2, "a number in [-2, 2], the OpenAI API's range"),
    "frequency_penalty": (lambda v: _is_number(v) and -2 <= v <= 2, "a number in [-2, 2], the OpenAI API's range"),
}


def check(name: str, value: object) -> None:
    """Raise ValueError naming the setting and its allowed values when `value` breaks RULES[name]."""
    allowed, description = RULES[name]
    if not allowed(value):
        raise ValueError(f"{name} must be {description}, got {value!r}")


def check_tokens(tokens: torch.Tensor, vocab_size: int, mask: torch.Tensor | None) -> None:
    """Raise ValueError for a token id outside 0..vocab_size-1, or a mask whose shape is not the tokens'."""
    if mask is not None and mask.shape != tokens.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, tokens {tuple(tokens.shape)}: they must match")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must be in 0..{vocab_size - 1}, got {tokens.min().item()}..{tokens.max().item()}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

# ----------------------------------------------------------------------------------------------------
# task06_1: temperature


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature. Below 1 the distribution sharpens towards the argmax, above 1 it flattens
    towards uniform; 1 changes nothing.

    The given check accepts only a finite number > 0 (T -> 0 is greedy decoding, which
    `generate(do_sample=False)` does without dividing by 0).
    """
    check("temperature", temperature)
    ### BEGIN SOLUTION
    return logits / temperature
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task06_2: top-k and top-p (nucleus) filtering


def top_k_filter(logits: torch.Tensor, top_k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the max(top_k, min_tokens_to_keep) largest logits of each row and set the rest to -inf.

    Ties are kept: a token whose logit equals the k-th largest survives, so a row may keep more than k tokens
    (Hugging Face does the same). A k larger than V keeps everything.
    """
    check("top_k", top_k)
    check("min_tokens_to_keep", min_tokens_to_keep)
    ### BEGIN SOLUTION
    k = min(max(top_k, min_tokens_to_keep), logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))
    ### END SOLUTION


def top_p_filter(logits: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus sampling: keep the smallest set of most probable tokens whose probabilities add up to >= top_p,
    and set the rest to -inf.

    Sort each row's probabilities in descending order and walk down: a token is kept while the mass *before*
    it is still < top_p. So the token that crosses top_p is kept (with probabilities 0.5, 0.3, 0.2 and
    top_p = 0.6, the nucleus is {0.5, 0.3}: 0.5 alone falls short). At least `min_tokens_to_keep` tokens
    are kept. top_p = 1 keeps everything.
    """
    check("top_p", top_p)
    check("min_tokens_to_keep", min_tokens_to_keep)
    ### BEGIN SOLUTION
    if top_p == 1:
        return logits.clone()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    remove_sorted = mass_before >= top_p
    remove_sorted[..., :min_tokens_to_keep] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task06_3: penalties on tokens already in the text


def token_counts(tokens: torch.Tensor, vocab_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How often each token id occurs in each row: tokens (B, T) ids -> counts (B, V) as floats.

    `mask` (B, T) marks the real tokens with 1 (True) and the padding with 0: padding is never counted, even
    when the pad id is a real token id (GPT-2 pads with <|endoftext|>). Milestone 07 pads batches on the left.
    The given check rejects an id outside 0..V-1 and a mask of another shape.
    """
    check_tokens(tokens, vocab_size, mask)
    ### BEGIN SOLUTION
    if mask is None:
        mask = torch.ones_like(tokens, dtype=torch.bool)
    counts = torch.zeros(tokens.size(0), vocab_size, dtype=torch.float32, device=tokens.device)  # (B, V)
    return counts.scatter_add_(1, tokens, mask.to(torch.float32))
    ### END SOLUTION


def repetition_penalty(logits: torch.Tensor, tokens: torch.Tensor, penalty: float,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """CTRL's repetition penalty, as Hugging Face applies it: for every token id that occurs in `tokens` (B, T)
    (prompt and generated tokens alike), a positive logit is divided by `penalty` and a negative one multiplied
    by it, so with penalty > 1 a seen token always becomes less likely. Each id is penalized once, however
    often it occurs. Positions where `mask` is 0 are padding and do not count (see `token_counts`).
    """
    check("repetition_penalty", penalty)
    ### BEGIN SOLUTION
    seen = token_counts(tokens, logits.size(-1), mask) > 0  # (B, V)
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)
    ### END SOLUTION


def presence_frequency_penalty(logits: torch.Tensor, tokens: torch.Tensor, presence: float, frequency: float,
                               mask: torch.Tensor | None = None) -> torch.Tensor:
    """The OpenAI API's penalties: logit[j] - frequency * count[j] - presence * (count[j] > 0), where count[j]
    is how often token j occurs in `tokens` (B, T). The caller passes the *generated* tokens only, as the API
    counts them. Padding (mask 0) does not count. The API allows [-2, 2]; negative values encourage repetition.
    """
    check("presence_penalty", presence)
    check("frequency_penalty", frequency)
    ### BEGIN SOLUTION
    counts = token_counts(tokens, logits.size(-1), mask).to(logits.dtype)  # (B, V)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)
    ### END SOLUTION
