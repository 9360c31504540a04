"""Milestone 02, part 1: a character-level GPT, built one piece at a time.

Each position looks back at every earlier position through self-attention. The pieces, in order:

    task02_1  causal_self_attention, Head                one head of self-attention
    task02_2  MultiHeadAttention                         several heads side by side, and a projection
    task02_3  FeedForward                                a two-layer network applied at each position
    task02_4  LayerNorm, Block                           normalisation from scratch; residual connections
    task02_5  GPT.forward, GPT.generate                  the whole language model

Shapes: B batch, T time, C channels (n_embd), nh heads, hs head size (C // nh), V vocabulary. Check one
function with `pytest milestones/02 -k head_forward`, a task with `-m task02_1` (README.md has the loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

# ----------------------------------------------------------------------------------------------------
# task02_1: one head of causal self-attention


def causal_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """Scaled dot-product attention in which position t attends only to positions 0..t.

    q, k, v: (..., T, hs), any leading dimensions (B, or B and nh). Returns (..., T, hs):

        scores  = q @ k^T / sqrt(hs)                     (..., T, T), how much t "asks for" each position
        scores[..., t, s] = -inf wherever s > t          the future is masked out
        weights = softmax(scores, dim=-1), then F.dropout(weights, dropout, training=True) if dropout > 0
        out     = weights @ v                            with dropout 0: F.scaled_dot_product_attention
    """
    ### BEGIN SOLUTION
    T, hs = q.shape[-2], q.shape[-1]
    scores = (q / math.sqrt(hs)) @ k.transpose(-2, -1)  # (..., T, T); scaling q first touches T*hs numbers, not T*T
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(diagonal=1)  # True above the diagonal
    scores.masked_fill_(future, float("-inf"))  # in place: the matmul's backward needs q and k, not its output
    weights = F.softmax(scores, dim=-1)  # (..., T, T)
    if dropout > 0:
        weights = F.dropout(weights, p=dropout, training=True)
    return weights @ v  # (..., T, hs)
    ### END SOLUTION


class Head(nn.Module):
    """One head of self-attention: each position emits a query ("what am I looking for"), a key ("what do
    I contain") and a value ("what I pass on"), all linear functions of its embedding."""

    def __init__(self, n_embd: int, head_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, n_embd) -> (B, T, head_size): causal_self_attention of the query, key and value
        projections of x, with attention dropout `self.dropout` in training mode and none in eval mode."""
        ### BEGIN SOLUTION
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, hs) each
        return causal_self_attention(q, k, v, self.dropout if self.training else 0.0)
        ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task02_2: several heads in parallel


class MultiHeadAttention(nn.Module):
    """`n_head` heads of size n_embd // n_head, computed together, their outputs concatenated and mixed by a
    linear projection. Instead of a list of Head modules, one (n_embd, n_embd) projection makes the
    queries of all heads at once; a reshape splits its n_embd outputs into n_head groups of hs.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.query = nn.Linear(n_embd, n_embd, bias=False)
        self.key = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(n_embd, n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C).

        Channels h*hs .. (h+1)*hs - 1 of query(x), key(x) and value(x) belong to head h. Run
        causal_self_attention on all heads at once as (B, nh, T, hs) tensors (attention dropout
        `self.dropout` in training mode only), put the heads side by side again as (B, T, C), then apply
        `proj` and `resid_dropout`.
        """
        ### BEGIN SOLUTION
        B, T, C = x.shape
        hs = C // self.n_head

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, T, C) -> (B, nh, T, hs)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        y = causal_self_attention(q, k, v, self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.proj(y))
        ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task02_3: computation at each position


class FeedForward(nn.Module):
    """The same small network at every position, independently: after attention has gathered information
    from other positions, this is where each position "thinks" about it."""

    def __init__(self, n_embd: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)  # four times wider inside, as in "Attention Is All You Need"
        self.proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., n_embd) -> (..., n_embd): dropout(proj(relu(fc(x))))."""
        ### BEGIN SOLUTION
        return self.dropout(self.proj(F.relu(self.fc(x))))
        ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task02_4: LayerNorm from scratch, and the transformer block


class LayerNorm(nn.Module):
    """Normalise each position's vector to mean 0 and variance 1 over its last dimension, then scale and
    shift it by learned `weight` and `bias` (initially 1 and 0). Keeps activations in a good range however
    deep the network, which is what lets the six-layer model train."""

    def __init__(self, ndim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., ndim) -> (..., ndim): (x - mean) / sqrt(var + eps) * weight + bias, where mean and var
        are taken over the last dimension and var is the biased variance (divide by ndim, not ndim - 1),
        as in F.layer_norm. Write it with tensor operations (mean, var or pow, sqrt or rsqrt); do not call
        F.layer_norm or nn.LayerNorm.

        Speed counts (the training-step benchmark): every operation is a pass over the activations, forward
        and backward. Centre x once and reuse it for the variance, the mean of its square; `x.var` computes
        the mean again and is the slowest reduction on a CPU."""
        ### BEGIN SOLUTION
        centered = x - x.mean(dim=-1, keepdim=True)  # (..., ndim)
        var = (centered * centered).mean(dim=-1, keepdim=True)  # (..., 1), biased: divided by ndim
        return centered * torch.rsqrt(var + self.eps) * self.weight + self.bias
        ### END SOLUTION


class Block(nn.Module):
    """A transformer block: communication (attention) then computation (feed-forward), each wrapped in a
    residual connection and preceded by a LayerNorm ("pre-norm", as in GPT-2)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, layer_norm: bool = True) -> None:
        super().__init__()
        # layer_norm=False gives the "residual, no LayerNorm" row of the ablation table (see presets.py).
        self.ln1 = LayerNorm(n_embd) if layer_norm else nn.Identity()
        self.sa = MultiHeadAttention(n_embd, n_head, dropout)
        self.ln2 = LayerNorm(n_embd) if layer_norm else nn.Identity()
        self.ffwd = FeedForward(n_embd, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C): x + sa(ln1(x)), then that plus ffwd(ln2(that)).

        The residual path lets gradients flow straight from the loss to every block."""
        ### BEGIN SOLUTION
        x = x + self.sa(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x
        ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task02_5: the language model


def check_generate_args(max_new_tokens: int, temperature: float) -> None:
    """Given: a ValueError for a temperature <= 0 or a negative number of tokens."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64  # the longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0


