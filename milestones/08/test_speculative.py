"""Public tests for milestone 08's loop: one or more per function, `pytest milestones/08 -k propose` or
`pytest milestones/08 -m task08_2` (then task08_3).

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


def full_logits(model, seq):
    """The uncached reference: the logits (1, T, V) of a full forward pass over seq (1, T)."""
    with torch.no_grad():
        return model(seq)[0]


@pytest.mark.task08_2
@pytest.mark.checks("SpeculativeDecoder.propose")
def test_propose_gives_the_drafts_greedy_tokens_and_logits(speculative, gpt2):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    idx = torch.tensor([[1, 2, 3]])
    decoder = speculative.SpeculativeDecoder(target, draft, idx, 10, 3)
    tokens, logits, q = decoder.propose(3)
    seq, expected = idx, []
    for _ in range(3):  # the draft's greedy continuation, one full forward pass per token
        expected.append(full_logits(draft, seq)[:, -1])
        seq = torch.cat([seq, expected[-1].argmax(dim=-1, keepdim=True)], dim=1)
    assert q is None, "greedy: no distributions"
    assert torch.equal(tokens, seq[:, 3:]), "the draft's greedy tokens"
    torch.testing.assert_close(logits, torch.stack(expected, dim=1), atol=1e-5, rtol=0)
    assert torch.equal(decoder.seq[:, 3:6], tokens) and decoder.mask[0, :6].all()
    assert decoder.length == 3 and decoder.draft_cache.length == 5, "the draft never feeds its last token"


@pytest.mark.task08_2
@pytest.mark.checks("SpeculativeDecoder.propose")
def test_propose_when_sampling_returns_the_drafts_distributions(speculative, gpt2):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    idx = torch.tensor([[1, 2, 3]])
    decoder = speculative.SpeculativeDecoder(target, draft, idx, 10, 2, do_sample=True, temperature=0.7,
                                             generator=torch.Generator().manual_seed(0))
    tokens, logits, q = decoder.propose(2)
    assert q.shape == (1, 2, 50)
    full = full_logits(draft, torch.cat([idx, tokens], dim=1))[:, 2:4]  # the logits at the two draft positions
    torch.testing.assert_close(q, (full / 0.7).softmax(dim=-1), atol=1e-5, rtol=0)


@pytest.mark.task08_2
@pytest.mark.checks("SpeculativeDecoder.score")
def test_score_gives_the_targets_logits_in_one_pass(speculative, gpt2):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    decoder = speculative.SpeculativeDecoder(target, draft, torch.tensor([[1, 2, 3]]), 10, 2)
    tokens, _, _ = decoder.propose(2)
    logits = decoder.score(2)
    expected = full_logits(target, decoder.seq[:, :5])[:, 2:5]  # the pending token and the two draft tokens
    assert logits.shape == (1, 3, 50) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert decoder.target_cache.length == 5 and decoder.stats.target_calls == 1


@pytest.mark.task08_2
@pytest.mark.checks("SpeculativeDecoder.commit")
def test_commit_keeps_the_accepted_tokens_and_rolls_both_caches_back(speculative, gpt2):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    decoder = speculative.SpeculativeDecoder(target, draft, torch.tensor([[1, 2, 3]]), 10, 3)
    tokens, _, _ = decoder.propose(3)
    decoder.score(3)
    decoder.commit(torch.tensor([1]), torch.tensor([7]))  # d1 accepted, d2 rejected, 7 follows
    assert decoder.length == 5 and decoder.seq[0, 3:5].tolist() == [tokens[0, 0].item(), 7]
    assert decoder.target_cache.length == 4 and decoder.draft_cache.length == 4, "both caches end before 7"
    assert decoder.produced.tolist() == [2] and not decoder.finished.any()
    tokens, _, _ = decoder.propose(3)
    decoder.score(3)
    decoder.commit(torch.tensor([3]), torch.tensor([9]))  # all accepted, and the bonus token
    assert decoder.length == 9 and decoder.seq[0, 5:9].tolist() == [*tokens[0].tolist(), 9]
    assert decoder.target_cache.length == 8 and decoder.draft_cache.length == 7, "the draft never fed d3"
    assert decoder.produced.tolist() == [6]


@pytest.mark.task08_2
@pytest.mark.checks("SpeculativeDecoder.commit")
def test_commit_ends_a_row_at_its_end_of_text_or_at_max_new_tokens(speculative, gpt2):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    decoder = speculative.SpeculativeDecoder(target, draft, torch.tensor([[1, 2, 3]]), 10, 2, eos_token_id=7)
    decoder.propose(2)
    decoder.score(2)
    decoder.commit(torch.tensor([0]), torch.tensor([7]))
    assert decoder.finished.tolist() == [True], "eos_token_id among the new tokens ends the row"
    decoder = speculative.SpeculativeDecoder(target, draft, torch.tensor([[1, 2, 3]]), 2, 1)
    decoder.propose(1)
    decoder.score(1)
    decoder.commit(torch.tensor([1]), torch.tensor([5]))
    assert decoder.finished.tolist() == [True], "max_new_tokens = 2 tokens produced"


@pytest.mark.task08_2
@pytest.mark.checks("speculative_generate")
def test_greedy_equals_the_targets_own_greedy_tokens(speculative, gpt2, decoding):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    idx = torch.tensor([[1, 2, 3]])
    for gamma in (1, 3, 5):
        ours = speculative.speculative_generate(target, draft, idx, 30, gamma)
        assert torch.equal(ours, decoding.generate(target, idx, 30)), f"gamma={gamma}: not the target's tokens"


@pytest.mark.task08_2
@pytest.mark.checks("speculative_generate")
def test_the_target_as_its_own_draft_yields_gamma_plus_one_tokens_per_pass(speculative, gpt2):
    target = small_gpt(gpt2, 2, 0)
    out, stats = speculative.speculative_generate(target, target, torch.tensor([[1, 2, 3]]), 20, 4,
                                                  return_stats=True)
    assert out.shape == (1, 23), "exactly max_new_tokens new tokens"
    assert stats.target_calls == 4, "every token accepted: 5 tokens per target pass, 4 passes for 20 tokens"


@pytest.mark.task08_2
@pytest.mark.checks("speculative_generate")
def test_gamma_must_be_at_least_one(speculative, gpt2):
    target = small_gpt(gpt2, 2, 0)
    with pytest.raises(ValueError, match="gamma"):
        speculative.speculative_generate(target, target, torch.tensor([[1]]), 5, 0)


@pytest.mark.task08_3
@pytest.mark.checks("round_mask")
def test_round_mask(speculative):
    assert speculative.round_mask(torch.tensor([0, 2, 3]), 3).tolist() == [
        [False, False, False], [True, True, False], [True, True, True]]


@pytest.mark.task08_3
@pytest.mark.checks("round_mask")
def test_each_row_of_a_batch_equals_its_own_run(speculative, gpt2, decoding):
    target, draft = small_gpt(gpt2, 2, 0), small_gpt(gpt2, 1, 1)
    idx, mask = decoding.left_pad([[1, 2, 3, 4], [5], [6, 7]], pad_token_id=0)
    out = speculative.speculative_generate(target, draft, idx, 15, 3, attention_mask=mask)
    for row, prompt in enumerate([[1, 2, 3, 4], [5], [6, 7]]):
        alone = decoding.generate(target, torch.tensor([prompt]), 15)[0, len(prompt):]
        assert torch.equal(out[row, idx.size(1):], alone), f"row {row} differs from its own run"
