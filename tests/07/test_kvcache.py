"""Hidden tests for milestone 07, kvcache.py: the cache, the cached forward pass, padding masks, half precision.

The model is the *reference* milestone 05 GPT holding the weights of a seeded random `GPT2LMHeadModel`
(tests/05/hf_reference.py), with learned positions or RoPE. Its uncached forward pass, `model(idx)`, is the
reference: the cached logits must equal it within 1e-5 in float32, at every position up to the block size, token by
token and in chunks after a cache. Where a learner's output matches a realistic mistake (a top-left causal mask,
positions counted from the padding, a fully masked row that turns into NaN), the message names it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from llmfs.course import load_course
from llmfs.loader import load_module
from llmfs.testing import implementation_fixture, thresholds

kvcache = implementation_fixture("07", "kvcache")
COURSE = load_course()
gpt2 = load_module(COURSE.solutions, "05", "gpt2", COURSE.milestone("05").api["gpt2"])  # the reference 05
hf_ref = load_module(Path(__file__).resolve().parents[1], "05", "hf_reference")
LIMITS = thresholds("07")
ATOL = 1e-5  # float32: the cached and the full forward pass differ by rounding only (about 1e-6 here)
HALF_ATOL = {torch.bfloat16: 0.08, torch.float16: 0.01}  # cached vs uncached in the same dtype: 2x what we measure
MARGIN = 0.1  # top-1 agreement is counted where fp32's top-two gap exceeds this: nearer ties are coin flips in bf16

SHAPES = [  # (n_layer, n_head, n_embd, block_size, vocab_size)
    (1, 1, 16, 24, 11), (2, 2, 32, 64, 97), (3, 4, 48, 40, 257),
]
SHAPE_IDS = [f"L{s[0]}-H{s[1]}-C{s[2]}-T{s[3]}-V{s[4]}" for s in SHAPES]


def model_for(shape=(2, 2, 32, 64, 97), seed: int = 0, rope: bool = False) -> torch.nn.Module:
    """The reference 05 GPT with a seeded random HF GPT-2's weights (RoPE: the same weights without wpe)."""
    return hf_ref.ours_for(gpt2, hf_ref.random_hf_gpt2(*shape, seed=seed, scale=0.1), rope=rope)


def full_logits(model, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)[0].float()


def cached_logits(kvcache, model, idx: torch.Tensor, chunks: list[int], cache=None) -> torch.Tensor:
    """forward_cached over idx in chunks of the given sizes, one after the other, concatenated: (B, sum, V)."""
    cache = cache or kvcache.KVCache.for_model(model, idx.size(0))
    out, start = [], 0
    with torch.no_grad():
        for size in chunks:
            out.append(kvcache.forward_cached(model, idx[:, start:start + size], cache).float())
            start += size
    return torch.cat(out, dim=1)


def assert_close_logits(ours: torch.Tensor, expected: torch.Tensor, what: str, hint: str = "",
                        atol: float = ATOL, first_cached: int = 0) -> None:
    assert ours.shape == expected.shape, \
        f"{what}: logits of shape {tuple(ours.shape)}, expected {tuple(expected.shape)}"
    error = (ours - expected).abs().amax(dim=(0, 2))  # (T,): worst error at each position
    if torch.isnan(ours).any():
        positions = torch.isnan(ours).any(dim=(0, 2)).nonzero().flatten()[:8].tolist()
        pytest.fail(f"{what}: NaN in the logits at positions {positions}", pytrace=False)
    bad = (error > atol).nonzero().flatten()
    if len(bad):
        position = int(bad[0])
        kind = "in the first chunk (no cache before it)" if position < first_cached else "after the cache"
        pytest.fail(f"{what}: the logits at position {position} ({kind}) differ from the full forward pass by "
                    f"{float(error[position]):.3g} (at most {atol:g}); {len(bad)} of {len(error)} positions differ. "
                    f"{hint}", pytrace=False)


TOP_LEFT_HINT = ("A chunk of T > 1 new tokens after L cached positions needs the bottom-right causal mask: query i "
                 "(position L + i) sees keys 0..L + i. scaled_dot_product_attention(is_causal=True) and tril() of a "
                 "(T, S) matrix align it top-left (query i sees keys 0..i), which is right only when L = 0.")


# ---------------------------------------------------------------------------------------------- task07_1


