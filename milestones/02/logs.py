"""Milestone 02: the training log and its figures (given code, nothing to write here).

`LossLog` writes losses.csv a row at a time, `read_log` reads it back, `plot_losses` draws loss.png from
it, `plot_ablation` the staged table, and `save_figure` saves any figure atomically. The figures use
matplotlib's object API (`Figure`), never pyplot, so a notebook's backend stays as it is.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import torch

from llmfs.fsutil import atomic_write_text

LOG_FIELDS = ["step", "lr", "loss", "eval_train", "eval_val"]


class LossLog:
    """losses.csv: one row per step (the learning rate and training loss of that step's update) with the
    evaluation made before that update in the eval columns. Each row is flushed as it is written, so a
    crash loses nothing. Opening it keeps only the rows before `start`: a fresh run (start 0) begins an
    empty log, a resumed one drops the rows it is about to write again."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        kept = io.StringIO()
        writer = csv.DictWriter(kept, LOG_FIELDS, lineterminator="\n")
        writer.writeheader()
        if start > 0 and path.exists():
            writer.writerows(row for row in read_log(path) if int(row["step"]) < start)
        atomic_write_text(path, kept.getvalue())
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, LOG_FIELDS, lineterminator="\n")

    def write(self, step: int, lr: float | None = None, loss: float | None = None,
              evaluation: dict[str, float] | None = None) -> None:
        evaluation = evaluation or {}
        self.writer.writerow({"step": step, "lr": "" if lr is None else f"{lr:.6g}",
                              "loss": "" if loss is None else f"{loss:.6f}",
                              "eval_train": f"{evaluation['train']:.6f}" if evaluation else "",
                              "eval_val": f"{evaluation['val']:.6f}" if evaluation else ""})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_log(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot_losses(csv_path: Path, png_path: Path, title: str = "") -> None:
    """The loss curve: training loss of each step (faint), its running mean, and the evaluations."""
    from matplotlib.figure import Figure

    rows = read_log(csv_path)
    steps = [int(r["step"]) for r in rows if r["loss"]]
    losses = torch.tensor([float(r["loss"]) for r in rows if r["loss"]])
    evals = [(int(r["step"]), float(r["eval_train"]), float(r["eval_val"])) for r in rows if r["eval_val"]]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if len(steps):
        ax.plot(steps, losses, lw=0.5, alpha=0.3, color="C0", label="training loss (one batch)")
        window = max(1, len(steps) // 40)
        if len(steps) >= window > 1:
            ax.plot(steps[window - 1:], losses.unfold(0, window, 1).mean(1), color="C0",
                    label=f"running mean ({window} steps)")
    if evals:
        s, tr, va = zip(*evals, strict=True)
        ax.plot(s, tr, "o-", ms=3, color="C1", label="train (fixed batches)")
        ax.plot(s, va, "o-", ms=3, color="C3", label=f"validation (last {va[-1]:.3f}, best {min(va):.3f})")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title=title or "Character GPT on TinyShakespeare")
    ax.legend()
    save_figure(fig, png_path)


def plot_ablation(rows: list[dict], path: Path) -> None:
    """The staged table as a figure: the loss of each stage here, beside the lecture's."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    x = range(len(rows))
    ax.plot(x, [r["original"] for r in rows], "s--", color="gray", label="Let's build GPT (original)")
    ax.plot(x, [r["val_loss"] for r in rows], "o-", color="C3", label="this course (measured)")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['val_loss']:.2f}", (i, r["val_loss"]), textcoords="offset points", xytext=(0, -14),
                    ha="center", fontsize=8)
    ax.set_xticks(list(x), [r["stage"] for r in rows])
    ax.set(ylabel="validation loss (nats)", title="Staged build: batch 32, block 8, n_embd 32, 5000 steps")
    ax.legend()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure atomically: a temporary file beside `path`, then os.replace."""
    path = Path(path)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
