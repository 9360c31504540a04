"""Public tests for milestone 06's `generate` and sampler: run `pytest milestones/06 -m task06_1` (then task06_4),
or `pytest milestones/06 -k sample_next_token` for one function (each test is marked @pytest.mark.checks("...")).

They use a toy model written here (a lookup table of next-token logits), so they run in milliseconds and do not
need your milestone 05. The hidden tests compare `generate` with `GPT2LMHeadModel.generate` token for token,
greedy and seeded sampling, on the reference milestone 05 GPT.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
sampling = implementation_fixture("06", "sampling", default_root=here)


class TableModel(nn.Module):
    """Next-token logits from a (V, V) table indexed by the previous token: a bigram model with GPT's interface."""

    def __init__(self, vocab_size: int = 6, block_size: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size, vocab_size=vocab_size)
        self.table = nn.Embedding(vocab_size, vocab_size)
        nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(seed))
        self.lm_head = nn.Identity()
        self.longest = 0

    def forward(self, idx, targets=None):
        self.longest = max(self.longest, idx.size(1))
        if idx.size(1) > self.config.block_size:
            raise ValueError("longer than block_size")
        return self.lm_head(self.table(idx)), None


def greedy_by_hand(model: TableModel, idx: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        idx = torch.cat([idx, model.table.weight[idx[:, -1]].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.task06_1
@pytest.mark.checks("generate")
def test_generate_greedy_follows_the_argmax_and_crops_the_context(sampling):
    model = TableModel()
    idx = torch.tensor([[0], [3]])
    out = sampling.generate(model, idx, 12)
    assert out.shape == (2, 13)
    assert torch.equal(out, greedy_by_hand(model, idx, 12))
    assert model.longest == 8, "the context must be cropped to the last block_size tokens"


@pytest.mark.task06_1
@pytest.mark.checks("generate")
def test_generate_stops_each_row_at_end_of_text(sampling):
    model = TableModel()
    idx = torch.tensor([[0], [3]])
    free = greedy_by_hand(model, idx, 6)
    eos = int(free[0, 2])  # row 0 produces it at its second new token
    out = sampling.generate(model, idx, 6, eos_token_id=eos, pad_token_id=5)
    row0 = out[0, 1:].tolist()
    assert row0[:2] == free[0, 1:3].tolist()
    assert all(t == 5 for t in row0[2:]), "after end-of-text a row gets the pad id"
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampling.generate(model, idx, -1)


@pytest.mark.task06_4
@pytest.mark.checks("process_logits")
def test_process_logits_divides_by_temperature_before_the_nucleus(sampling):
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    config = sampling.SamplingConfig(do_sample=True, temperature=0.25, top_p=0.6)
    out = sampling.process_logits(logits, torch.tensor([[0]]), 1, config)
    # at T = 0.25 the probabilities are about 0.87, 0.11, 0.02: the first token alone reaches 0.6
    assert (out > float("-inf")).tolist() == [[True, False, False]]


@pytest.mark.task06_4
@pytest.mark.checks("process_logits")
def test_process_logits_penalizes_in_order_and_warps_only_when_sampling(sampling):
    logits = torch.tensor([[2.0, -1.0, 1.0, 0.5]])
    tokens = torch.tensor([[0, 1, 2, 2]])  # a prompt of 2 tokens (0, 1), then 2 generated twice
    config = sampling.SamplingConfig(repetition_penalty=2.0, frequency_penalty=0.25, temperature=0.5, top_k=1)
    out = sampling.process_logits(logits, tokens, 2, config)
    # repetition over all four tokens: 2 / 2, -1 * 2, 1 / 2; then frequency over the generated ones: 0.5 - 0.25 * 2
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0, 0.0, 0.5]]))


@pytest.mark.task06_4
@pytest.mark.checks("sample_next_token")
def test_sample_next_token_draws_from_the_softmax(sampling):
    logits = torch.tensor([[0.0, float("-inf"), 1.0], [2.0, 2.0, float("-inf")]])
    picks = torch.stack([sampling.sample_next_token(logits, torch.Generator().manual_seed(s)) for s in range(200)])
    assert picks.shape == (200, 2)
    assert set(picks[:, 0].tolist()) == {0, 2} and set(picks[:, 1].tolist()) == {0, 1}  # never a token at -inf
    expected = torch.multinomial(torch.softmax(logits, dim=-1), 1,  # the specified draw, by hand
                                 generator=torch.Generator().manual_seed(7)).squeeze(1)
    assert torch.equal(sampling.sample_next_token(logits, torch.Generator().manual_seed(7)), expected)


@pytest.mark.task06_4
@pytest.mark.checks("sample_next_token")
def test_sample_next_token_is_seeded_and_never_draws_a_filtered_token(sampling):
    model = TableModel()
    idx = torch.tensor([[0], [1], [2]])
    settings = dict(do_sample=True, top_k=2)
    first = sampling.generate(model, idx, 20, generator=torch.Generator().manual_seed(0), **settings)
    again = sampling.generate(model, idx, 20, generator=torch.Generator().manual_seed(0), **settings)
    assert torch.equal(first, again)
    top2 = model.table.weight.topk(2, dim=-1).indices
    for row in first.tolist():
        for prev, nxt in zip(row, row[1:], strict=False):
            assert nxt in top2[prev].tolist(), f"token {nxt} after {prev} is not among the top 2"
