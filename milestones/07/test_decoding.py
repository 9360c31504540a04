"""Public tests for milestone 07's generation: one or more per function, `pytest milestones/07 -k generate` or
`pytest milestones/07 -m task07_2` (then task07_3).

The reference is *your* milestone 06 `generate` (no cache) on a small GPT of *your* milestone 05: the cache must
not change a single token. The hidden tests compare with `GPT2LMHeadModel.generate` token for token, count what
reaches the model at each step, and time the cache at GPT-2 124M.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
decoding = implementation_fixture("07", "decoding", default_root=here)
gpt2 = implementation_fixture("05", "gpt2", default_root=here)  # your milestone 05
sampling = implementation_fixture("06", "sampling", default_root=here)  # your milestone 06


def small_gpt(gpt2) -> torch.nn.Module:
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig(block_size=32, vocab_size=50, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.task07_2
@pytest.mark.checks("prefill")
def test_prefill_fills_the_cache_and_gives_the_last_logits(decoding, gpt2):
    model = small_gpt(gpt2)
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    logits, cache = decoding.prefill(model, idx, 10)
    assert logits.shape == (2, 50) and cache.length == 3 and cache.max_len == 10
    with torch.no_grad():
        torch.testing.assert_close(logits, model(idx)[0][:, -1], atol=1e-5, rtol=0)


@pytest.mark.task07_2
@pytest.mark.checks("generate")
def test_greedy_with_the_cache_equals_06s_loop(decoding, gpt2, sampling):
    model = small_gpt(gpt2)
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    ours = decoding.generate(model, idx, 20)
    assert torch.equal(ours, sampling.generate(model, idx, 20)), "the cache changed the tokens"
    with pytest.raises(ValueError, match="block_size"):
        decoding.generate(model, idx, 30)  # 3 + 30 positions: more than block_size = 32


@pytest.mark.task07_2
@pytest.mark.checks("generate")
def test_seeded_sampling_with_the_cache_equals_06s_loop(decoding, gpt2, sampling):
    model = small_gpt(gpt2)
    idx = torch.tensor([[1, 2, 3]])
    settings = {"do_sample": True, "temperature": 0.8, "top_k": 20, "eos_token_id": 7}
    ours = decoding.generate(model, idx, 15, generator=torch.Generator().manual_seed(0), **settings)
    theirs = sampling.generate(model, idx, 15, generator=torch.Generator().manual_seed(0), **settings)
    assert torch.equal(ours, theirs)


@pytest.mark.task07_3
@pytest.mark.checks("left_pad")
def test_left_pad_builds_the_batch_and_its_mask(decoding):
    idx, mask = decoding.left_pad([[1, 2, 3, 4], [5], [6, 7]], pad_token_id=0)
    assert idx.dtype == torch.long and mask.dtype == torch.bool
    assert idx.tolist() == [[1, 2, 3, 4], [0, 0, 0, 5], [0, 0, 6, 7]]
    assert mask.tolist() == [[True] * 4, [False] * 3 + [True], [False] * 2 + [True] * 2]


@pytest.mark.task07_3
@pytest.mark.checks("check_attention_mask")
def test_check_attention_mask_rejects_right_padding(decoding):
    idx = torch.tensor([[1, 2, 3], [0, 4, 5]])
    assert decoding.check_attention_mask(idx, torch.tensor([[1, 1, 1], [0, 1, 1]])).dtype == torch.bool
    with pytest.raises(ValueError, match="attention_mask"):
        decoding.check_attention_mask(idx, torch.tensor([[1, 1, 1], [1, 1, 0]]))  # padding on the right
    with pytest.raises(ValueError, match="attention_mask"):
        decoding.check_attention_mask(idx, torch.tensor([[1, 1, 1], [0, 0, 0]]))  # a row without a real token


@pytest.mark.task07_3
@pytest.mark.checks("check_attention_mask")
def test_a_left_padded_batch_gives_each_prompt_its_own_tokens(decoding, gpt2):
    idx, mask = decoding.left_pad([[1, 2, 3, 4], [5]], pad_token_id=0)
    model = small_gpt(gpt2)
    out = decoding.generate(model, idx, 10, attention_mask=mask)
    assert torch.equal(out[0], decoding.generate(model, idx[:1], 10)[0])
    assert torch.equal(out[1, 4:], decoding.generate(model, idx[1:, 3:], 10)[0, 1:])
