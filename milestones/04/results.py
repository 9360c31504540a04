"""The results table of milestone 04: your tokenizers against GPT-2's, Hugging Face `tokenizers` and tiktoken.

Nothing to write here: `python milestones/04/fastbpe.py results` calls `write_results` with your trainer.
For each corpus it trains on the first 90% (cut at a line break), measures on the rest (see README.md):

    bytes per token   on the held-out 10%, for each vocabulary size and for GPT-2 (tiktoken's "gpt2")
    training time     your `train_from_file` and `tokenizers`' BpeTrainer, same data, same vocabulary size
    encoding MB/s     yours (cold cache), `tokenizers` and tiktoken on the whole corpus, one thread, best of 3

and writes results.json, results.md and bytes-per-token.png into the output folder (atomically).
"""

from __future__ import annotations

import gc
import json
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from llmfs.data import fetch_file
from llmfs.data.gpt2_tokenizers import ENDOFTEXT, gpt2_tiktoken
from llmfs.fsutil import atomic_write_text


def hf_bpe_trainer(path: Path, vocab_size: int) -> tuple[float, object]:
    """Hugging Face `tokenizers` set up like ours: GPT-2's byte-level pre-tokenizer, all 256 bytes, one special."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    start = time.perf_counter()
    tokenizer.train([str(path)], trainer)
    return time.perf_counter() - start, tokenizer


def mb_per_s(encode: Callable[[str], object], text: str, before: Callable[[], None] = lambda: None,
             rounds: int = 3) -> float:
    """Encoding throughput, the best of `rounds` (noise only ever adds time) with the garbage collector paused;
    `before` runs before each."""
    best = float("inf")
    for _ in range(rounds):
        before()
        gc.collect()
        gc.disable()  # as timeit does: time the encoder, not a collection of unrelated objects
        try:
            start = time.perf_counter()
            encode(text)
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return len(text.encode("utf-8")) / best / 1e6


def split_held_out(text: str) -> tuple[str, str]:
    """The first 90% (up to a line break) for training, the rest for measuring compression."""
    cut = text.find("\n", int(0.9 * len(text)))
    cut = len(text) if cut < 0 else cut + 1
    return text[:cut], text[cut:]


def measure(train_from_file: Callable, corpus: str, vocab_sizes: Sequence[int], workdir: Path) -> list[dict]:
    text = fetch_file(corpus).read_text(encoding="utf-8")
    train_text, held_out = split_held_out(text)
    train_path = workdir / f"{corpus}.train.txt"
    train_path.write_text(train_text, encoding="utf-8")
    held_bytes = len(held_out.encode("utf-8"))
    gpt2 = gpt2_tiktoken()
    rows = []
    for vocab_size in vocab_sizes:
        start = time.perf_counter()
        ours = train_from_file(train_path, vocab_size, [ENDOFTEXT])
        our_seconds = time.perf_counter() - start
        hf_seconds, theirs = hf_bpe_trainer(train_path, vocab_size)
        our_mb_s = mb_per_s(ours.encode_ordinary, text, before=ours.cache.clear)  # a cold cache every time
        rows.append({
            "corpus": corpus, "corpus_mb": len(text.encode("utf-8")) / 1e6, "vocab_size": vocab_size,
            "learned_vocab_size": ours.vocab_size,  # smaller when the text runs out of pairs to merge
            "bytes_per_token": held_bytes / len(ours.encode_ordinary(held_out)),
            "gpt2_bytes_per_token": held_bytes / len(gpt2.encode_ordinary(held_out)),
            "train_s": our_seconds, "hf_train_s": hf_seconds,
            "encode_mb_s": our_mb_s,
            "hf_encode_mb_s": mb_per_s(partial(theirs.encode, add_special_tokens=False), text),
            "tiktoken_encode_mb_s": mb_per_s(gpt2.encode_ordinary, text),
        })
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| corpus | vocab (learned) | bytes/token (GPT-2) | train s (tokenizers) "
        "| encode MB/s (tokenizers, tiktoken) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['corpus']} ({r['corpus_mb']:.2f} MB) | {r['vocab_size']} ({r['learned_vocab_size']}) | "
                     f"{r['bytes_per_token']:.2f} ({r['gpt2_bytes_per_token']:.2f}) | "
                     f"{r['train_s']:.2f} ({r['hf_train_s']:.2f}) | {r['encode_mb_s']:.2f} "
                     f"({r['hf_encode_mb_s']:.2f}, {r['tiktoken_encode_mb_s']:.2f}) |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it was

    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.subplots()
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        mine = [r for r in rows if r["corpus"] == corpus]
        sizes, ratios = [r["learned_vocab_size"] for r in mine], [r["bytes_per_token"] for r in mine]
        (line,) = ax.plot(sizes, ratios, "o-", label=corpus)
        ax.axhline(mine[0]["gpt2_bytes_per_token"], color=line.get_color(), ls="--", lw=1,
                   label=f"GPT-2 (50,257) on {corpus}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size learned (a small text runs out of pairs)")
    ax.set_ylabel("bytes per token, held-out 10% (higher is better)")
    ax.legend(fontsize=8)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=120)
    Path(tmp.name).replace(path)


def write_results(train_from_file: Callable, corpora: Sequence[str],
                  vocab_sizes: Sequence[int], out_dir: Path) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="llmfs-bpe-") as workdir:
        for corpus in corpora:
            rows += measure(train_from_file, corpus, vocab_sizes, Path(workdir))
            print(table(rows), flush=True)
    machine = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    atomic_write_text(out_dir / "results.json", json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    atomic_write_text(out_dir / "results.md", table(rows))
    plot(rows, out_dir / "bytes-per-token.png")
    print(f"wrote {out_dir}/results.md, results.json and bytes-per-token.png")
    return rows
