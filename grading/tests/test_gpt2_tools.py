"""Milestone 05's command line as a learner runs it (reference solution): train, resume, hellaswag, ladder."""

from __future__ import annotations

import json
import subprocess
import sys


def run(course, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "solutions/05/train.py", *args], cwd=course.root, capture_output=True,
                          text=True, timeout=300)


def test_train_then_score_the_checkpoint_on_hellaswag(course, tmp_path):
    out = tmp_path / "tiny"
    trained = run(course, "train", "--preset", "tiny", "--out", str(out), "--set", "max_steps=6", "--set",
                  "eval_interval=3", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["val_step"] == 5 and results["grad_accum"] == 2 and results["tokens_per_s"] > 0
    again = run(course, "train", "--preset", "tiny", "--out", str(out), "--set", "max_steps=7", "--resume")
    assert again.returncode != 0 and "another configuration" in again.stderr
    scored = run(course, "hellaswag", str(out / "last.pt"), "--limit", "8", "--device", "cpu")
    assert scored.returncode == 0, scored.stderr[-3000:]
    scores = json.loads(scored.stdout.strip().splitlines()[-1])
    assert scores["n"] == 8 and 0 <= scores["acc_norm"] <= 1


def test_the_throughput_ladder_runs_its_first_rung_on_cpu(course):
    proc = run(course, "ladder", "--preset", "tiny", "--steps", "1", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"rung": "fp32"' in proc.stdout and "only the fp32 rung" in proc.stdout


def test_unknown_preset_fields_are_refused(course):
    proc = run(course, "train", "--preset", "tiny", "--set", "learning_rate=1")
    assert proc.returncode == 2 and "no field 'learning_rate'" in proc.stderr
