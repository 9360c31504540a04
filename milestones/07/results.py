"""The results page of milestone 07: tokens/s with and without the KV cache, in float32 and bfloat16, batch 1 and 8.

Nothing to write here: `python milestones/07/decoding.py results` calls `write_results` with your cache and your
`generate`. The model is GPT-2 124M with random weights (speed does not depend on the weights) built from your
milestone 05 GPT; the uncached runs use your milestone 06 `generate`. For each configuration and each number of new
tokens (from a 1-token prompt, greedy) it measures tokens/s, counting every row of a batch, and writes results.json,
results.md and tokens_per_s.png into the output folder, atomically. Uncached runs stop at 256 new tokens (128 for
a batch of 8): each step runs the whole context again. The cache's memory is 2 x n_layer x B x max_len x n_embd x
bytes.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from llmfs.fsutil import atomic_write_text
from llmfs.loader import dependency

if __package__:
    from . import kvcache
    from .decoding import generate
else:
    import kvcache
    from decoding import generate

LENGTHS = [64, 128, 256, 512, 1023]  # new tokens after a 1-token prompt: 1,024 positions at most
UNCACHED_MAX = {1: 256, 8: 128}  # the longest uncached run per batch size: its cost grows with the square of the length
CONFIGS = [  # (cached, dtype, batch)
    (cached, dtype, batch) for cached in (True, False) for dtype in ("float32", "bfloat16") for batch in (1, 8)
]


def model_124m(dtype: str) -> torch.nn.Module:
    """GPT-2 124M (milestone 05's GPT) with seeded random weights, in eval mode and the given dtype."""
    gpt2 = dependency("05", "gpt2")
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig()).eval()
    return kvcache.to_dtype(model, getattr(torch, dtype))


def tokens_per_s(model: torch.nn.Module, cached: bool, batch: int, new_tokens: int) -> float:
    """New tokens per second (all rows counted), greedy, from a 1-token prompt."""
    idx = torch.randint(0, 50257, (batch, 1), generator=torch.Generator().manual_seed(0))
    run = generate if cached else dependency("06", "sampling").generate
    start = time.perf_counter()
    out = run(model, idx, new_tokens)
    return (out.size(1) - 1) * batch / (time.perf_counter() - start)


def measure(lengths: list[int]) -> list[dict]:
    """One row per configuration and length: tokens/s and the cache's bytes."""
    from tqdm import tqdm

    rows = []
    jobs = [(c, d, b, n) for c, d, b in CONFIGS for n in lengths if c or n <= UNCACHED_MAX[b]]
    models: dict[str, torch.nn.Module] = {}
    config = dependency("05", "gpt2").GPTConfig()
    for cached, dtype, batch, n in tqdm(jobs, desc="07 results", unit="run"):
        if dtype not in models:
            models[dtype] = model_124m(dtype)
        bytes_per = torch.finfo(getattr(torch, dtype)).bits // 8
        rows.append({"cached": cached, "dtype": dtype, "batch": batch, "new_tokens": n,
                     "tokens_per_s": round(tokens_per_s(models[dtype], cached, batch, n), 2),
                     "cache_mib": round(2 * config.n_layer * batch * (n + 1) * config.n_embd * bytes_per / 2**20, 1)
                     if cached else 0.0})
    return rows


def label(row: dict) -> str:
    return f"{'cached' if row['cached'] else 'uncached'}, {row['dtype']}, batch {row['batch']}"


def plot(rows: list[dict], out: Path) -> Path:
    """tokens_per_s.png: tokens/s against new tokens, one line per configuration (log scale)."""
    from matplotlib.figure import Figure  # the object API: a notebook's backend stays as it is

    save_figure = dependency("02", "train").save_figure
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    for name in dict.fromkeys(label(r) for r in rows):
        line = [r for r in rows if label(r) == name]
        ax.plot([r["new_tokens"] for r in line], [r["tokens_per_s"] for r in line], marker="o",
                linestyle="-" if line[0]["cached"] else "--", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("new tokens (1-token prompt)")
    ax.set_ylabel("tokens/s (all rows)")
    ax.set_title("GPT-2 124M on this machine: the KV cache, bfloat16 and batching", fontsize=11)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot: no line hidden
    fig.tight_layout()
    ax.grid(alpha=0.3, which="both")
    path = out / "tokens_per_s.png"
    save_figure(fig, path)  # milestone 02's: atomic
    return path


def table(rows: list[dict], lengths: list[int]) -> str:
    """results.md: tokens/s per configuration and length, the cache's memory, and speed-ups at 256 tokens."""
    lines = ["| configuration | " + " | ".join(f"{n} new" for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for name in dict.fromkeys(label(r) for r in rows):
        by_n = {r["new_tokens"]: r for r in rows if label(r) == name}
        lines.append(f"| {name} | " + " | ".join(f"{by_n[n]['tokens_per_s']:.1f}" if n in by_n else "—"
                                                   for n in lengths) + " |")
    lines += ["", "Tokens/s, every row counted. The cache's memory at the longest run (2 n_layer B max_len n_embd "
              "bytes):", "", "| configuration | cache (MiB) |", "|---|---|"]
    for name in dict.fromkeys(label(r) for r in rows if r["cached"]):
        lines.append(f"| {name} | {max(r['cache_mib'] for r in rows if label(r) == name):.1f} |")
    speed = {label(r): r["tokens_per_s"] for r in rows if r["new_tokens"] == 256}
    if "uncached, float32, batch 1" in speed:
        lines += ["", "At 256 new tokens: cached / uncached "
                  f"{speed['cached, float32, batch 1'] / speed['uncached, float32, batch 1']:.2f}x (float32), "
                  f"bfloat16 / float32 {speed['cached, bfloat16, batch 1'] / speed['cached, float32, batch 1']:.2f}x "
                  f"(cached), batch 8 / batch 1 "
                  f"{speed['cached, bfloat16, batch 8'] / speed['cached, bfloat16, batch 1']:.2f}x (bfloat16)."]
    return "\n".join(lines)


def write_results(out: Path, quick: bool = False) -> dict:
    """Measure, plot and write the page (about 10 minutes on 2 cores; quick: 64 and 128 new tokens only)."""
    lengths = LENGTHS[:2] if quick else LENGTHS
    rows = measure(lengths)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out)
    results = {"model": "GPT-2 124M, random weights", "machine": f"{platform.machine()}, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}", "rows": rows}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / "results.md", table(rows, lengths) + "\n")
    print(f"wrote {out}/results.md, results.json, tokens_per_s.png")
    return results
