"""Milestone 06's command line as a learner runs it (reference solution): generate from 05's and 02's checkpoints,
clear errors, and the results page."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(course, script: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(course.root / "solutions" / script), *args], cwd=cwd or course.root,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def checkpoints(course, tmp_path_factory):
    """A 05 tiny checkpoint (GPT-2 tokens) and a 02 tiny one (characters), trained for a few steps."""
    out = tmp_path_factory.mktemp("runs")
    trained = run(course, "05/train.py", "train", "--preset", "tiny", "--out", str(out / "05"), "--set", "max_steps=3",
                  "--set", "hellaswag_examples=0", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr[-3000:]
    chars = run(course, "02/train.py", "train", "--preset", "tiny", "--out", str(out / "02"))  # 60 steps, seconds
    assert chars.returncode == 0, chars.stderr[-3000:]
    return {"05": out / "05" / "last.pt", "02": next((out / "02").glob("*.pt"))}


@pytest.mark.parametrize("which", ["05", "02"])
def test_generate_continues_the_prompt_reproducibly(course, checkpoints, which):
    args = ("generate", str(checkpoints[which]), "--prompt", "ROMEO:", "--max-new-tokens", "12", "--temperature",
            "0.8", "--top-p", "0.9", "--repetition-penalty", "1.2", "--seed", "3")
    first, again = run(course, "06/sampling.py", *args), run(course, "06/sampling.py", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.startswith("ROMEO:") and len(first.stdout) > len("ROMEO:\n")
    assert first.stdout == again.stdout, "the same seed must give the same text"
    greedy = run(course, "06/sampling.py", "generate", str(checkpoints[which]), "--prompt", "ROMEO:", "--greedy",
                 "--max-new-tokens", "5")
    assert greedy.returncode == 0, greedy.stderr[-3000:]


@pytest.mark.parametrize("flag,value,words", [("--top-p", "1.5", "top_p must be a number in (0, 1]"),
                                              ("--repetition-penalty", "-1", "repetition_penalty must be")])
def test_bad_settings_stop_with_a_message_naming_them(course, checkpoints, flag, value, words):
    proc = run(course, "06/sampling.py", "generate", str(checkpoints["05"]), flag, value, "--max-new-tokens", "2")
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_a_missing_checkpoint_says_how_to_make_one(course, tmp_path):
    proc = run(course, "06/sampling.py", "generate", str(tmp_path / "nothing.pt"))
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr and "train" in proc.stderr


def test_the_results_page_is_written_from_a_checkpoint(course, checkpoints, tmp_path):
    out = tmp_path / "results"
    proc = run(course, "06/sampling.py", "results", "--checkpoint", str(checkpoints["05"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["penalties"]) >= {"greedy", "greedy, repetition 1.3", "greedy, frequency 0.5"}
    assert results["distributions"]["top-k = 10"]["support"] == 10
    assert results["distributions"]["T = 1 (the model)"]["support"] == 50304  # 05 pads the vocabulary
    table = (out / "results.md").read_text()
    assert "| setting | distinct-1 | distinct-2 | repeated 3-grams |" in table
    for png in ("distributions.png", "penalties.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
