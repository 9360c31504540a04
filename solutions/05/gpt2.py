"""Milestone 05: GPT-2 (124M), written from scratch and checked logit for logit against Hugging Face.

The model of build-nanogpt, with Hugging Face's parameter names (listed in the README), so OpenAI's released
weights load into it and the tests can compare every block with `transformers.GPT2LMHeadModel`. Shapes in the
comments: B batch, T time, C channels (n_embd), nh heads, hs head size (C / nh), V vocabulary.

    task05_1  CausalSelfAttention.forward, MLP.forward, Block.forward, GPT.init_weights, GPT.forward
    task05_2  hf_to_ours, from_hf, from_pretrained (GPT.from_hf and GPT.from_pretrained call the last two)
    task05_3  rope_tables, apply_rope
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

# ----------------------------------------------------------------------------------------------------
# task05_1: the model


@dataclass
class GPTConfig:
    block_size: int = 1024  # the longest sequence
    vocab_size: int = 50257  # GPT-2's 50,000 merges + 256 bytes + <|endoftext|>; 50,304 pads it for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    rope: bool = False  # rotary position embeddings instead of learned ones
    rope_base: float = 10000.0
    flash: bool = False  # F.scaled_dot_product_attention instead of the explicit softmax (same result)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_SCALE = True  # GPT-2's init scales residual projections by 1/sqrt(2 n_layer)
        self.n_head, self.n_embd, self.flash = config.n_head, config.n_embd, config.flash

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                offset: int = 0) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C): q, k, v from c_attn, split into heads (B, nh, T, hs), RoPE on q and k when
        `rope` = (cos, sin) is given, causal softmax(q k^T / sqrt(hs)) v, heads joined, c_proj."""
        ### BEGIN SOLUTION
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope, offset), apply_rope(k, *rope, offset)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q / math.sqrt(k.size(-1))) @ k.transpose(-2, -1)  # (B, nh, T, T); scale the smaller tensor
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)
            att = att.masked_fill_(future, float("-inf")).softmax(dim=-1)  # in place: no second (T, T) copy
            y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)
        ### END SOLUTION


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_SCALE = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> c_fc -> GELU with the tanh approximation (GPT-2's) -> c_proj."""
        ### BEGIN SOLUTION
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        ### END SOLUTION


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                offset: int = 0) -> torch.Tensor:
        """Pre-norm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln_1(x), rope, offset)
        return x + self.mlp(self.ln_2(x))
        ### END SOLUTION


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        modules = {"wte": nn.Embedding(config.vocab_size, config.n_embd)}
        if not config.rope:
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules["h"] = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        modules["ln_f"] = nn.LayerNorm(config.n_embd)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one (V, C) matrix, used twice
        if config.rope:
            cos, sin = rope_tables(config.n_embd // config.n_head, config.block_size, config.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self.init_weights)

    def init_weights(self, module: nn.Module) -> None:
        """GPT-2's initialisation: Linear and Embedding weights ~ N(0, 0.02), biases 0; a Linear marked
        RESIDUAL_SCALE (the projections back into the residual stream) gets std 0.02 / sqrt(2 n_layer), since
        each block adds two of them to the stream. LayerNorms keep weight 1, bias 0."""
        ### BEGIN SOLUTION
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "RESIDUAL_SCALE", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        ### END SOLUTION

    def num_params(self) -> int:
        """Parameters, the tied wte/lm_head matrix counted once: 124,439,808 for GPT-2 small."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                offset: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, V), and the mean cross-entropy against targets (B, T) if given.

        Positions are offset, ..., offset + T - 1: learned embeddings wpe (or RoPE in every attention), then the
        blocks, ln_f and lm_head. A sequence longer than block_size raises ValueError.
        """
        B, T = idx.size()
        if offset + T > self.config.block_size:
            raise ValueError(f"positions {offset}..{offset + T - 1} do not fit block_size={self.config.block_size}")
        ### BEGIN SOLUTION
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.rope:
            rope = (self.rope_cos, self.rope_sin)
        else:
            x = x + self.transformer.wpe(torch.arange(offset, offset + T, device=idx.device))  # (T, C) broadcast
        for block in self.transformer.h:
            x = block(x, rope, offset)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
        ### END SOLUTION

    @classmethod
    def from_hf(cls, model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
                config: GPTConfig | None = None) -> GPT:
        """A GPT holding the weights of a Hugging Face GPT2LMHeadModel (or its state_dict): `from_hf` below."""
        return from_hf(model_or_state_dict, config)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str] = "gpt2") -> GPT:
        """OpenAI's GPT-2 from a local folder or the hub: `from_pretrained` below."""
        return from_pretrained(name_or_path)


# ----------------------------------------------------------------------------------------------------
# task05_2: OpenAI's weights (GPT.from_hf and GPT.from_pretrained above call these)

TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def check_fits(state: Mapping[str, torch.Tensor], our_state: Mapping[str, torch.Tensor]) -> None:
    """ValueError listing every key missing from `state`, left over in it, or of the wrong shape."""
    missing = sorted(set(our_state) - set(state))
    extra = sorted(set(state) - set(our_state))
    wrong = sorted(f"{k}: {tuple(state[k].shape)} for {tuple(our_state[k].shape)}" for k in set(state) & set(our_state)
                   if state[k].shape != our_state[k].shape)
    if missing or extra or wrong:
        raise ValueError("the checkpoint does not fit this GPTConfig: "
                         + "; ".join(f"{what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                                     for what, keys in (("missing", missing), ("unexpected", extra),
                                                        ("wrong shape", wrong)) if keys))


def hf_to_ours(hf_state: Mapping[str, torch.Tensor], our_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face's GPT-2 state_dict renamed and reshaped into ours, then `check_fits(state, our_state)`.

    - Keys may lack the "transformer." prefix (GPT2Model rather than GPT2LMHeadModel); add it.
    - Drop the attention-mask buffers (".attn.bias", ".attn.masked_bias"): they are not weights.
    - lm_head.weight is tied to wte: take wte's if lm_head's is missing.
    - OpenAI's Conv1D layers store weights as (in, out); nn.Linear wants (out, in): transpose the four
      TRANSPOSED kinds.
    """
    ### BEGIN SOLUTION
    state = {}
    for key, value in hf_state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        key = key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
        state[key] = value.t() if key.endswith(TRANSPOSED) else value
    if "lm_head.weight" not in state and "transformer.wte.weight" in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    check_fits(state, our_state)
    return state
    ### END SOLUTION


def from_hf(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], config: GPTConfig | None = None) -> GPT:
    """A GPT holding the weights of a Hugging Face GPT2LMHeadModel (or of its state_dict, with `config`).

    A model's config comes from its own (n_positions, vocab_size, n_layer, n_head, n_embd) unless given. Build
    GPT(config) and load `hf_to_ours` of the weights into it.
    """
    if config is None and not isinstance(model_or_state_dict, nn.Module):
        raise ValueError("from_hf(state_dict) needs config=GPTConfig(...): a state_dict does not say it")
    ### BEGIN SOLUTION
    if isinstance(model_or_state_dict, nn.Module):
        hf = model_or_state_dict.config
        config = config or GPTConfig(block_size=hf.n_positions, vocab_size=hf.vocab_size, n_layer=hf.n_layer,
                                     n_head=hf.n_head, n_embd=hf.n_embd)
        state = model_or_state_dict.state_dict()
    else:
        state = model_or_state_dict
    model = GPT(config)
    model.load_state_dict(hf_to_ours(state, model.state_dict()))
    return model
    ### END SOLUTION


def from_pretrained(name_or_path: str | os.PathLike[str] = "gpt2") -> GPT:
    """OpenAI's GPT-2 from a local folder or .safetensors file (config.json beside it: `from_hf` of
    safetensors' `load_file`), or by name from the Hugging Face hub ("gpt2", "gpt2-medium", ...; needs the
    internet the first time: `from_hf` of transformers' `GPT2LMHeadModel.from_pretrained`)."""
    ### BEGIN SOLUTION
    path = Path(name_or_path)
    if path.exists():
        import json

        from safetensors.torch import load_file

        folder = path if path.is_dir() else path.parent
        weights = path if path.is_file() else folder / "model.safetensors"
        hf = json.loads((folder / "config.json").read_text())
        config = GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                           n_head=hf["n_head"], n_embd=hf["n_embd"])
        return from_hf(load_file(str(weights)), config)
    from transformers import GPT2LMHeadModel

    return from_hf(GPT2LMHeadModel.from_pretrained(str(name_or_path)))
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task05_3: rotary position embeddings (RoPE)


def rope_tables(head_size: int, max_len: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for RoPE, each (max_len, head_size), in float32.

    Channel pair i (i < head_size / 2) turns at frequency base ** (-2 i / head_size); position t turns it by
    t times that angle. Like Hugging Face's Llama, the angles are laid out as [angles, angles] (the two halves
    repeat), to go with `rotate_half`.
    """
    if head_size % 2:
        raise ValueError(f"RoPE needs an even head size, got {head_size}")
    ### BEGIN SOLUTION
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))  # (hs/2,)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (max_len, hs/2)
    emb = torch.cat((angles, angles), dim=-1)  # (max_len, hs)
    return emb.cos(), emb.sin()
    ### END SOLUTION


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Rotate queries or keys x (B, nh, T, hs) for positions offset, ..., offset + T - 1.

    x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1) for the halves x1, x2 of the last
    dimension. `offset` is where this sequence starts (milestone 07's KV cache feeds one token at a time).
    """
    T = x.size(-2)
    if offset + T > cos.size(0):
        raise ValueError(f"positions up to {offset + T - 1} need RoPE tables longer than {cos.size(0)}")
    ### BEGIN SOLUTION
    cos, sin = cos[offset : offset + T].to(x.dtype), sin[offset : offset + T].to(x.dtype)  # (T, hs)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin
    ### END SOLUTION
