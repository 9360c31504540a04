"""Public tests for milestone 08's numbers, one per function: `pytest milestones/08 -m task08_4` (or `-k alpha`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

results = implementation_fixture("08", "results", default_root=Path(__file__).resolve().parents[1])


@pytest.mark.task08_4
@pytest.mark.checks("acceptance_rate")
def test_acceptance_rate(results):
    p = torch.tensor([[0.5, 0.5, 0.0]])
    assert results.acceptance_rate(p, p) == pytest.approx(1.0)
    assert results.acceptance_rate(p, torch.tensor([[0.0, 0.5, 0.5]])) == pytest.approx(0.5)


@pytest.mark.task08_4
@pytest.mark.checks("expected_tokens")
def test_expected_tokens(results):
    assert results.expected_tokens(0.5, 2) == pytest.approx(1.75)  # 1 + 1/2 + 1/4
    assert results.expected_tokens(0.0, 3) == pytest.approx(1.0)  # only the target's own token
    assert results.expected_tokens(1.0, 4) == pytest.approx(5.0)


@pytest.mark.task08_4
@pytest.mark.checks("predicted_speedup")
def test_predicted_speedup(results):
    assert results.predicted_speedup(0.5, 2, c=0.1, v=1.0) == pytest.approx(1.75 / 1.2)
    assert results.predicted_speedup(0.0, 1, c=0.0) == pytest.approx(1.0)  # a free draft that is never right
