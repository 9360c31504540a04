"""Milestone 07: a static KV cache for milestone 05's GPT, exact against the full forward pass.

Past keys and values never change (attention is causal), so each layer keeps them in a cache preallocated for
max_len positions, and a step runs only the new tokens. A chunk of T new queries after L cached positions needs a
*bottom-right* causal mask. `forward_cached` walks 05's GPT module by module (its weights, your attention).
The README (The cache, Variable-length batches, Half precision) has the pictures and the pitfalls.

Shapes in the comments: B batch, T new tokens, L positions in the cache before them, S = L + T, C channels,
nh heads, hs head size (C / nh), V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F

# ----------------------------------------------------------------------------------------------------
# Checks of the arguments (given code): they raise before anything is written


def _check_sizes(**sizes: int) -> None:
    for name, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"KVCache: {name} must be an int >= 1, got {size!r}")


def _check_update(cache: KVCache, k: torch.Tensor, v: torch.Tensor) -> None:
    T = k.size(2)
    if cache.length + T > cache.max_len:
        raise ValueError(f"KVCache: {T} new positions after {cache.length} do not fit max_len={cache.max_len}")
    expected = (cache.k.size(1), cache.k.size(2), T, cache.k.size(4))
    if tuple(k.shape) != expected or tuple(v.shape) != expected:
        raise ValueError(f"KVCache.update: k and v must be (B, nh, T, hs) = {expected}, got "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")


def _check_rollback(cache: KVCache, length: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= cache.length:
        raise ValueError(f"KVCache.rollback: length must be an int in 0..{cache.length}, got {length!r}")


def _check_forward(idx: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None,
                   position_ids: torch.Tensor | None) -> None:
    (B, T), L = idx.shape, cache.length
    if L + T > cache.max_len:
        raise ValueError(f"forward_cached: {T} new tokens after {L} cached positions do not fit the cache's "
                         f"max_len={cache.max_len}")
    if B != cache.k.size(1):
        raise ValueError(f"forward_cached: idx has {B} rows, the cache {cache.k.size(1)}")
    if attention_mask is not None and attention_mask.shape != (B, L + T):
        raise ValueError(f"forward_cached: attention_mask must be (B, S) = {(B, L + T)}: one entry per position "
                         f"so far, cached and new; got {tuple(attention_mask.shape)}")
    if position_ids is not None and position_ids.shape != (B, T):
        raise ValueError(f"forward_cached: position_ids must be (B, T) = {(B, T)}, got {tuple(position_ids.shape)}")


# ----------------------------------------------------------------------------------------------------
# task07_1: the cache, the bottom-right causal mask, the cached forward pass


class KVCache:
    """Keys and values of every layer for positions 0..length-1, preallocated for max_len positions.

    `k` and `v` are (n_layer, B, nh, max_len, hs) tensors of `dtype` on `device`; `length` counts the positions
    written so far. `update` writes one layer's new keys and values at positions length, length + 1, ...;
    `forward_cached` advances `length` once every layer has written.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_size: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        """Allocate k and v (zeros) and set length = 0 (the sizes are checked for you)."""
        _check_sizes(n_layer=n_layer, batch_size=batch_size, n_head=n_head, max_len=max_len, head_size=head_size)
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 07: write `KVCache.__init__` in milestones/07/kvcache.py (see milestones/07/README.md)')

    @classmethod
    def for_model(cls, model: nn.Module, batch_size: int, max_len: int | None = None) -> KVCache:
        """A cache for `model` (05's GPT): its n_layer, n_head and head size, the dtype and device of its
        parameters, and max_len = block_size unless given (given code)."""
        c = model.config
        weight = model.transformer.wte.weight
        return cls(c.n_layer, batch_size, c.n_head, max_len or c.block_size, c.n_embd // c.n_head,
                   dtype=weight.dtype, device=weight.device)

    @property
    def max_len(self) -> int:
        return self.k.size(3)

    @property
    def nbytes(self) -> int:
        """Bytes held by the keys and values (given code)."""
        return self.k.nbytes + self.v.nbytes

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write layer `layer`'s new keys and values k, v (B, nh, T, hs) at positions length..length + T - 1 and
        return the layer's keys and values for positions 0..length + T - 1, each (B, nh, S, hs): views of the
        cache, no copy. `length` does not change here (every layer writes at the same positions).

        (The sizes are checked for you: ValueError when the T new positions do not fit max_len.)
        """
        _check_update(self, k, v)
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 07: write `KVCache.update` in milestones/07/kvcache.py (see milestones/07/README.md)')

    def rollback(self, length: int) -> None:
        """Forget every position from `length` on: the next update writes at `length`. Nothing is erased, so it
        costs nothing. (ValueError unless 0 <= length <= the current length: checked for you.)"""
        _check_rollback(self, length)
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 07: write `KVCache.rollback` in milestones/07/kvcache.py (see milestones/07/README.md)')


def causal_mask(T: int, S: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The bottom-right causal mask (T, S), True where attention is allowed: the T queries are the *last* T of
    the S positions, so query i (position S - T + i) sees keys 0..S - T + i.

    With T = S it is the usual lower triangle; with T = 1 a single row of True (a new token sees everything).
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `causal_mask` in milestones/07/kvcache.py (see milestones/07/README.md)')


def cached_attention(attn: nn.Module, x: torch.Tensor, cache: KVCache, layer: int,
                     rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """05's CausalSelfAttention `attn` on the new tokens x (B, T, C), with the cache: -> (B, T, C).

    q, k, v from attn.c_attn, split into attn.n_head heads (B, nh, T, hs); RoPE on q and k when `rope` = (cos, sin)
    gives the new positions' tables, (T, hs) or (B, 1, T, hs) (`rope_at`); the new k, v go into the cache, which
    returns all S keys and values; attention of the T queries over the S keys with `mask` (True = allowed;
    (T, S) or (B, 1, T, S)), or the bottom-right `causal_mask` when mask is None; heads joined; attn.c_proj.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `cached_attention` in milestones/07/kvcache.py (see milestones/07/README.md)')


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on x (B, nh, T, hs) with the tables of its positions, cos and sin (T, hs) or (B, 1, T, hs), as 05's
    apply_rope does at an offset (given code)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-x2, x1), dim=-1) * sin.to(x.dtype)


