"""References for milestone 06's hidden tests (loaded with llmfs.loader.load_module, never shipped to learners).

The exact references are Hugging Face's logits processors, run here on the same logits as the learner's code.
Beside them are float64 recomputations that say where float32 rounding may legitimately decide a token either
way (the top-p boundary), and the outputs of realistic mistakes, so a failing test can say which mistake the
learner's output matches ("drops the token that crosses p", "temperature after top-p", "padding counted").
"""

from __future__ import annotations

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

BOUNDARY_TOLERANCE = 1e-5  # float32 cumulative sums over 50,257 tokens agree with float64 to ~1e-6


def hf_top_k(logits: torch.Tensor, k: int, keep: int = 1) -> torch.Tensor:
    return TopKLogitsWarper(top_k=k, min_tokens_to_keep=keep)(None, logits)


def hf_top_p(logits: torch.Tensor, p: float, keep: int = 1) -> torch.Tensor:
    return TopPLogitsWarper(top_p=p, min_tokens_to_keep=keep)(None, logits)


def hf_repetition(logits: torch.Tensor, tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    return RepetitionPenaltyLogitsProcessor(penalty=float(penalty))(tokens, logits)


def hf_chain(logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
             top_p: float = 1.0, repetition_penalty: float = 1.0, order: tuple[str, ...] = ("rep", "temp", "k", "p"),
             keep: int = 1) -> torch.Tensor:
    """Hugging Face's processors of generate(do_sample=True); `order` rearranges them to model a mistake."""
    make = {"rep": lambda: repetition_penalty != 1 and RepetitionPenaltyLogitsProcessor(float(repetition_penalty)),
            "temp": lambda: temperature != 1 and TemperatureLogitsWarper(float(temperature)),
            "k": lambda: top_k is not None and TopKLogitsWarper(top_k, min_tokens_to_keep=keep),
            "p": lambda: top_p < 1 and TopPLogitsWarper(float(top_p), min_tokens_to_keep=keep)}
    processors = LogitsProcessorList([p for p in (make[name]() for name in order) if p])
    return processors(tokens, logits.clone())


def top_p_decisions(logits: torch.Tensor, p: float, keep: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """In float64, for each token: whether the nucleus keeps it (the mass of the tokens ranked above it is < p,
    or it is among the first `keep`), and whether that decision is within float32 noise of the boundary."""
    probs = logits.double().softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    kept = before < p
    kept[..., :keep] = True
    close = (before - p).abs() <= BOUNDARY_TOLERANCE
    close[..., :keep] = False
    return kept.scatter(-1, order, kept), close.scatter(-1, order, close)


def mistaken_top_p(logits: torch.Tensor, p: float) -> dict[str, torch.Tensor]:
    """The masks (True = kept) of top-p mistakes learners make, in float64."""
    probs = logits.double().softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    upto = sorted_probs.cumsum(dim=-1)
    variants = {
        "drops the token whose probability crosses top_p (keep it: the nucleus is the smallest set whose mass "
        "reaches top_p, so it includes that token)": upto < p,
        "keeps one token too many (a token is kept only while the mass before it is < top_p)": upto - sorted_probs <= p,
    }
    return {what: kept.scatter(-1, order, kept) for what, kept in variants.items()}


def describe_mask_difference(name: str, ours: torch.Tensor, expected: torch.Tensor,
                             ambiguous: torch.Tensor | None = None) -> str | None:
    """None when the masks (True = kept) agree outside `ambiguous`; else which row differs and how."""
    differ = ours != expected
    if ambiguous is not None:
        differ &= ~ambiguous
    if not differ.any():
        return None
    row = int(differ.any(dim=-1).nonzero()[0])
    extra = (ours[row] & ~expected[row]).nonzero().flatten().tolist()[:5]
    missing = (expected[row] & ~ours[row]).nonzero().flatten().tolist()[:5]
    return (f"{name}: row {row} keeps {_tokens(ours[row])} where Hugging Face keeps {_tokens(expected[row])} "
            f"(kept but should be -inf: ids {extra}; set to -inf but should be kept: ids {missing})")


def _tokens(kept: torch.Tensor) -> str:
    n = int(kept.sum())
    return f"{n} token" if n == 1 else f"{n} tokens"


def counts_by_loop(tokens: torch.Tensor, vocab_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Token counts (B, V) with plain Python loops: the independent reference for the penalties."""
    counts = torch.zeros(tokens.size(0), vocab_size, dtype=torch.float64)
    for b, row in enumerate(tokens.tolist()):
        for t, token in enumerate(row):
            if mask is None or bool(mask[b, t]):
                counts[b, token] += 1
    return counts


def openai_penalties(logits: torch.Tensor, counts: torch.Tensor, presence: float, frequency: float) -> torch.Tensor:
    """The OpenAI API's formula, as its documentation writes it: mu[j] - c[j] * a_freq - float(c[j] > 0) * a_pres."""
    return logits.double() - counts * frequency - (counts > 0).double() * presence


def chi_square_p_value(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's chi-square test of counts against expected counts: the upper tail of chi2(df = cells - 1),
    Q(df/2, x/2) with torch's regularized incomplete gamma function."""
    statistic = ((observed - expected) ** 2 / expected).sum()
    df = observed.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), statistic / 2))