@pytest.mark.task07_1
@pytest.mark.points(2)
def test_the_cache_is_preallocated_by_the_formula(kvcache):
    """KVCache(n_layer, B, nh, max_len, hs, dtype) holds k and v of shape (n_layer, B, nh, max_len, hs) from the start:
    2 * n_layer * B * max_len * n_embd * bytes, in float32 and bfloat16; length 0; a size < 1 is a ValueError"""
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        cache = kvcache.KVCache(3, 2, 4, 50, 8, dtype=dtype)
        assert cache.length == 0, "a new cache holds no position: length 0"
        for name in ("k", "v"):
            tensor = getattr(cache, name)
            assert tuple(tensor.shape) == (3, 2, 4, 50, 8) and tensor.dtype == dtype, (
                f"KVCache.{name} must be preallocated as (n_layer, B, nh, max_len, hs) = (3, 2, 4, 50, 8) in {dtype}, "
                f"got {tuple(tensor.shape)} in {tensor.dtype}")
        n_embd = 4 * 8
        assert cache.nbytes == 2 * 3 * 2 * 50 * n_embd * size, "the cache's memory is 2 n_layer B max_len n_embd bytes"
    for name, sizes in (("n_layer", (0, 1, 1, 4, 2)), ("max_len", (1, 1, 1, 0, 2)), ("batch_size", (1, -1, 1, 4, 2))):
        with pytest.raises(ValueError, match=name):
            kvcache.KVCache(*sizes)


@pytest.mark.task07_1
@pytest.mark.points(3)
def test_update_writes_by_position_and_returns_views(kvcache):
    """update(layer, k, v) writes at positions length.. and returns that layer's positions 0..length + T - 1 as views
    of the cache (no copy, no new tensor); length does not move in update; past max_len: ValueError naming max_len"""
    cache = kvcache.KVCache(2, 1, 2, 6, 4)
    storage = cache.k.data_ptr(), cache.v.data_ptr()
    k1, v1 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    keys, values = cache.update(1, k1, v1)
    assert cache.length == 0, "update must not move length: every layer writes at the same positions " \
                              "(forward_cached advances it once all layers have written)"
    assert keys.shape == (1, 2, 3, 4) and torch.equal(keys, k1) and torch.equal(values, v1)
    assert torch.equal(cache.k[1, :, :, :3], k1) and torch.equal(cache.v[1, :, :, :3], v1), \
        "update writes layer `layer`'s keys and values at positions length..length + T - 1 of cache.k / cache.v"
    assert not cache.k[0].any(), "update(1, ...) must not write into layer 0"
    cache.length = 3
    k2, v2 = torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4)
    keys, values = cache.update(1, k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], dim=2)) and torch.equal(values, torch.cat([v1, v2], dim=2)), \
        "after length = 3, update returns the 3 cached keys and values followed by the 2 new ones"
    assert keys.data_ptr() == cache.k[1].data_ptr() and (cache.k.data_ptr(), cache.v.data_ptr()) == storage, \
        "a static cache never reallocates: write into the preallocated k and v, return views (slices) of them"
    cache.length = 5
    with pytest.raises(ValueError, match="max_len"):
        cache.update(0, k2, v2)


@pytest.mark.task07_1
@pytest.mark.points(3)
def test_causal_mask_is_bottom_right(kvcache):
    """causal_mask(T, S): the last T of S positions as queries, query i sees keys 0..S - T + i; T = S is the usual
    lower triangle, T = 1 sees every key"""
    for T, S in ((1, 1), (1, 7), (3, 3), (3, 8), (5, 9), (8, 8)):
        ours = kvcache.causal_mask(T, S)
        expected = torch.tensor([[j <= S - T + i for j in range(S)] for i in range(T)])
        assert ours.dtype == torch.bool and ours.shape == (T, S), \
            f"causal_mask({T}, {S}) must be a (T, S) bool tensor, got {ours.dtype} {tuple(ours.shape)}"
        if not torch.equal(ours, expected):
            top_left = torch.ones(T, S, dtype=torch.bool).tril()
            hint = TOP_LEFT_HINT if torch.equal(ours, top_left) else "query i is position S - T + i"
            pytest.fail(f"causal_mask({T}, {S}) is wrong: {hint}", pytrace=False)


