"""Public tests for milestone 08's rejection rule: run `pytest milestones/08 -m task08_1`.

Each checks one function on a case you can work out on paper. The hidden tests add the theorem itself: 200,000
rounds whose tokens must follow the target's distribution exactly (a chi-square test), for gamma = 1..4.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

verify = implementation_fixture("08", "verify", default_root=Path(__file__).resolve().parents[1])

P = torch.tensor([0.25, 0.25, 0.5])  # the target at the draft token's position
Q = torch.tensor([0.5, 0.5, 0.0])  # the draft: token 0 is accepted with probability p/q = 1/2


@pytest.mark.task08_1
@pytest.mark.checks("residual")
def test_residual(verify):
    torch.testing.assert_close(verify.residual(P, Q), torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(verify.residual(P, P.clone()), P)  # nothing left: p itself, not 0 / 0


@pytest.mark.task08_1
@pytest.mark.checks("inverse_cdf")
def test_inverse_cdf(verify):
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).expand(3, 4)
    assert verify.inverse_cdf(probs, torch.tensor([0.0, 0.3, 0.7])).tolist() == [1, 1, 3]


@pytest.mark.task08_1
@pytest.mark.checks("verify")
def test_verify_accepts_rejects_and_adds_the_bonus_token(verify):
    target = torch.stack([P, torch.tensor([0.2, 0.3, 0.5])])[None]  # (1, 2, 3): gamma = 1
    draft, tokens = Q[None, None], torch.tensor([[0]])
    accepted, token = verify.verify(target, draft, tokens, torch.tensor([[0.4, 0.9]]))  # 0.4 x 0.5 < 0.25
    assert (accepted.item(), token.item()) == (1, 2), "accepted, then the bonus token from the last position"
    accepted, token = verify.verify(target, draft, tokens, torch.tensor([[0.6, 0.1]]))  # 0.6 x 0.5 >= 0.25
    assert (accepted.item(), token.item()) == (0, 2), "rejected: the residual max(0, p - q) is all on token 2"


@pytest.mark.task08_1
@pytest.mark.checks("verify_greedy")
def test_verify_greedy(verify):
    logits = torch.tensor([[[0.0, 5.0, 1.0], [3.0, 0.0, 1.0], [0.0, 1.0, 9.0]]])  # argmax 1, 0, 2
    accepted, token = verify.verify_greedy(logits, torch.tensor([[1, 2]]))
    assert (accepted.item(), token.item()) == (1, 0)
