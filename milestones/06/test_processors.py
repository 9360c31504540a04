"""Public tests for milestone 06's processors: `pytest milestones/06 -m task06_2` for a task, or
`pytest milestones/06 -k top_p` for one function (each test is marked @pytest.mark.checks("...") too).

Small examples worked by hand. A test of a function uses only it and the functions written before it. The hidden tests run each processor on (8, 50257) random logits against the
matching `transformers` logits processor, and the OpenAI formula for presence and frequency penalties.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
processors = implementation_fixture("06", "processors", default_root=here)
INF = float("-inf")


@pytest.mark.task06_1
@pytest.mark.checks("apply_temperature")
def test_apply_temperature_divides(processors):
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    torch.testing.assert_close(processors.apply_temperature(logits, 0.5), torch.tensor([[4.0, -2.0, 1.0]]))
    with pytest.raises(ValueError, match="temperature"):
        processors.apply_temperature(logits, 0.0)


@pytest.mark.task06_2
@pytest.mark.checks("top_k_filter")
def test_top_k_keeps_ties_with_the_kth(processors):
    logits = torch.tensor([[5.0, 3.0, 3.0, 1.0]])
    assert processors.top_k_filter(logits, 2).tolist() == [[5.0, 3.0, 3.0, INF]]
    assert processors.top_k_filter(logits, 1, min_tokens_to_keep=3).tolist() == [[5.0, 3.0, 3.0, INF]]


@pytest.mark.task06_2
@pytest.mark.checks("top_p_filter")
def test_top_p_keeps_the_token_that_crosses_p(processors):
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()  # probabilities 0.5, 0.3, 0.2
    out = processors.top_p_filter(logits, 0.6)
    assert (out > INF).tolist() == [[True, True, False]], "0.5 alone is < 0.6: the nucleus is {0.5, 0.3}"
    assert (processors.top_p_filter(logits, 0.4) > INF).tolist() == [[True, False, False]]
    assert torch.equal(processors.top_p_filter(logits, 1.0), logits)


@pytest.mark.task06_3
@pytest.mark.checks("token_counts")
def test_token_counts_count_each_row_and_skip_padding(processors):
    tokens = torch.tensor([[3, 2, 2, 2], [0, 0, 1, 3]])
    counts = processors.token_counts(tokens, 5)
    assert counts.dtype == torch.float32
    assert counts.tolist() == [[0, 0, 3, 1, 0], [2, 1, 0, 1, 0]]  # counted by hand
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])  # left padding: 3 in row 0 and both 0s in row 1 do not count
    assert processors.token_counts(tokens, 5, mask).tolist() == [[0, 0, 3, 0, 0], [0, 1, 0, 1, 0]]
    with pytest.raises(ValueError):
        processors.token_counts(tokens, 3)  # id 3 is outside 0..2 (a given check)


@pytest.mark.task06_3
@pytest.mark.checks("repetition_penalty")
def test_repetition_penalty_divides_positive_and_multiplies_negative(processors):
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    tokens = torch.tensor([[0, 1, 1, 1]])  # id 1 three times: penalized once
    torch.testing.assert_close(processors.repetition_penalty(logits, tokens, 2.0),
                               torch.tensor([[1.0, -4.0, 1.0, -1.0]]))
    mask = torch.tensor([[0, 1, 1, 1]])  # position 0 is padding: id 0 is not penalized
    torch.testing.assert_close(processors.repetition_penalty(logits, tokens, 2.0, mask),
                               torch.tensor([[2.0, -4.0, 1.0, -1.0]]))


@pytest.mark.task06_3
@pytest.mark.checks("presence_frequency_penalty")
def test_presence_frequency_penalty_counts_and_skips_padding(processors):
    logits = torch.zeros(1, 4)
    tokens = torch.tensor([[3, 2, 2, 2]])
    out = processors.presence_frequency_penalty(logits, tokens, presence=0.5, frequency=0.25)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, -1.25, -0.75]]))  # - 0.25 * count - 0.5 * [count > 0]
    mask = torch.tensor([[0, 1, 1, 1]])  # position 0 is padding: id 3 does not count
    out = processors.presence_frequency_penalty(logits, tokens, 0.5, 0.25, mask)
    assert out[0, 3].item() == 0.0
    assert math.isclose(out[0, 2].item(), -1.25)