@pytest.mark.task07_1
@pytest.mark.points(2)
@pytest.mark.parametrize("rope", [False, True], ids=["learned-positions", "rope"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_token_by_token_equals_the_full_forward_pass(kvcache, shape, rope):
    """A prompt of 3 tokens, then one token at a time up to block_size: every position's logits equal model(idx)'s
    within 1e-5 (float32), with learned positions and with RoPE"""
    model = model_for(shape, seed=shape[0], rope=rope)
    idx = hf_ref.random_prompts(2, shape[3], shape[4], seed=1)
    chunks = [3] + [1] * (shape[3] - 3)
    assert_close_logits(cached_logits(kvcache, model, idx, chunks), full_logits(model, idx),
                        f"one token at a time, {'RoPE' if rope else 'learned positions'}",
                        "The new token's query attends to every cached key and its own; its position is the cache's "
                        "length (wpe, or RoPE's tables, at that position).", first_cached=3)


@pytest.mark.task07_1
@pytest.mark.points(3)
@pytest.mark.parametrize("rope", [False, True], ids=["learned-positions", "rope"])
def test_chunks_after_a_cache_equal_the_full_forward_pass(kvcache, rope):
    """Chunks of 5, 3, 1, 7, 16 and 32 tokens one after the other equal model(idx) within 1e-5: the bottom-right
    causal mask"""
    model = model_for((2, 2, 32, 64, 97), seed=3, rope=rope)
    idx = hf_ref.random_prompts(3, 64, 97, seed=2)
    assert_close_logits(cached_logits(kvcache, model, idx, [5, 3, 1, 7, 16, 32]), full_logits(model, idx),
                        "chunks of 5, 3, 1, 7, 16, 32 tokens", TOP_LEFT_HINT, first_cached=5)


@pytest.mark.task07_1
@pytest.mark.points(2)
def test_rollback_forgets_positions(kvcache):
    """Write 20 positions, roll back to 12, write 8 other tokens: the logits equal a fresh full forward pass of the new
    sequence (rollback is free: the next write overwrites); rolling forward or below 0 is a ValueError"""
    model = model_for(seed=4, rope=True)
    idx = hf_ref.random_prompts(2, 20, 97, seed=3)
    other = hf_ref.random_prompts(2, 8, 97, seed=4)
    cache = kvcache.KVCache.for_model(model, 2)
    with torch.no_grad():
        kvcache.forward_cached(model, idx, cache)
        assert cache.length == 20, "forward_cached adds the new tokens' positions to the cache's length"
        cache.rollback(12)
        assert cache.length == 12
        after = kvcache.forward_cached(model, other, cache)
    expected = full_logits(model, torch.cat([idx[:, :12], other], dim=1))[:, 12:]
    assert_close_logits(after, expected, "8 tokens after a rollback to 12",
                        "After rollback(12) the next tokens take positions 12.. and see keys 0..11 and their own.")
    for bad in (21, -1):
        with pytest.raises(ValueError):
            cache.rollback(bad)


@pytest.mark.task07_1
@pytest.mark.points(2)
def test_forward_cached_rejects_what_does_not_fit_and_keeps_the_cache(kvcache):
    """A chunk past max_len (or the block size) is a ValueError naming max_len, raised before anything is written: the
    cache's length and contents stay; last_only=True returns the last position's logits (B, 1, V) in float32"""
    model = model_for(seed=5)
    idx = hf_ref.random_prompts(2, 10, 97, seed=5)
    cache = kvcache.KVCache.for_model(model, 2, max_len=12)
    with torch.no_grad():
        last = kvcache.forward_cached(model, idx, cache, last_only=True)
        assert last.shape == (2, 1, 97) and last.dtype == torch.float32, \
            f"last_only=True returns float32 logits (B, 1, V) = (2, 1, 97), got {last.dtype} {tuple(last.shape)}"
        assert_close_logits(last, full_logits(model, idx)[:, -1:], "last_only=True")
        snapshot = cache.k.clone()
        with pytest.raises(ValueError, match="max_len"):
            kvcache.forward_cached(model, hf_ref.random_prompts(2, 3, 97), cache)
        assert cache.length == 10 and torch.equal(cache.k, snapshot), \
            "a chunk that does not fit must raise before any layer writes into the cache"


# ---------------------------------------------------------------------------------------------- task07_3


@pytest.mark.task07_3
@pytest.mark.points(2)
def test_position_ids_count_real_tokens_only(kvcache):
    """position_ids_from_mask: a row's first real token is at 0, the next at 1, ...; padding gets position 0"""
    _, mask = hf_ref.left_padded([5, 2, 4, 1], 97)
    expected = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 0, 1], [0, 0, 1, 2, 3], [0, 0, 0, 0, 0]])
    for as_type in (torch.long, torch.bool):
        ours = kvcache.position_ids_from_mask(mask.to(as_type))
        if torch.equal(ours, torch.arange(5).expand(4, 5)):
            pytest.fail("position_ids_from_mask counts the padding: under left padding a row's first real token must "
                        "be at position 0 (cumsum of the mask - 1)", pytrace=False)
        assert torch.equal(ours.long(), expected), f"position_ids_from_mask({mask.tolist()}) = {ours.tolist()}, " \
                                                   f"expected {expected.tolist()}"


