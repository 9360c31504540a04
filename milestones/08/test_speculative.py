"""Public tests for milestone 08's loop: run `pytest milestones/08 -m task08_2` (then task08_3).

The target and the draft are small GPTs of *your* milestone 05 with random weights, and the reference is *your*
milestone 07 `generate`: greedy speculative decoding must give exactly the target's own greedy tokens. The hidden
tests compare with `GPT2LMHeadModel.generate`, check every round's logits against full forward passes of both
models, test the sampled distribution with a chi-square test, and time the course's trained pair.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
speculative = implementation_fixture("08", "speculative", default_root=here)
gpt2 = implementation_fixture("05", "gpt2", default_root=here)  # your milestone 05
decoding = implementation_fixture("07", "decoding", default_root=here)  # your milestone 07


def small_gpt(gpt2, n_layer: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = gpt2.GPT(gpt2.GPTConfig(block_size=64, vocab_size=50, n_layer=n_layer, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.task08_2
def test_greedy_equals_the_targets_own_greedy_tokens(speculative, gpt2, decoding):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    idx = torch.tensor([[1, 2, 3]])
    for gamma in (1, 3, 5):
        ours = speculative.speculative_generate(target, draft, idx, 30, gamma)
        assert torch.equal(ours, decoding.generate(target, idx, 30)), f"gamma={gamma}: not the target's tokens"


@pytest.mark.task08_2
def test_the_target_as_its_own_draft_yields_gamma_plus_one_tokens_per_pass(speculative, gpt2):
    target = small_gpt(gpt2, 2, 0)
    out, stats = speculative.speculative_generate(target, target, torch.tensor([[1, 2, 3]]), 20, 4,
                                                  return_stats=True)
    assert out.shape == (1, 23), "exactly max_new_tokens new tokens"
    assert stats.target_calls == 4, "every token accepted: 5 tokens per target pass, 4 passes for 20 tokens"


@pytest.mark.task08_2
def test_gamma_must_be_at_least_one(speculative, gpt2):
    target = small_gpt(gpt2, 2, 0)
    with pytest.raises(ValueError, match="gamma"):
        speculative.speculative_generate(target, target, torch.tensor([[1]]), 5, 0)


@pytest.mark.task08_3
def test_round_mask(speculative):
    assert speculative.round_mask(torch.tensor([0, 2, 3]), 3).tolist() == [
        [False, False, False], [True, True, False], [True, True, True]]


@pytest.mark.task08_3
def test_each_row_of_a_batch_equals_its_own_run(speculative, gpt2, decoding):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    idx, mask = decoding.left_pad([[1, 2, 3, 4], [5], [6, 7]], pad_token_id=0)
    out = speculative.speculative_generate(target, draft, idx, 15, 3, attention_mask=mask)
    for row, prompt in enumerate([[1, 2, 3, 4], [5], [6, 7]]):
        alone = decoding.generate(target, torch.tensor([prompt]), 15)[0, len(prompt):]
        assert torch.equal(out[row, idx.size(1):], alone), f"row {row} differs from its own run"
