"""Milestone 08: a draft/target pair worth speculating with, trained by the course's own code (given code).

    python milestones/08/speculative.py pair        # build it now (llmfs grade does this before the tests)

Random weights make speed-ups meaningless, so the course trains a real pair, deterministically from a seed: a
1,024-token BPE (04's `train`) on the TinyStories sample, the stories as shards (05's `save_shard`), then a target
and a much smaller draft trained by 05's `train` on the same data; pair.json holds both losses and alpha.
It is a *built dataset*: `llmfs.data.fetch("speculative-pair")` builds it atomically in the data cache, keyed by a
hash of the settings below, the course code it runs and torch's version (README: The pair).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from llmfs.fsutil import atomic_write_text
from llmfs.loader import dependency

BUILD_VERSION = 1  # bump when the steps below change: every cached pair is then built again
SEED = 0
VOCAB = 1024  # 1,023 merged tokens and bytes, then <|endoftext|>
ENDOFTEXT = "<|endoftext|>"
DATASET = "tinystories-valid-head"
SHAPES = {  # 05's TrainConfig fields per model; both read the same shards in the same order
    "target": {"n_layer": 6, "n_head": 4, "n_embd": 256},
    "draft": {"n_layer": 1, "n_head": 2, "n_embd": 128},
}
TRAINING = {"block_size": 128, "vocab_size": VOCAB, "total_batch_tokens": 4096, "micro_batch": 32, "max_lr": 3e-3,
            "warmup_steps": 20, "max_steps": 300, "eval_interval": 100, "eval_batches": 8, "seed": SEED}
SOURCES = [("03", "bpe"), ("03", "bpe_files"), ("04", "pretokens"), ("04", "merges"), ("04", "encoder"),
           ("04", "fastbpe"), ("02", "optim"), ("02", "logs"), ("02", "train"), ("05", "gpt2"), ("05", "data"),
           ("05", "presets"), ("05", "train")]
THREADS = 2  # the same float reductions on every machine with any number of cores


@dataclass
class Pair:
    """The trained pair, in eval mode, with its tokenizer (04's FastTokenizer) and end-of-text id."""

    target: nn.Module
    draft: nn.Module
    tokenizer: object
    eos_token_id: int
    info: dict


def _modules():
    return {"fastbpe": dependency("04", "fastbpe"), "data": dependency("05", "data"),
            "train": dependency("05", "train"), "gpt2": dependency("05", "gpt2")}


def build_key(training: dict | None = None) -> str:
    """A hash of everything that decides the pair: the settings above, the course code it runs (04's tokenizer and
    03's beneath it, 05's model, shards and training loop, 02's checkpoints beneath that) and torch's version."""
    settings = [BUILD_VERSION, SEED, VOCAB, ENDOFTEXT, DATASET, SHAPES, training or TRAINING, THREADS,
                torch.__version__]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for milestone, module in SOURCES:
        digest.update(Path(inspect.getfile(dependency(milestone, module))).read_bytes())
    return digest.hexdigest()[:16]


def documents(text: str) -> list[str]:
    """The stories of the sample: its blank-line blocks, stripped."""
    return [block.strip() for block in text.split("\n\n") if block.strip()]


def write_data(folder: Path) -> tuple[object, Path]:
    """Train the tokenizer, save it (03's readable JSON) and write the shards: the first 5% of tokens validate."""
    from llmfs.data import fetch_file

    m = _modules()
    docs = documents(fetch_file(DATASET).read_text(encoding="utf-8"))
    tokenizer = m["fastbpe"].train(ENDOFTEXT.join(docs), VOCAB, [ENDOFTEXT])
    tokenizer.save(folder / "tokenizer.json")
    eot = tokenizer.vocab_size - 1
    ids = np.array([t for doc in docs for t in (eot, *tokenizer.encode_ordinary(doc))], dtype=np.uint16)
    shards = folder / "shards"
    shards.mkdir(exist_ok=True)
    split = len(ids) // 20
    m["data"].save_shard(shards / f"{DATASET}_val_000000.npy", ids[:split])
    m["data"].save_shard(shards / f"{DATASET}_train_000001.npy", ids[split:])
    return tokenizer, shards


def train_model(name: str, shards: Path, folder: Path, progress: bool, training: dict) -> dict:
    """05's `train` for one model of the pair, resuming its own checkpoint after a crash."""
    m05 = _modules()["train"]
    config = m05.TrainConfig(**SHAPES[name], **training, data=str(shards))
    resume = (folder / name / "last.pt").is_file()
    start = time.perf_counter()
    results = m05.train(config, folder / name, resume=resume, progress=progress)
    return {"val_loss": round(results["val_loss"], 4), "seconds": round(time.perf_counter() - start, 1),
            "params": sum(p.numel() for p in load_model(folder / name / "last.pt").parameters())}


def load_model(checkpoint: Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A 05 GPT from its last.pt, in eval mode."""
    m = _modules()
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = m["gpt2"].GPT(m["train"].TrainConfig(**saved["config"]).model_config())
    model.load_state_dict(saved["model"])
    return model.eval().to(dtype)


@torch.no_grad()
def measure_alpha(target: nn.Module, draft: nn.Module, shards: Path, rows: int = 32) -> dict:
    """On validation windows: alpha = E[sum_x min(p, q)] (the chance a sampled draft token is accepted) and the
    share of positions where both argmaxes agree (greedy's)."""
    val = np.load(next(shards.glob("*_val_*.npy"))).astype(np.int64)
    T = TRAINING["block_size"]
    x = torch.from_numpy(val[: rows * T]).view(rows, T)
    p, q = target(x)[0].softmax(dim=-1), draft(x)[0].softmax(dim=-1)
    return {"alpha_sampled": round(float(torch.minimum(p, q).sum(dim=-1).mean()), 4),
            "alpha_greedy": round(float((p.argmax(dim=-1) == q.argmax(dim=-1)).float().mean()), 4)}


def build(folder: Path, progress: bool = True, max_steps: int | None = None) -> Path:
    """Build the pair into `folder` (replaced atomically when done); returns it. Resumes an interrupted build.
    `max_steps` shortens the training, for a try-out (`speculative.py pair --out DIR --max-steps 5`)."""
    folder = Path(folder)
    training = TRAINING if max_steps is None else {**TRAINING, "max_steps": max_steps, "warmup_steps": 1}
    key = build_key(training)
    work = folder.with_name(f"{folder.name}.partial-{key}")
    work.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        start = time.perf_counter()
        tokenizer, shards = write_data(work)
        info = {"key": key, "seed": SEED, "dataset": DATASET, "vocab_size": VOCAB, "tokens": int(sum(
            len(np.load(s)) for s in shards.glob("*.npy"))), "torch": torch.__version__, "threads": THREADS}
        for name in SHAPES:
            print(f"training the {name} ({SHAPES[name]})", flush=True)
            info[name] = {**SHAPES[name], **train_model(name, shards, work, progress, training)}
        info.update(measure_alpha(load_model(work / "target" / "last.pt"), load_model(work / "draft" / "last.pt"),
                                  shards))
        info["build_seconds"] = round(time.perf_counter() - start, 1)
        info["training"] = training
        atomic_write_text(work / "pair.json", json.dumps(info, indent=1) + "\n")
        atomic_write_text(work / "build-key.txt", key + "\n")  # what llmfs.data checks
    finally:
        torch.set_num_threads(threads)
    old = folder.with_name(f"{folder.name}.old")
    if folder.exists():
        folder.rename(old)
    work.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_pair(folder: Path | None = None, dtype: torch.dtype = torch.float32) -> Pair:
    """The pair from `folder`, or from the data cache (`llmfs.data.fetch("speculative-pair")`, which builds it
    the first time: minutes)."""
    if folder is None:
        from llmfs.data import fetch

        folder = fetch("speculative-pair")
    folder = Path(folder)
    tokenizer = dependency("04", "fastbpe").FastTokenizer.load(folder / "tokenizer.json")
    target, draft = (load_model(folder / name / "last.pt", dtype) for name in ("target", "draft"))
    for model in (target, draft):
        model.tokenizer_name = f"speculative-pair/{folder.name}"
    info = json.loads((folder / "pair.json").read_text())
    return Pair(target, draft, tokenizer, tokenizer.vocab_size - 1, info)


def describe(info: dict) -> str:
    """One line about the pair, for the command line and the results page."""
    t, d = info["target"], info["draft"]
    return (f"target {t['n_layer']} layers x {t['n_embd']} ({t['params'] / 1e6:.1f}M params, val loss "
            f"{t['val_loss']:.2f}), draft {d['n_layer']} x {d['n_embd']} ({d['params'] / 1e6:.2f}M, "
            f"{d['val_loss']:.2f}); alpha {info['alpha_sampled']:.2f} sampled, {info['alpha_greedy']:.2f} greedy")

