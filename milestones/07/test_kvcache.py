"""Public tests for milestone 07's cache: one or more per function, `pytest milestones/07 -k rope_at` or
`pytest milestones/07 -m task07_1` (then task07_3, task07_4).

The model is a small GPT built with *your* milestone 05 `gpt2.py`, and the reference is its own uncached forward pass,
so the model tests need your 05 done. The hidden tests use the reference 05 and check every position up to the block
size, with learned positions and RoPE, in chunks, after rollbacks, under left padding, and in half precision.
"""

from __future__ import annotations

import math
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


# ---------------------------------------------------------------------------------------------- task07_1

@pytest.mark.task07_1
@pytest.mark.checks("KVCache.__init__")
def test_init_preallocates_zeros(kvcache):
    cache = kvcache.KVCache(n_layer=2, batch_size=3, n_head=2, max_len=8, head_size=4, dtype=torch.float64)
    assert cache.k.shape == cache.v.shape == (2, 3, 2, 8, 4), "k and v: (n_layer, B, nh, max_len, hs)"
    assert cache.k.dtype == torch.float64 and cache.length == 0
    assert not cache.k.any() and not cache.v.any()
    assert cache.nbytes == 2 * 2 * 3 * 8 * (2 * 4) * 8, "2 x n_layer x B x max_len x n_embd x bytes"
    with pytest.raises(ValueError, match="max_len"):
        kvcache.KVCache(2, 1, 2, 0, 4)


@pytest.mark.task07_1
@pytest.mark.checks("KVCache.update")
def test_update_writes_by_position_and_returns_views(kvcache):
    cache = kvcache.KVCache(n_layer=2, batch_size=1, n_head=2, max_len=8, head_size=4)
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    keys, values = cache.update(1, k, v)
    assert torch.equal(keys, k) and torch.equal(values, v) and cache.length == 0, "update does not move length"
    assert torch.equal(cache.k[1, :, :, :3], k) and not cache.k[0].any(), "layer 1 at positions 0..2"
    assert keys.data_ptr() == cache.k[1].data_ptr(), "a view of the cache, not a copy"
    cache.length = 3
    k2, v2 = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    keys, _ = cache.update(1, k2, v2)
    assert keys.shape == (1, 2, 4, 4), "update returns positions 0..length + T - 1"
    assert torch.equal(keys, torch.cat([k, k2], dim=2))


@pytest.mark.task07_1
@pytest.mark.checks("KVCache.rollback")
def test_rollback_moves_length_back_only(kvcache):
    cache = kvcache.KVCache(n_layer=1, batch_size=1, n_head=1, max_len=8, head_size=2)
    cache.update(0, torch.ones(1, 1, 5, 2), torch.ones(1, 1, 5, 2))
    cache.length = 5
    cache.rollback(2)
    assert cache.length == 2
    keys, _ = cache.update(0, torch.full((1, 1, 1, 2), 7.0), torch.zeros(1, 1, 1, 2))
    assert keys[0, 0, :, 0].tolist() == [1.0, 1.0, 7.0], "the next update writes at the rolled-back length"
    with pytest.raises(ValueError):
        cache.rollback(3)  # beyond the current length


@pytest.mark.task07_1
@pytest.mark.checks("causal_mask")
def test_causal_mask_is_bottom_right(kvcache):
    assert kvcache.causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert torch.equal(kvcache.causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())
    assert kvcache.causal_mask(1, 5).all()


class Attention(torch.nn.Module):
    """What cached_attention uses of 05's CausalSelfAttention: c_attn, c_proj and n_head."""

    def __init__(self, C: int = 8, n_head: int = 2) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.c_attn, self.c_proj, self.n_head = torch.nn.Linear(C, 3 * C), torch.nn.Linear(C, C), n_head


