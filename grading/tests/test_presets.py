"""The course's published figures hold: the documented commands, run as a learner runs them, reach them.

Slow (about 3 minutes on 2 cores): `pytest -m "not slow"` leaves them out.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from llmfs.data import fetch_file
from llmfs.testing import thresholds


@pytest.mark.slow
def test_cpu_small_reaches_the_nanogpt_loss_and_samples_shakespeare(course, tmp_path):
    """`train.py train --preset cpu-small` ends at validation loss <= 1.89 (nanoGPT: 1.886) and writes its
    checkpoint, losses.csv and plot; `train.py sample` on that checkpoint prints Shakespeare-like text."""
    script = course.solutions / "02" / "train.py"
    out = tmp_path / "cpu-small"
    run = subprocess.run([sys.executable, str(script), "train", "--preset", "cpu-small", "--out", str(out),
                          "--device", "cpu"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 2000
    assert results["val_loss"] <= thresholds("02")["cpu_small_val_max"], results
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "losses.csv", "loss.png"}

    sampled = subprocess.run([sys.executable, str(script), "sample", str(out / "best.pt"), "--tokens", "1000"],
                             capture_output=True, text=True, timeout=120)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    text = sampled.stdout
    shakespeare_words = set(re.findall(r"[a-z]+", fetch_file("tinyshakespeare").read_text().lower()))
    words = re.findall(r"[a-z]+", text.lower())
    known = sum(w in shakespeare_words for w in words) / len(words)
    assert known > 0.5, f"only {known:.0%} of the sampled words are words of the corpus:\n{text}"
    assert re.search(r"^[A-Z][A-Za-z ]+:$", text, re.MULTILINE), f"no speaker line such as 'ROMEO:' in\n{text}"