def rope_at(cos: torch.Tensor, sin: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's tables (max_len, hs) at the given positions: position_ids (T,) -> two (T, hs); (B, T) -> two
    (B, 1, T, hs), which broadcast over the heads in `rotate`."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `rope_at` in milestones/07/kvcache.py (see milestones/07/README.md)')


def forward_cached(model: nn.Module, idx: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
    """Logits (B, T, V) of 05's GPT `model` for the new tokens idx (B, T), after the cache's `length` positions;
    their keys and values are added to the cache and its length grows by T.

    Without masks, the new tokens take positions L..L + T - 1 (L = cache.length). For left-padded batches
    (task07_3), `attention_mask` (B, S) marks the real tokens among all S positions so far and `position_ids`
    (B, T) gives each new token its position: the attention then uses `padded_causal_mask`.
    Embeddings (wte, plus wpe or RoPE's tables via `rope_at`), every block as 05's Block does but with
    `cached_attention`, ln_f, lm_head. last_only=True: the last position's logits only, (B, 1, V). The logits
    come back in float32, whatever the model's dtype. (The shapes are checked for you, before anything is written.)
    """
    _check_forward(idx, cache, attention_mask, position_ids)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `forward_cached` in milestones/07/kvcache.py (see milestones/07/README.md)')


# ----------------------------------------------------------------------------------------------------
# task07_3: variable-length batches (left padding)


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions (B, S) from a left-padding mask (B, S) of 1 (real) and 0 (padding): a row's first real token is
    at position 0, the next at 1, ...: cumsum - 1. Padding gets position 0 (any valid position would do: nothing
    attends to it)."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `position_ids_from_mask` in milestones/07/kvcache.py (see milestones/07/README.md)')


def padded_causal_mask(mask: torch.Tensor, T: int) -> torch.Tensor:
    """The attention mask (B, 1, T, S) for the last T of S positions, from a padding mask (B, S) (1 real, 0 pad):
    bottom-right causal AND the key is a real token, True where allowed.

    Every query also sees its own position, even a padding query: a row of the mask with no True at all makes
    the softmax 0 / 0 = NaN, and a NaN in one position's output reaches every position of the next layer that
    multiplies it by a zero weight (0 * NaN = NaN). No real query ever sees padding.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `padded_causal_mask` in milestones/07/kvcache.py (see milestones/07/README.md)')


# ----------------------------------------------------------------------------------------------------
# task07_4: half precision

def check_dtype(dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
    """Raise TypeError naming the dtype unless it is a torch floating-point dtype (float32, float16, bfloat16 are
    the ones worth running), and ValueError naming the dtype and the device when the device cannot run a matrix
    product and a softmax in it: try both on a 2 x 2 tensor (float8 types fail on a CPU, bfloat16 on old GPUs)."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `check_dtype` in milestones/07/kvcache.py (see milestones/07/README.md)')


def to_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The model cast to dtype for inference (check_dtype first, on the device of its parameters); returns it.

    RoPE's tables stay float32: they are cast to the activations' dtype when used, after the position is picked.
    A KVCache made with `KVCache.for_model` then follows the model's dtype.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `to_dtype` in milestones/07/kvcache.py (see milestones/07/README.md)')
