"""Milestone 05: training GPT-2 the way build-nanogpt does, from one CPU core to many GPUs (commands: README).

A step processes `total_batch_tokens` tokens: micro-batches of B x T on each of the world_size processes,
accumulated over grad_accum steps. The learning rate warms up linearly, then follows a cosine down to 10% of its
peak. Every eval_interval steps: validation loss, an optional HellaSwag score, last.pt (everything needed to
resume exactly, written atomically) and the loss plot. The presets are in presets.py.

    task05_5  configure_optimizers, get_lr, accumulate_gradients, train
    task05_6  setup_distributed, all_mean (train calls them; a single process never reaches the parts you write)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from llmfs.loader import dependency

if __package__:  # imported as part of the milestone (the tests do this)
    from .data import ShardLoader, write_shards
    from .gpt2 import GPT
    from .hellaswag import evaluate as hellaswag_evaluate
    from .hellaswag import gpt2_encode, load_examples
    from .presets import PRESETS, TrainConfig
else:  # run as a script: python milestones/05/train.py
    from gpt2 import GPT
    from hellaswag import evaluate as hellaswag_evaluate
    from hellaswag import gpt2_encode, load_examples
    from presets import PRESETS, TrainConfig

    from data import ShardLoader, write_shards

m02 = dependency("02", "train")  # your milestone 02: save_checkpoint (atomic), load_checkpoint, LossLog, plot_losses


# ----------------------------------------------------------------------------------------------------
# task05_5: the optimiser, the schedule, gradient accumulation and the loop


def configure_optimizers(model: nn.Module, weight_decay: float, lr: float,
                         device_type: str = "cpu") -> torch.optim.AdamW:
    """AdamW(betas=(0.9, 0.95), eps=1e-8) with two groups: weight decay on every parameter with 2 or more
    dimensions (matmul weights, embeddings), none on the rest (biases, LayerNorm gains). The fused kernel when
    on CUDA. Each parameter once, even the tied wte/lm_head."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `configure_optimizers` in milestones/05/train.py (see milestones/05/README.md)')


def get_lr(step: int, config: TrainConfig) -> float:
    """Linear warmup max_lr * (step + 1) / warmup_steps for step < warmup_steps; then a cosine from max_lr down to
    min_lr = max_lr * min_lr_ratio at max_steps; min_lr after that."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `get_lr` in milestones/05/train.py (see milestones/05/README.md)')


def accumulate_gradients(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                         autocast=nullcontext) -> torch.Tensor:
    """Backward through every micro-batch, each loss divided by len(batches), so the accumulated gradient is
    that of the mean loss over all of them (the full batch). Returns that mean loss, detached.

    Under DDP (`model` is a DistributedDataParallel), synchronise gradients only on the last micro-batch:
    set `model.require_backward_grad_sync` to False before the others' backward.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `accumulate_gradients` in milestones/05/train.py (see milestones/05/README.md)')


def grad_accum_steps(config: TrainConfig, world_size: int) -> int:
    """Micro-batches per step on each process: total_batch_tokens / (micro_batch x block_size x world_size)."""
    tokens_per_micro = config.micro_batch * config.block_size * world_size
    if config.total_batch_tokens % tokens_per_micro:
        raise ValueError(f"total_batch_tokens={config.total_batch_tokens} is not a multiple of micro_batch x "
                         f"block_size x world_size = {tokens_per_micro}")
    return config.total_batch_tokens // tokens_per_micro


def prepare_shards(config: TrainConfig, out_dir: Path, state: Distributed) -> tuple[list[Path], list[Path]]:
    """(validation shards, training shards): from a folder of shards, or tokenize a registry dataset once."""
    source = Path(config.data)
    if source.is_dir():
        folder = source
    else:
        folder = out_dir / "shards"
        if state.master and not any(folder.glob("*.npy")):
            from llmfs.data import fetch_file

            text = fetch_file(config.data).read_text(encoding="utf-8")
            documents = [d for d in text.split("<|endoftext|>") if d.strip()] if "<|endoftext|>" in text else [text]
            write_shards(documents, folder, config.data, shard_tokens=config.shard_tokens)
        if state.enabled:
            dist.barrier()
    val, train = sorted(folder.glob("*_val_*.npy")), sorted(folder.glob("*_train_*.npy"))
    if not val or not train:
        raise FileNotFoundError(f"{folder} needs *_val_*.npy and *_train_*.npy shards (write_shards makes them)")
    return val, train


