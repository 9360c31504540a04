"""Milestone 02, part 3: the training loop (task02_7), and the command line.

    task02_7  evaluate, save_checkpoint, train       the training loop: evaluation, checkpoints, resume, logs

It joins model.py, optim.py, the given presets.py and logs.py, and your milestone 01's `bigram`. When
`pytest milestones/02` passes, train and sample (README.md has the loop step by step, and the figures):

    python milestones/02/train.py train --preset cpu-small        # about 2.5 minutes on 2 CPU cores
    python milestones/02/train.py train --preset cpu-small --resume   # after a crash or Ctrl-C
    python milestones/02/train.py sample runs/02/cpu-small/best.pt
    python milestones/02/train.py ablation                        # the staged table, about 3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from llmfs.fsutil import atomic_write_text
from llmfs.loader import dependency

# Milestones 05 to 08 reach LossLog, plot_losses, read_log and save_figure through this module too.
if __package__:  # imported as part of the milestone (the tests do this)
    from .logs import LossLog, plot_ablation, plot_losses, read_log, save_figure  # noqa: F401
    from .optim import AdamW, clip_grad_norm, get_lr
    from .presets import ABLATION, ABLATION_STAGES, PRESETS, TrainConfig, build_model, param_groups
else:  # run as a script, `python milestones/02/train.py`: this folder is on sys.path
    from logs import LossLog, plot_ablation, plot_losses, read_log, save_figure  # noqa: F401
    from optim import AdamW, clip_grad_norm, get_lr
    from presets import ABLATION, ABLATION_STAGES, PRESETS, TrainConfig, build_model, param_groups

bigram = dependency("01", "bigram")  # your milestone 01: CharTokenizer, train_val_split, get_batch

# ----------------------------------------------------------------------------------------------------
# Checkpoints and batches (given)

def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `train` (tensors, numbers, strings: safe to load with weights_only)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python milestones/02/train.py train)")
    return torch.load(path, map_location="cpu", weights_only=True)


def fixed_batches(data: torch.Tensor, n: int, batch_size: int, block_size: int,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` batches drawn with their own generator, so evaluation never disturbs the training batches."""
    generator = torch.Generator().manual_seed(seed)
    return [bigram.get_batch(data, batch_size, block_size, generator) for _ in range(n)]


def _restore(path: Path, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
             batch_generator: torch.Generator) -> tuple[int, float]:
    """Load last.pt into the model, optimizer and RNGs; return (step to run next, best validation loss)."""
    state = load_checkpoint(path)
    saved = TrainConfig(**state["config"])
    if replace(saved, max_iters=config.max_iters) != config:
        changed = [f.name for f in fields(config) if getattr(saved, f.name) != getattr(config, f.name)]
        raise ValueError(f"{path} was trained with a different config ({', '.join(changed)} differ); "
                         "resume with the same settings, or start afresh without --resume")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    batch_generator.set_state(state["batch_rng"])
    return state["step"], state["best_val"]


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")

# ----------------------------------------------------------------------------------------------------
# task02_7: the training loop


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The mean of model(x, y)'s loss over the given (x, y) batches, in eval mode (no dropout) and without
    gradients; the model is left in the mode it was in. The batches are drawn once before training
    (`fixed_batches`), so every evaluation scores the same text and successive values are comparable.
    """
    if not batches:
        raise ValueError("evaluate() needs at least one batch")
    ### BEGIN SOLUTION
    was_training = model.training
    model.eval()
    total = sum(model(x, y)[1].item() for x, y in batches)
    model.train(was_training)
    return total / len(batches)
    ### END SOLUTION


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save(state, path), atomically: write a temporary file in the same folder, then os.replace it
    onto `path`. A crash mid-write (or a full disk) then leaves the previous checkpoint intact instead of a
    truncated file; the temporary file is removed if saving fails. Creates the folder if needed."""
    ### BEGIN SOLUTION
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    ### END SOLUTION