def reference_attention(attn, x, rope=None):
    """Causal attention over the whole x (B, T, C), written out with torch: the uncached reference."""
    B, T, C = x.shape
    q, k, v = (t.view(B, T, attn.n_head, -1).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
    if rope is not None:
        cos, sin = rope

        def rotate(t):
            t1, t2 = t.chunk(2, dim=-1)
            return t * cos + torch.cat((-t2, t1), dim=-1) * sin
        q, k = rotate(q), rotate(k)
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


@pytest.mark.task07_1
@pytest.mark.checks("cached_attention")
@pytest.mark.parametrize("rope", [False, True], ids=["no-rope", "rope"])
def test_cached_attention_in_chunks_equals_full_causal_attention(kvcache, rope):
    attn = Attention()
    x = torch.randn(2, 7, 8, generator=torch.Generator().manual_seed(2))
    angles = torch.outer(torch.arange(7.0), torch.tensor([1.0, 0.1])).repeat(1, 2)  # (T, hs): RoPE's tables
    cos, sin = angles.cos(), angles.sin()
    cache = kvcache.KVCache(n_layer=2, batch_size=2, n_head=2, max_len=10, head_size=4)
    with torch.no_grad():
        expected = reference_attention(attn, x, (cos, sin) if rope else None)
        chunks = []
        for start, end in ((0, 4), (4, 5), (5, 7)):
            at = (cos[start:end], sin[start:end]) if rope else None
            chunks.append(kvcache.cached_attention(attn, x[:, start:end], cache, 1, at))
            cache.length = end  # forward_cached does this once every layer has written
    torch.testing.assert_close(torch.cat(chunks, dim=1), expected, atol=1e-5, rtol=0)
    assert not cache.k[0].any() and cache.k[1, :, :, :7].any(), "keys written into layer 1 only"


@pytest.mark.task07_1
@pytest.mark.checks("rope_at")
def test_rope_at_picks_the_rows_of_the_positions(kvcache):
    hs = 4
    inv = 1.0 / 10000 ** (torch.arange(0, hs, 2) / hs)
    angles = torch.outer(torch.arange(10.0), inv).repeat(1, 2)  # (10, hs): the table of positions 0..9
    cos, sin = angles.cos(), angles.sin()
    c, s = kvcache.rope_at(cos, sin, torch.tensor([3, 1]))
    assert c.shape == (2, hs) and math.isclose(c[0, 1].item(), math.cos(3 * 0.01), abs_tol=1e-6)
    assert math.isclose(s[1, 0].item(), math.sin(1.0), abs_tol=1e-6)
    c, s = kvcache.rope_at(cos, sin, torch.tensor([[0, 2, 4], [1, 1, 9]]))
    assert c.shape == s.shape == (2, 1, 3, hs), "(B, T) positions: (B, 1, T, hs), broadcast over the heads"
    assert math.isclose(s[1, 0, 2, 0].item(), math.sin(9.0), abs_tol=1e-6)


@pytest.mark.task07_1
@pytest.mark.checks("forward_cached")
@pytest.mark.parametrize("rope", [False, True], ids=["learned-positions", "rope"])
def test_cached_logits_equal_the_full_forward_pass(kvcache, gpt2, rope):
    model = small_gpt(gpt2, rope)
    idx = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(1))
    cache = kvcache.KVCache.for_model(model, 2)
    with torch.no_grad():
        expected = model(idx)[0]
        chunks = [kvcache.forward_cached(model, idx[:, :5], cache), kvcache.forward_cached(model, idx[:, 5:9], cache)]
        chunks += [kvcache.forward_cached(model, idx[:, t:t + 1], cache) for t in range(9, 20)]
        last = kvcache.forward_cached(model, idx[:, :3], kvcache.KVCache.for_model(model, 2), last_only=True)
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(chunks, dim=1), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(last, model(idx[:, :3])[0][:, -1:], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- task07_3

@pytest.mark.task07_3
@pytest.mark.checks("position_ids_from_mask")
def test_positions_count_real_tokens_only(kvcache):
    mask = torch.tensor([[1, 1, 1], [0, 0, 1], [0, 1, 1]])
    assert kvcache.position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 1]]


@pytest.mark.task07_3
@pytest.mark.checks("padded_causal_mask")
def test_padded_causal_mask_hides_padding_and_keeps_every_row_nonempty(kvcache):
    mask = torch.tensor([[1, 1, 1], [0, 0, 1]])
    allowed = kvcache.padded_causal_mask(mask, 3)
    assert allowed.shape == (2, 1, 3, 3)
    assert torch.equal(allowed[0, 0], torch.ones(3, 3, dtype=torch.bool).tril())
    assert allowed[1, 0].tolist() == [[True, False, False], [False, True, False], [False, False, True]], \
        "padding queries see only themselves (no empty row, no NaN); the real query sees no padding"
    assert kvcache.padded_causal_mask(torch.tensor([[0, 1, 1, 1]]), 1)[0, 0].tolist() == [[False, True, True, True]]


# ---------------------------------------------------------------------------------------------- task07_4

@pytest.mark.task07_4
@pytest.mark.checks("check_dtype")
def test_check_dtype_refuses_what_is_not_a_float(kvcache):
    kvcache.check_dtype(torch.float32)
    kvcache.check_dtype(torch.bfloat16)
    with pytest.raises(TypeError, match="int64"):
        kvcache.check_dtype(torch.int64)


@pytest.mark.task07_4
@pytest.mark.checks("to_dtype")
def test_bfloat16_model_gives_float32_logits(kvcache, gpt2):
    model = kvcache.to_dtype(small_gpt(gpt2, rope=True), torch.bfloat16)
    assert model.transformer.wte.weight.dtype == torch.bfloat16
    assert model.rope_cos.dtype == torch.float32, "RoPE's tables stay float32"
    cache = kvcache.KVCache.for_model(model, 1)
    assert cache.k.dtype == torch.bfloat16
    with torch.no_grad():
        logits = kvcache.forward_cached(model, torch.tensor([[1, 2, 3]]), cache)
    assert logits.dtype == torch.float32
