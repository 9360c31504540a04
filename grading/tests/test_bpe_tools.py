"""The BPE milestones' command lines and the mixed corpus, as a learner runs them (reference solutions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llmfs.data import fetch_file
from llmfs.data.corpora import SEPARATOR, build_mixed_corpus


def run(course, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=course.root, capture_output=True, text=True, timeout=300)


def test_llmfs_data_mix_writes_a_file_of_the_size_asked_for(llmfs, tmp_path):
    proc = llmfs("data", "mix", str(tmp_path / "mixed.txt"), "--mb", "0.5")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "mixed.txt").read_text(encoding="utf-8")
    assert 500_000 <= len(text.encode("utf-8")) < 600_000 and text.count(SEPARATOR) > 100
    assert [p.name for p in tmp_path.iterdir()] == ["mixed.txt"]  # no temporary file left behind
    again = build_mixed_corpus(tmp_path / "again.txt", 500_000)
    assert again.read_text(encoding="utf-8") == text  # seeded: the same file every time


def test_naive_and_fast_trainers_save_the_same_tokenizer(course, tmp_path):
    sample = fetch_file("tinystories-sample", progress=False)
    naive = run(course, "solutions/03/bpe.py", "--input", str(sample), "--vocab-size", "300",
                "--special", "<|endoftext|>", "--out", str(tmp_path / "naive.json"))
    fast = run(course, "solutions/04/fastbpe.py", "train", "--input", str(sample), "--vocab-size", "300",
               "--special", "<|endoftext|>", "--out", str(tmp_path / "fast.json"))
    assert naive.returncode == 0 and fast.returncode == 0, naive.stderr + fast.stderr
    assert "bytes per token" in naive.stdout and "trained 300 tokens" in fast.stdout
    naive_doc, fast_doc = (json.loads((tmp_path / f"{n}.json").read_text(encoding="utf-8")) for n in ("naive", "fast"))
    assert naive_doc == fast_doc and len(naive_doc["merges"]) == 300 - 257


def test_results_command_writes_the_table_json_and_plot(course, tmp_path):
    out = tmp_path / "results"
    proc = run(course, "solutions/04/fastbpe.py", "results", "--corpus", "tinystories-sample", "--vocab-size", "300",
               "--vocab-size", "400", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["vocab_size"] for r in rows] == [300, 400]
    assert all(r["bytes_per_token"] > 1 and r["gpt2_bytes_per_token"] > 1 and r["tiktoken_encode_mb_s"] > 0
               for r in rows)
    assert "| tinystories-sample" in (out / "results.md").read_text()
    assert Path(out / "bytes-per-token.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
