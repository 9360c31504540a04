"""Public tests for milestone 05, hellaswag.py (task05_7): `pytest milestones/05 -m task05_7`, or one function at
a time, e.g. `pytest milestones/05 -k render_example`.

The references are worked examples with a toy tokenizer (one id per character) and losses computed here. The hidden
tests score 50 real HellaSwag examples against scores recomputed from Hugging Face's logits.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
hellaswag = implementation_fixture("05", "hellaswag", default_root=here)
EXAMPLE = {"ctx": "A man", "endings": ["runs", "is a dog", "x", "sits down"], "label": 3}


def encode(s: str) -> list[int]:
    """Printable ASCII, one id per character: 0 is the space."""
    return [ord(c) - 32 for c in s]


@pytest.mark.task05_7
@pytest.mark.checks("render_example")
def test_render_example_rows_are_the_context_then_each_ending(hellaswag):
    tokens, mask, label = hellaswag.render_example(EXAMPLE, encode)
    assert label == 3 and tokens.shape == mask.shape == (4, 5 + 10)  # " sits down": 10 tokens, the longest
    for row, ending in enumerate(EXAMPLE["endings"]):
        ids = encode("A man") + encode(" " + ending)
        assert tokens[row].tolist() == ids + [0] * (15 - len(ids)), f"row {row}"
        assert mask[row].tolist() == [0] * 5 + [1] * (len(ids) - 5) + [0] * (15 - len(ids)), f"mask row {row}"


@pytest.mark.task05_7
@pytest.mark.checks("ending_losses")
def test_ending_losses_sum_and_average_the_endings_tokens(hellaswag):
    tokens, mask, _ = hellaswag.render_example(EXAMPLE, encode)
    logits = torch.randn(4, 15, 95, generator=torch.Generator().manual_seed(0))
    summed, mean = hellaswag.ending_losses(logits, tokens, mask)
    log_probs = logits.log_softmax(-1)
    for row in range(4):  # position t - 1 predicts token t, for every t of the ending
        losses = [-log_probs[row, t - 1, tokens[row, t]].item() for t in range(1, 15) if mask[row, t]]
        assert summed[row].item() == pytest.approx(sum(losses), rel=1e-5), f"row {row}: the summed loss"
        assert mean[row].item() == pytest.approx(sum(losses) / len(losses), rel=1e-5), f"row {row}: the mean"
    uniform = hellaswag.ending_losses(torch.zeros(4, 15, 95), tokens, mask)[1]
    torch.testing.assert_close(uniform, torch.full((4,), math.log(95)))


@pytest.mark.task05_7
@pytest.mark.checks("evaluate")
def test_evaluate_picks_the_ending_with_the_lowest_loss(hellaswag):
    def logits_of(tokens: torch.Tensor) -> torch.Tensor:  # "a" with logit 5 everywhere: "a" costs 0.49, others 5.49
        logits = torch.zeros(*tokens.shape, 95)
        logits[..., ord("a") - 32] = 5.0
        return logits

    examples = [{"ctx": "A man", "endings": ["aaaa", "bcd", "xyz", "aab"], "label": 0},
                # " b" sums to 2 x 5.49, 20 a's to 5.49 + 20 x 0.49 (more) but average 0.73 (less): acc misses it
                {"ctx": "A man", "endings": ["b", "c", "a" * 20, "d"], "label": 2}]
    assert hellaswag.evaluate(logits_of, examples, encode) == pytest.approx({"acc": 0.5, "acc_norm": 1.0, "n": 2})
    long = [{"ctx": "A man", "endings": ["b" * 20, "c" * 20, "a" * 20, "d" * 20], "label": 2}]  # 26 tokens a row

    def short_context(tokens: torch.Tensor) -> torch.Tensor:
        assert tokens.size(1) <= 8, "evaluate(max_len=8): keep the rows' last 8 tokens"
        return logits_of(tokens)

    assert hellaswag.evaluate(short_context, long, encode, max_len=8) == pytest.approx({"acc": 1, "acc_norm": 1, "n": 1})
