"""The milestone 02 GPT built from torch's own parts: the independent reference of the hidden tests.

Same parameter names and shapes as the milestone's GPT, so `load_state_dict` moves weights across, but every
piece the learner writes from scratch is torch's here: nn.LayerNorm and F.scaled_dot_product_attention. Used
to check the learner's logits, and as the fast side of the training-speed benchmark (with torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_embd, n_embd, bias=False)
        self.key = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(n_embd, n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (lin(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)))


class BuiltinBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.sa, self.ffwd = Attention(n_embd, n_head), MLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class BuiltinGPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[BuiltinBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(T, device=idx.device))
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def builtin_copy(gpt: nn.Module) -> BuiltinGPT:
    """A BuiltinGPT with the configuration and weights of the milestone's `gpt`. Every reference parameter must
    be found under its documented name; extra buffers the learner registers (a causal mask) are ignored."""
    c = gpt.config
    reference = BuiltinGPT(c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd).to(
        next(gpt.parameters()).dtype)
    missing, _ = reference.load_state_dict(gpt.state_dict(), strict=False)
    assert not missing, f"GPT lacks the documented parameters {missing} (keep the names model.py's docstrings use)"
    return reference