def speed_context(config: TrainConfig, device: str):
    """bf16 autocast on CUDA when asked; TF32 matmuls. On CPU these flags change nothing."""
    if device.startswith("cuda") and config.tf32:
        torch.set_float32_matmul_precision("high")
    if device.startswith("cuda") and config.bf16:
        return lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext


@torch.no_grad()
def validation_loss(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], autocast,
                    device: str) -> torch.Tensor:
    model.eval()
    total = torch.zeros(())
    for x, y in batches:
        with autocast():
            _, loss = model(x.to(device), y.to(device))
        total += loss.float().cpu()
    model.train()
    return total / len(batches)


def train(config: TrainConfig, out_dir: Path, *, resume: bool = False, device: str = "cpu",
          progress: bool = True, stop_at: int | None = None) -> dict:
    """Train (or resume) and return the results: final validation loss, HellaSwag, tokens/s.

    `stop_at` ends the run before that step as a crash would (no final checkpoint): for testing resume.

    Writes into out_dir: losses.csv (02's LossLog), loss.png, last.pt at every evaluation and results.json;
    under DDP only rank 0 writes. A resumed run continues bit for bit: model, optimiser, loader position and RNG
    state are all in last.pt.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `train` in milestones/05/train.py (see milestones/05/README.md)')


def save_run(state: Distributed, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
             loader: ShardLoader, config: TrainConfig, step: int) -> None:
    """last.pt (rank 0 writes; every rank's loader position is gathered into it)."""
    positions = [loader.state_dict()]
    if state.enabled:
        positions = [None] * state.world_size
        dist.all_gather_object(positions, loader.state_dict())
    if state.master:
        m02.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                             "config": asdict(config), "loader": positions, "rng": torch.get_rng_state()}, path)


# ----------------------------------------------------------------------------------------------------
# task05_6: distributed data parallel (train calls these; a single process never reaches your code)


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Distributed:
    """Under torchrun (RANK, LOCAL_RANK, WORLD_SIZE in the environment): init the process group, NCCL on CUDA
    and gloo on CPU, and on CUDA use the GPU LOCAL_RANK. Without torchrun: one process, no process group."""
    if "RANK" not in os.environ:
        return Distributed()
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `setup_distributed` in milestones/05/train.py (see milestones/05/README.md)')


def all_mean(value: torch.Tensor, state: Distributed) -> float:
    """The mean of a scalar over all processes (itself without DDP): all_reduce a copy with SUM, divide by the
    world size (gloo has no AVG)."""
    if not state.enabled:
        return value.item()
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `all_mean` in milestones/05/train.py (see milestones/05/README.md)')



# ----------------------------------------------------------------------------------------------------
# the command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train GPT-2 (milestone 05).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train")
    run.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    run.add_argument("--out", type=Path, help="output folder (default runs/05/PRESET)")
    run.add_argument("--resume", action="store_true")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a preset field")
    score = commands.add_parser("hellaswag", help="HellaSwag acc / acc_norm of a checkpoint or of OpenAI's GPT-2")
    score.add_argument("model", help="a last.pt of this script, a local HF folder, or a hub name such as gpt2")
    score.add_argument("--limit", type=int, default=None, help="the first N examples (default: all 10,042)")
    score.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ladder = commands.add_parser("ladder", help="tokens/s (and MFU) of a training step at each speed-up rung")
    ladder.add_argument("--preset", choices=sorted(PRESETS), default="gpt2-124m-baseline")
    ladder.add_argument("--steps", type=int, default=10)
    ladder.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ladder.add_argument("--peak-tflops", type=float, default=None, help="e.g. 989 for an H100 SXM in bf16")
    args = parser.parse_args(argv)
    if args.command in ("ladder", "hellaswag"):  # measure.py imports this file: import it only now
        if __package__:
            from .measure import score_hellaswag, throughput_ladder
        else:
            from measure import score_hellaswag, throughput_ladder
        if args.command == "ladder":
            peak = args.peak_tflops * 1e12 if args.peak_tflops else None
            print(json.dumps(throughput_ladder(args.preset, args.steps, args.device, peak), indent=1))
        else:
            print(json.dumps(score_hellaswag(args.model, args.limit, args.device)))
        return
    config = PRESETS[args.preset]
    types = {f.name: f.type for f in fields(TrainConfig)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in types:
            parser.error(f"--set {item}: TrainConfig has no field {key!r}")
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes"), "str": str}[types[key]]
        config = replace(config, **{key: kind(value)})
    results = train(config, args.out or Path("runs/05") / args.preset, resume=args.resume, device=args.device)
    if dist.is_initialized():
        dist.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({k: v for k, v in results.items() if k != "preset_config"}, indent=1))


if __name__ == "__main__":
    main()