@pytest.mark.task07_3
@pytest.mark.points(3)
def test_padded_causal_mask_never_sees_padding_and_never_an_empty_row(kvcache):
    """padded_causal_mask(mask, T): bottom-right causal AND a real key; every query also sees its own position, so no
    row is all False (a softmax over nothing is NaN)"""
    _, mask = hf_ref.left_padded([6, 3, 1], 97)
    for T in (6, 2, 1):
        ours = kvcache.padded_causal_mask(mask, T)
        assert ours.dtype == torch.bool and ours.shape == (3, 1, T, 6), \
            f"padded_causal_mask(mask (3, 6), {T}) must be a (B, 1, T, S) = (3, 1, {T}, 6) bool tensor"
        for b in range(3):
            for i in range(T):
                query = 6 - T + i
                for j in range(6):
                    allowed = j <= query and (bool(mask[b, j]) or j == query)
                    if bool(ours[b, 0, i, j]) != allowed:
                        why = ("a real query never sees a padding key" if j <= query and not mask[b, j] and j != query
                               else "every query sees its own position (a padding query sees only itself: a row with "
                               "no True makes the softmax NaN)" if j == query else "the causal mask is bottom-right")
                        pytest.fail(f"padded_causal_mask, row {b}, query {i} of {T} (position {query}), key {j}: "
                                    f"{bool(ours[b, 0, i, j])}, expected {allowed}: {why}", pytrace=False)