def train(config: TrainConfig, text: str, out_dir: Path, *, resume: bool = False, progress: bool = True,
          device: str = "cpu") -> dict:
    """Train a model on `text` as README.md ("The training loop") describes, step by step, and return a summary.

    Writes into `out_dir`: losses.csv (a LossLog row per step), loss.png (plot_losses, redrawn at each
    evaluation), last.pt (at every evaluation), best.pt (when validation loss improves) and results.json.
    With `resume` and out_dir/last.pt present, continue from it (the given `_restore`) so that the losses
    equal an uninterrupted run's bit for bit. The summary holds at least "train_loss" and "val_loss" (the
    last evaluation), "best_val", "steps", "ms_per_iter" and "config". With `progress`, a tqdm bar. The
    model and every batch go to `device`; batches are always drawn on the CPU.
    """
    ### BEGIN SOLUTION
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    tokenizer = bigram.CharTokenizer(text)
    train_ids, val_ids = bigram.train_val_split(torch.tensor(tokenizer.encode(text), dtype=torch.long))
    model = build_model(config, tokenizer.vocab_size).to(device)
    optimizer = AdamW(param_groups(model, config.weight_decay), lr=config.learning_rate,
                      betas=(config.beta1, config.beta2))
    batch_generator = torch.Generator().manual_seed(config.seed)
    eval_batches = {name: [(x.to(device), y.to(device)) for x, y in
                           fixed_batches(ids, config.eval_iters, config.batch_size, config.block_size, config.seed + 1)]
                    for name, ids in (("train", train_ids), ("val", val_ids))}
    start, best_val = 0, float("inf")
    if resume and (out_dir / "last.pt").exists():
        start, best_val = _restore(out_dir / "last.pt", config, model, optimizer, batch_generator)
    log = LossLog(out_dir / "losses.csv", start)  # rows from `start` on are about to be written (again)

    def checkpoint(step: int) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "config": asdict(config), "best_val": best_val, "chars": tokenizer.chars,
                "rng": torch.get_rng_state(), "batch_rng": batch_generator.get_state()}

    model.train()
    train_seconds, updates, evaluation = 0.0, 0, {}
    bar = tqdm(range(start, config.max_iters + 1), desc="training", disable=not progress, initial=start,
               total=config.max_iters + 1)
    for step in bar:
        evaluation = None
        if step % config.eval_interval == 0 or step == config.max_iters:
            evaluation = {name: evaluate(model, batches) for name, batches in eval_batches.items()}
            improved = evaluation["val"] < best_val
            best_val = min(best_val, evaluation["val"])
            state = checkpoint(step)
            if improved:
                save_checkpoint(state, out_dir / "best.pt")
            save_checkpoint(state, out_dir / "last.pt")
            bar.set_postfix(train=f"{evaluation['train']:.3f}", val=f"{evaluation['val']:.3f}", refresh=False)
        if step == config.max_iters:
            log.write(step, evaluation=evaluation)
            break
        started = time.perf_counter()
        lr = get_lr(step, max_lr=config.learning_rate, min_lr=config.min_lr,
                    warmup_iters=config.warmup_iters, lr_decay_iters=config.lr_decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = bigram.get_batch(train_ids, config.batch_size, config.block_size, batch_generator)
        _, loss = model(x.to(device), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            clip_grad_norm(model.parameters(), config.grad_clip)
        optimizer.step()
        train_seconds += time.perf_counter() - started
        updates += 1
        log.write(step, lr, loss.item(), evaluation)
        if evaluation:
            plot_losses(log.path, out_dir / "loss.png")
    log.close()
    plot_losses(log.path, out_dir / "loss.png")
    results = {"train_loss": evaluation["train"], "val_loss": evaluation["val"], "best_val": best_val,
               "steps": config.max_iters, "ms_per_iter": 1000 * train_seconds / max(updates, 1),
               "params": sum(p.numel() for p in model.parameters()), "config": asdict(config),
               "device": _device_name(device)}
    _write_json(out_dir / "results.json", results)
    return results
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# Commands (given): train, sample, ablation


def load_model(checkpoint: Path) -> tuple[nn.Module, object]:
    """The model and tokenizer saved in a checkpoint, in eval mode."""
    state = load_checkpoint(checkpoint)
    config = TrainConfig(**state["config"])
    tokenizer = bigram.CharTokenizer("".join(state["chars"]))
    model = build_model(config, tokenizer.vocab_size)
    model.load_state_dict(state["model"])
    return model.eval(), tokenizer


def sample(checkpoint: Path, *, prompt: str = "\n", max_new_tokens: int = 500, temperature: float = 1.0,
           seed: int = 0) -> str:
    """Text generated from a checkpoint, starting with `prompt` (which must use characters the model knows)."""
    model, tokenizer = load_model(checkpoint)
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    out = model.generate(idx, max_new_tokens, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    return tokenizer.decode(out[0].tolist())


def shakespeare() -> str:
    from llmfs.data import fetch_file

    return fetch_file("tinyshakespeare").read_text(encoding="utf-8")


def run_ablation(out: Path, results: Path | None = None, *, progress: bool = True) -> list[dict]:
    """Train every stage of the staged table into out/STAGE; write ablation.md, ablation.json and ablation.png
    into `results` (default: `out`)."""
    results_dir = Path(results or out)
    results_dir.mkdir(parents=True, exist_ok=True)
    text, rows = shakespeare(), []
    for stage, (adds, original) in ABLATION_STAGES.items():
        print(f"stage {stage}: {adds}")
        results = train(PRESETS[f"ablation-{stage}"], text, out / stage, progress=progress)
        rows.append({"stage": stage, "adds": adds, "original": original, "val_loss": results["val_loss"],
                     "train_loss": results["train_loss"], "params": results["params"],
                     "ms_per_iter": results["ms_per_iter"]})
        print(f"  val {results['val_loss']:.4f} (original {original:.2f})")
    _write_json(results_dir / "ablation.json", {"stages": rows, "config": dict(ABLATION),
                                         "torch_threads": torch.get_num_threads()})
    lines = ["| stage | adds | parameters | val loss here | original |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['adds']} | {r['params']:,} | {r['val_loss']:.3f} | {r['original']:.2f} |"
              for r in rows]
    atomic_write_text(results_dir / "ablation.md", "\n".join(lines) + "\n")
    plot_ablation(rows, results_dir / "ablation.png")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Milestone 02: train and sample the character GPT.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train a preset on TinyShakespeare")
    run.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    run.add_argument("--out", type=Path, help="output folder (default runs/02/PRESET)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    run.add_argument("--max-iters", type=int, help="override the preset's max_iters (e.g. to train longer)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    gen = commands.add_parser("sample", help="print text sampled from a checkpoint")
    gen.add_argument("checkpoint", type=Path)
    gen.add_argument("--prompt", default="\n")
    gen.add_argument("--tokens", type=int, default=500)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    ablation = commands.add_parser("ablation", help="re-measure the staged table (about 3 minutes on 2 cores)")
    ablation.add_argument("--out", type=Path, default=Path("runs/02/ablation"), help="the runs (checkpoints, logs)")
    ablation.add_argument("--results", type=Path, help="where the table and plot go (default: OUT)")
    args = parser.parse_args(argv)

    if args.command == "train":
        config = PRESETS[args.preset]
        if args.max_iters is not None:
            config = replace(config, max_iters=args.max_iters)
        out = args.out or Path("runs/02") / args.preset
        results = train(config, shakespeare(), out, resume=args.resume, device=args.device)
        print(f"step {results['steps']}: train {results['train_loss']:.4f}, val {results['val_loss']:.4f} "
              f"(best {results['best_val']:.4f}), {results['ms_per_iter']:.1f} ms/iteration")
        print(f"wrote {out}/best.pt, last.pt, losses.csv, loss.png, results.json")
    elif args.command == "sample":
        print(sample(args.checkpoint, prompt=args.prompt, max_new_tokens=args.tokens,
                     temperature=args.temperature, seed=args.seed))
    else:
        for row in run_ablation(args.out, args.results):
            print(f"{row['stage']:>12}  val {row['val_loss']:.4f}  (original {row['original']:.2f})")
        print(f"wrote {args.results or args.out}/ablation.md, ablation.json, ablation.png")


if __name__ == "__main__":
    main()
