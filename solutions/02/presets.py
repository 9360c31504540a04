"""Milestone 02: what a training run trains (given code, nothing to write here).

`TrainConfig` holds every setting of a run; `PRESETS` names the ones the README and the tests use;
`build_model` makes the GPT of model.py, or one of the intermediate models of the staged table
(`ABLATION_STAGES`, "Let's build GPT" one idea at a time); `param_groups` splits the parameters into
those AdamW decays and those it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

if __package__:  # imported as part of the milestone (the tests do this)
    from .model import GPT, Block, FeedForward, GPTConfig, Head, MultiHeadAttention
else:  # run as a script, `python milestones/02/train.py`: this folder is on sys.path
    from model import GPT, Block, FeedForward, GPTConfig, Head, MultiHeadAttention


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Checkpoints store it; `--resume` refuses a different one."""

    architecture: str = "gpt"  # "gpt", or one of ABLATION_STAGES for the staged table
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    batch_size: int = 12
    max_iters: int = 2000  # may grow on --resume (train longer); nothing else may change
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off
    eval_interval: int = 250
    eval_iters: int = 200
    seed: int = 1337


ABLATION = {"n_layer": 3, "n_head": 4, "n_embd": 32, "block_size": 8, "batch_size": 32, "max_iters": 5000,
            "learning_rate": 1e-3, "min_lr": 1e-3, "warmup_iters": 0, "lr_decay_iters": 5000,
            "weight_decay": 0.01, "beta2": 0.999, "grad_clip": 0.0, "eval_interval": 500}

# stage -> (what it adds, the loss "Let's build GPT" reports for it)
ABLATION_STAGES = {
    "bigram": ("token and position embeddings, then a linear head", 2.47),
    "head": ("+ one self-attention head of size 32", 2.45),
    "multihead": ("+ four heads of size 8, with a projection", 2.38),
    "feedforward": ("+ a feed-forward layer after attention", 2.27),
    "residual": ("3 blocks with residual connections", 2.20),
    "layernorm": ("+ pre-LayerNorm in each block and at the end: the GPT", 2.07),
}

PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=8, max_iters=60,
                        warmup_iters=5, lr_decay_iters=60, eval_interval=20, eval_iters=4),
    "cpu-small": TrainConfig(),  # nanoGPT's shakespeare_char on CPU: val 1.88 after 2000 iterations
    "full": TrainConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2,
                        max_iters=5000, lr_decay_iters=5000),  # nanoGPT: val 1.4697, ~3 min on an A100
    **{f"ablation-{stage}": TrainConfig(architecture=stage, **ABLATION) for stage in ABLATION_STAGES},
}


class AblationModel(nn.Module):
    """The intermediate models of the staged table, assembled from your model.py pieces. The last stage,
    "layernorm", is the GPT itself and is built by `build_model`, not here."""

    def __init__(self, stage: str, vocab_size: int, config: TrainConfig) -> None:
        super().__init__()
        C, n_head = config.n_embd, config.n_head
        self.token_embedding_table = nn.Embedding(vocab_size, C)
        self.position_embedding_table = nn.Embedding(config.block_size, C)
        bodies = {
            "bigram": lambda: nn.Identity(),
            "head": lambda: Head(C, C),
            "multihead": lambda: MultiHeadAttention(C, n_head),
            "feedforward": lambda: nn.Sequential(MultiHeadAttention(C, n_head), FeedForward(C)),
            "residual": lambda: nn.Sequential(*[Block(C, n_head, layer_norm=False) for _ in range(config.n_layer)]),
        }
        self.body = bodies[stage]()
        self.lm_head = nn.Linear(C, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.shape
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(T))  # (B, T, C)
        logits = self.lm_head(self.body(x))  # (B, T, V)
        loss = None if targets is None else nn.functional.cross_entropy(logits.view(B * T, -1), targets.view(-1))
        return logits, loss


def build_model(config: TrainConfig, vocab_size: int) -> nn.Module:
    """The GPT for architecture "gpt"; a stage of the staged table otherwise. The stages keep PyTorch's default
    initialisation, as in "Let's build GPT" (the GPT's N(0, 0.02) initialisation came later, with depth)."""
    if config.architecture == "gpt" or config.architecture == "layernorm":
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                              n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout))
    elif config.architecture in ABLATION_STAGES:
        model = AblationModel(config.architecture, vocab_size, config)
    else:
        raise ValueError(f"unknown architecture {config.architecture!r}; use 'gpt' or one of {list(ABLATION_STAGES)}")
    if config.architecture != "gpt":
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.reset_parameters()
    return model


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the matrices (linear weights, embeddings), not the biases and LayerNorm gains, as nanoGPT does."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