class GPT(nn.Module):
    """Token embedding + position embedding -> n_layer Blocks -> final LayerNorm -> logits over the vocabulary."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding_table = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.Sequential(*[Block(config.n_embd, config.n_head, config.dropout)
                                      for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the layers that write into the residual path
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_length(self, idx: torch.Tensor) -> None:
        """Given: a ValueError naming block_size for a sequence longer than the position embeddings reach."""
        T = idx.shape[-1]
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size={self.config.block_size}")

    def forward(self, idx: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) int64 ids with T <= block_size. Returns (logits (B, T, V), loss or None).

        x = token_embedding_table(idx) + position_embedding_table(positions 0..T-1); then the blocks,
        ln_f and lm_head. The loss is F.cross_entropy over all B*T positions, as in milestone 01.
        (A T > block_size has no position embedding: the given check refuses it.)
        """
        self._check_length(idx)
        ### BEGIN SOLUTION
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.token_embedding_table(idx) + self.position_embedding_table(pos)  # (B, T, C)
        x = self.ln_f(self.blocks(x))  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss
        ### END SOLUTION

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Extend each row of idx (B, T) by `max_new_tokens` sampled ids; returns (B, T + max_new_tokens).

        At each step: feed the last block_size ids (the model has no position embedding beyond that, so
        crop the context), take the logits of the last position, divide by `temperature`, softmax, and
        draw one id with torch.multinomial(probs, num_samples=1, generator=generator), and append it.
        """
        check_generate_args(max_new_tokens, temperature)
        ### BEGIN SOLUTION
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]  # (B, <= block_size)
            logits, _ = self(context)
            probs = F.softmax(logits[:, -1, :] / temperature, dim=-1)  # (B, V)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
        ### END SOLUTION
