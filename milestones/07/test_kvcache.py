"""Public tests for milestone 07's cache: run `pytest milestones/07 -m task07_1` (then task07_3, task07_4).

The model is a small GPT built with *your* milestone 05 `gpt2.py`, and the reference is its own uncached forward pass,
so these tests need your 05 done. The hidden tests use the reference 05 and check every position up to the block
size, with learned positions and RoPE, in chunks, after rollbacks, under left padding, and in half precision.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
kvcache = implementation_fixture("07", "kvcache", default_root=here)
gpt2 = implementation_fixture("05", "gpt2", default_root=here)  # your milestone 05


def small_gpt(gpt2, rope: bool = False) -> torch.nn.Module:
    """Your milestone 05 GPT, 2 layers, 2 heads, 32 channels, block 32, vocabulary 50, seeded."""
    torch.manual_seed(0)
    config = gpt2.GPTConfig(block_size=32, vocab_size=50, n_layer=2, n_head=2, n_embd=32, rope=rope)
    model = gpt2.GPT(config).eval()
    with torch.no_grad():  # weights large enough that every position matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.task07_1
def test_update_writes_by_position(kvcache):
    cache = kvcache.KVCache(n_layer=2, batch_size=1, n_head=2, max_len=8, head_size=4)
    assert cache.k.shape == (2, 1, 2, 8, 4) and cache.length == 0
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    keys, values = cache.update(0, k, v)
    assert torch.equal(keys, k) and torch.equal(values, v)
    cache.length = 3
    keys, _ = cache.update(0, k[:, :, :1], v[:, :, :1])
    assert keys.shape == (1, 2, 4, 4), "update returns positions 0..length + T - 1"
    cache.rollback(1)
    assert cache.length == 1


@pytest.mark.task07_1
def test_causal_mask_is_bottom_right(kvcache):
    assert kvcache.causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert torch.equal(kvcache.causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())


@pytest.mark.task07_1
@pytest.mark.parametrize("rope", [False, True], ids=["learned-positions", "rope"])
def test_cached_logits_equal_the_full_forward_pass(kvcache, gpt2, rope):
    kvcache.causal_mask(1, 1)  # a stub fails here, before your milestone 05 is needed
    model = small_gpt(gpt2, rope)
    idx = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(1))
    cache = kvcache.KVCache.for_model(model, 2)
    with torch.no_grad():
        expected = model(idx)[0]
        chunks = [kvcache.forward_cached(model, idx[:, :5], cache), kvcache.forward_cached(model, idx[:, 5:9], cache)]
        chunks += [kvcache.forward_cached(model, idx[:, t:t + 1], cache) for t in range(9, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(chunks, dim=1), expected, atol=1e-5, rtol=0)


@pytest.mark.task07_3
def test_positions_and_mask_under_left_padding(kvcache):
    mask = torch.tensor([[1, 1, 1], [0, 0, 1]])
    assert kvcache.position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    allowed = kvcache.padded_causal_mask(mask, 3)
    assert allowed.shape == (2, 1, 3, 3)
    assert allowed[1, 0].tolist() == [[True, False, False], [False, True, False], [False, False, True]], \
        "padding queries see only themselves (no empty row, no NaN); the real query sees no padding"


@pytest.mark.task07_4
def test_bfloat16_model_gives_float32_logits(kvcache, gpt2):
    with pytest.raises(TypeError):
        kvcache.check_dtype(torch.int64)
    model = kvcache.to_dtype(small_gpt(gpt2), torch.bfloat16)
    cache = kvcache.KVCache.for_model(model, 1)
    assert cache.k.dtype == torch.bfloat16
    with torch.no_grad():
        logits = kvcache.forward_cached(model, torch.tensor([[1, 2, 3]]), cache)
    assert logits.dtype == torch.float32