@pytest.mark.task07_3
@pytest.mark.points(3)
@pytest.mark.parametrize("rope", [False, True], ids=["learned-positions", "rope"])
def test_a_left_padded_batch_equals_each_prompt_alone(kvcache, rope):
    """forward_cached on a left-padded batch (prompts of 9, 4, 1 and 6 tokens, then 5 tokens one at a time) with the
    attention mask and position ids from the mask: each row's logits at real positions equal its prompt alone"""
    model = model_for(seed=6, rope=rope)
    lengths = [9, 4, 1, 6]
    idx, mask = hf_ref.left_padded(lengths, 97, seed=7)
    more = hf_ref.random_prompts(4, 5, 97, seed=8)
    cache = kvcache.KVCache.for_model(model, 4)
    positions = kvcache.position_ids_from_mask(mask)
    with torch.no_grad():
        steps = [kvcache.forward_cached(model, idx, cache, mask, positions)]
        for t in range(5):
            mask = torch.cat([mask, torch.ones(4, 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
            steps.append(kvcache.forward_cached(model, more[:, t:t + 1], cache, mask, positions))
    ours = torch.cat(steps, dim=1)
    for row, n in enumerate(lengths):
        alone = torch.cat([idx[row:row + 1, 9 - n:], more[row:row + 1]], dim=1)
        if torch.isnan(ours[row]).any():
            pytest.fail(f"row {row} (prompt of {n} after {9 - n} pads): NaN in the logits. A padding query whose mask "
                        "row is all False gives softmax(-inf, ..., -inf) = NaN, and the next layer spreads it: let "
                        "every query see its own position", pytrace=False)
        assert_close_logits(ours[row:row + 1, 9 - n:], full_logits(model, alone),
                            f"row {row} of a left-padded batch (a prompt of {n} after {9 - n} pads), "
                            f"{'RoPE' if rope else 'learned positions'}",
                            "Its positions must count its real tokens only (position_ids_from_mask) and its queries "
                            "must never see a padding key (padded_causal_mask).")


@pytest.mark.task07_3
@pytest.mark.points(3)
def test_no_nan_in_any_activation_under_padding(kvcache):
    """Every module's output under a left-padded batch, padding rows included, is free of NaN and inf (a forward hook
    on every module of the model)"""
    model = model_for(seed=9, shape=(3, 4, 48, 40, 257))
    idx, mask = hf_ref.left_padded([12, 2, 7], 257, seed=9)
    bad: list[str] = []

    def watch(name):
        def hook(_module, _args, output):
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all() \
                    and len(bad) < 5:
                bad.append(name)
        return hook

    handles = [m.register_forward_hook(watch(name)) for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            cache = kvcache.KVCache.for_model(model, 3)
            kvcache.forward_cached(model, idx, cache, mask, kvcache.position_ids_from_mask(mask))
    finally:
        for handle in handles:
            handle.remove()
    assert not bad, (f"NaN or inf in the output of {', '.join(bad)} under left padding: a padding query with no "
                     "allowed key gives softmax over all -inf = NaN, and 0 * NaN spreads it to real rows in the next "
                     "layer; let every query see its own position (padded_causal_mask)")


@pytest.mark.task07_3
@pytest.mark.points(1)
def test_forward_cached_rejects_a_mask_of_the_wrong_shape(kvcache):
    """attention_mask must be (B, S) for all S positions so far, position_ids (B, T): a ValueError naming them"""
    model = model_for(seed=10)
    idx, mask = hf_ref.left_padded([4, 2], 97)
    cache = kvcache.KVCache.for_model(model, 2)
    positions = kvcache.position_ids_from_mask(mask)
    with torch.no_grad():
        with pytest.raises(ValueError, match="attention_mask"):
            kvcache.forward_cached(model, idx, cache, mask[:, 1:], positions)
        with pytest.raises(ValueError, match="position_ids"):
            kvcache.forward_cached(model, idx, cache, mask, positions[:, 1:])
        assert cache.length == 0, "a rejected call must not advance the cache"


# ---------------------------------------------------------------------------------------------- task07_4


@pytest.mark.task07_4
@pytest.mark.points(2)
def test_check_dtype_names_what_cannot_run(kvcache):
    """check_dtype: float32, float16 and bfloat16 pass on the CPU; an integer dtype is a TypeError naming it; float8
    (no softmax on a CPU) is an error naming the dtype"""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        kvcache.check_dtype(dtype, "cpu")
    with pytest.raises(TypeError, match="int64"):
        kvcache.check_dtype(torch.int64, "cpu")
    with pytest.raises((ValueError, TypeError), match="float8"):
        kvcache.check_dtype(torch.float8_e4m3fn, "cpu")


@pytest.mark.task07_4
@pytest.mark.points(3)
def test_to_dtype_casts_weights_and_keeps_rope_tables_in_float32(kvcache):
    """to_dtype(model, bfloat16): every parameter in bfloat16, RoPE's cos and sin tables still float32 (cast after the
    position is picked), the cache made for it in bfloat16 at half the bytes; an int dtype is a TypeError"""
    model = kvcache.to_dtype(model_for(seed=11, rope=True), torch.bfloat16)
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.bfloat16}, f"to_dtype(model, bfloat16) leaves parameters in {dtypes}"
    assert model.rope_cos.dtype == model.rope_sin.dtype == torch.float32, \
        "keep RoPE's tables in float32: in bfloat16, cos and sin of large angles lose their precision before use"
    cache = kvcache.KVCache.for_model(model, 2)
    assert cache.k.dtype == torch.bfloat16 and cache.nbytes == 2 * 2 * 2 * 64 * 32 * 2
    with pytest.raises(TypeError):
        kvcache.to_dtype(model_for(seed=11), torch.int32)


@pytest.mark.task07_4
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("rope", [False, True], ids=["learned-positions", "rope"])
def test_half_precision_agrees_with_float32(kvcache, dtype, rope):
    """A half-precision model and cache, 20 prompt tokens then one at a time up to 128: float32 logits; within
    0.08 (bf16) / 0.01 (fp16) of the same model's uncached forward pass; the argmax equals fp32's at >= 99% of the
    positions where fp32's top two differ by more than 0.1"""
    shape = (2, 4, 64, 128, 257)
    reference = model_for(shape, seed=12, rope=rope)
    model = kvcache.to_dtype(copy.deepcopy(reference), dtype)
    idx = hf_ref.random_prompts(4, 128, 257, seed=12)
    ours = cached_logits(kvcache, model, idx, [20] + [1] * 108)
    with torch.no_grad():
        assert kvcache.forward_cached(model, idx[:, :1], kvcache.KVCache.for_model(model, 4)).dtype == torch.float32, \
            "forward_cached returns float32 logits whatever the model's dtype (sampling needs the precision)"
    uncached = full_logits(model, idx)
    assert_close_logits(ours, uncached, f"{dtype} cached against {dtype} uncached", atol=HALF_ATOL[dtype],
                        hint="In half precision, keep the cache in the model's dtype and compute as 05 does.")
    fp32 = full_logits(reference, idx)
    top2 = fp32.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > MARGIN
    agreement = (ours.argmax(-1) == fp32.argmax(-1))[clear].float().mean().item()
    assert agreement >= LIMITS["bf16_top1_agreement_min"], (
        f"{dtype}: the argmax equals float32's at {agreement:.1%} of the clear positions (at least "
        f"{LIMITS['bf16_top1_agreement_min']:.0%})")
