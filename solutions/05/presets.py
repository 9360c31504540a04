"""Milestone 05: what a training run is: TrainConfig and the presets of `train.py train --preset NAME`.

The 124M presets are the rows of build-nanogpt's table (FineWeb-Edu 10B tokens, one epoch, on GPUs); `tiny` is
what the tests train, `cpu-shakespeare` a few minutes on a laptop. The milestone README lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

if __package__:  # imported as part of the milestone
    from .gpt2 import GPTConfig
else:  # run through train.py as a script
    from gpt2 import GPTConfig


@dataclass(frozen=True)
class TrainConfig:
    # model
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    block_size: int = 64
    vocab_size: int = 50304  # 50,257 padded to a multiple of 128: same model, faster matmuls on a GPU
    rope: bool = False
    # batch: total_batch_tokens = micro_batch x block_size x grad_accum x world_size
    total_batch_tokens: int = 4096
    micro_batch: int = 8
    # optimisation
    max_lr: float = 6e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    max_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # evaluation and checkpoints
    eval_interval: int = 25
    eval_batches: int = 8
    hellaswag_examples: int = 0  # 0: no HellaSwag; -1: all 10,042
    # data: a registry dataset name (tokenized once into shards) or a folder of shards (*_val_*.npy, *_train_*.npy)
    data: str = "tinyshakespeare"
    shard_tokens: int = 100_000
    shuffle: bool = True  # the global shuffle of data.ShardLoader; False is build-nanogpt's original order
    seed: int = 1337
    # speed (GPU only; ignored with a note on CPU, where they would not help)
    bf16: bool = False
    tf32: bool = False
    compile: bool = False
    flash: bool = False

    def model_config(self) -> GPTConfig:
        """The GPTConfig of the model this run trains."""
        return GPTConfig(block_size=self.block_size, vocab_size=self.vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, rope=self.rope, flash=self.flash)


BIG = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "total_batch_tokens": 524_288,
       "micro_batch": 64, "max_steps": 19_073, "warmup_steps": 715, "eval_interval": 250, "eval_batches": 20,
       "hellaswag_examples": -1, "data": "fineweb-edu-10b", "shard_tokens": 100_000_000, "bf16": True,
       "tf32": True, "compile": True, "flash": True}
PRESETS = {
    "tiny": TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, total_batch_tokens=512, micro_batch=8,
                        max_lr=1e-2, warmup_steps=5, max_steps=30, eval_interval=10, eval_batches=4),
    "cpu-shakespeare": TrainConfig(n_layer=4, n_head=4, n_embd=64, block_size=64, total_batch_tokens=1024,
                                   micro_batch=16, max_lr=3e-3, warmup_steps=20, max_steps=300, eval_interval=50,
                                   eval_batches=8, hellaswag_examples=100),
    # the rows of the original project's table (FineWeb-Edu 10B tokens, one epoch; GPUs)
    "gpt2-124m-baseline": TrainConfig(**{**BIG, "shuffle": False}),
    "gpt2-124m-high-lr": TrainConfig(**{**BIG, "shuffle": False, "max_lr": 1.8e-3, "warmup_steps": 100}),
    "gpt2-124m-shuffle": TrainConfig(**{**BIG, "max_lr": 1.8e-3, "warmup_steps": 100}),
    "gpt2-124m-rope": TrainConfig(**{**BIG, "max_lr": 1.8e-3, "warmup_steps": 100, "rope": True}),
}
