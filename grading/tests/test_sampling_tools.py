"""Milestones 06, 07 and 08's command lines as a learner runs them (reference solution): generate from 05's and 02's
checkpoints, a cached batch of prompts, 08's pair built and used, clear errors, and the results pages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch


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


# ---------------------------------------------------------------------------------------------- milestone 07


def texts_by_prompt(stdout: str) -> dict[str, str]:
    """07's output: a `--- 'prompt'` line, then the prompt and its continuation, per row."""
    blocks = stdout.split("--- ")[1:]
    return {block.split("\n", 1)[0]: block.split("\n", 1)[1].rstrip("\n") for block in blocks}


def test_a_batch_of_prompts_gives_each_the_text_it_gets_alone(course, checkpoints):
    """07's generate: two prompts of different lengths in one left-padded, cached batch; greedy, each row's text equals
    06's uncached generate of that prompt alone"""
    prompts = ["ROMEO:", "KING RICHARD II:\nWhat"]
    args = ["generate", str(checkpoints["05"]), "--greedy", "--max-new-tokens", "12"]
    batch = run(course, "07/decoding.py", *args, "--prompt", prompts[0], "--prompt", "KING RICHARD II:\\nWhat")
    assert batch.returncode == 0, batch.stderr[-3000:]
    texts = texts_by_prompt(batch.stdout)
    assert list(texts) == [repr(p) for p in prompts], batch.stdout
    for prompt in prompts:
        alone = run(course, "06/sampling.py", *args, "--prompt", prompt)
        assert alone.returncode == 0, alone.stderr[-3000:]
        assert texts[repr(prompt)] == alone.stdout.rstrip("\n"), f"{prompt!r}: the batch changed the text"
    half = run(course, "07/decoding.py", "generate", str(checkpoints["05"]), "--prompt", "ROMEO:", "--dtype",
               "bfloat16")
    assert half.returncode == 0 and half.stdout.startswith("--- 'ROMEO:'\nROMEO:"), half.stderr[-3000:]


@pytest.mark.parametrize("args,words", [(["--max-new-tokens", "5000"], "block_size"),
                                        (["--dtype", "int8"], "invalid choice"),
                                        (["--top-p", "1.5", "--max-new-tokens", "2"],
                                         "top_p must be a number in (0, 1]")])
def test_07_stops_with_a_message_naming_the_problem(course, checkpoints, args, words):
    proc = run(course, "07/decoding.py", "generate", str(checkpoints["05"]), "--prompt", "ROMEO:", *args)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_07_results_page_from_a_small_model(course, tmp_path, monkeypatch):
    """The results page's flow (measure, table, plot, atomic writes) with a 2-layer GPT in place of 124M"""
    from llmfs.loader import load_module

    results = load_module(course.solutions, "07", "results", course.milestone("07").api["results"])
    gpt2 = load_module(course.solutions, "05", "gpt2", course.milestone("05").api["gpt2"])

    def small(dtype: str):
        torch.manual_seed(0)
        model = gpt2.GPT(gpt2.GPTConfig(block_size=300, vocab_size=50257, n_layer=2, n_head=2, n_embd=32)).eval()
        return results.kvcache.to_dtype(model, getattr(torch, dtype))

    monkeypatch.setattr(results, "model_124m", small)
    monkeypatch.setattr(results, "LENGTHS", [16, 32, 299])  # uncached: batch 1 runs 16 and 32, batch 8 only 16
    monkeypatch.setattr(results, "UNCACHED_MAX", {1: 32, 8: 16})
    out = tmp_path / "results"
    written = results.write_results(out)
    rows = written["rows"]
    assert len(rows) == 4 * 3 + 2 * 2 + 2 * 1  # cached: 2 dtypes x 2 batches x 3 lengths; uncached: 2 + 1 lengths
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert {r["cache_mib"] for r in rows if not r["cached"]} == {0.0}
    table = (out / "results.md").read_text()
    assert "| cached, bfloat16, batch 8 |" in table and "| uncached, float32, batch 1 |" in table and "—" in table
    assert (out / "tokens_per_s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["rows"] == rows


# ---------------------------------------------------------------------------------------------- milestone 08


@pytest.fixture(scope="module")
def tiny_pair(course, tmp_path_factory):
    """08's pair built by its command line with 3 training steps: the real recipe, seconds instead of minutes."""
    folder = tmp_path_factory.mktemp("pair") / "speculative-pair"
    built = run(course, "08/speculative.py", "pair", "--out", str(folder), "--max-steps", "3")
    assert built.returncode == 0, built.stderr[-3000:]
    assert "target 6 layers x 256" in built.stdout and "alpha" in built.stdout, built.stdout
    info = json.loads((folder / "pair.json").read_text())
    assert info["training"]["max_steps"] == 3 and (folder / "build-key.txt").is_file()
    assert not list(folder.parent.glob("*.partial-*")), "the build folder must be renamed into place"
    return folder


def test_08_generates_a_batch_with_the_pair(course, tiny_pair):
    """08's generate: two prompts as one batch, greedy; each text equals 07's greedy decoding of the target alone"""
    args = ["generate", "--pair", str(tiny_pair), "--greedy", "--max-new-tokens", "10", "--gamma", "3"]
    proc = run(course, "08/speculative.py", *args, "--prompt", "Once upon a time", "--prompt", "Tom")
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts = texts_by_prompt(proc.stdout.split("\n", 1)[1].rsplit("\n", 2)[0] + "\n")
    assert list(texts) == ["'Once upon a time'", "'Tom'"], proc.stdout
    assert "target passes" in proc.stdout and "tokens per pass" in proc.stdout
    from llmfs.loader import load_module

    pairs = load_module(course.solutions, "08", "pair", course.milestone("08").api["pair"])
    decoding = load_module(course.solutions, "07", "decoding", course.milestone("07").api["decoding"])
    pair = pairs.load_pair(tiny_pair)
    ids = [pair.eos_token_id, *pair.tokenizer.encode_ordinary("Tom")]
    alone = decoding.generate(pair.target, torch.tensor([ids]), 10, eos_token_id=pair.eos_token_id)[0, len(ids):]
    expected = pair.tokenizer.decode([t for t in alone.tolist() if t != pair.eos_token_id])
    assert texts["'Tom'"] == "Tom" + expected


@pytest.mark.parametrize("args,words", [(["--gamma", "0"], "gamma"), (["--max-new-tokens", "500"], "block_size"),
                                        (["--dtype", "int8"], "invalid choice")])
def test_08_stops_with_a_message_naming_the_problem(course, tiny_pair, args, words):
    proc = run(course, "08/speculative.py", "generate", "--pair", str(tiny_pair), "--prompt", "Once", *args)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_08_results_page_from_a_tiny_pair(course, tiny_pair, tmp_path):
    """The results page's flow (measure, predicted speed-up, table, plot, atomic writes) on the 3-step pair"""
    out = tmp_path / "results"
    proc = run(course, "08/speculative.py", "results", "--pair", str(tiny_pair), "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["dtype"], r["gamma"]) for r in rows] == [(d, g) for d in ("float32", "bfloat16") for g in (1, 2, 4)]
    for r in rows:
        assert 1 <= r["tokens_per_call"] <= r["gamma"] + 1 and 0 <= r["alpha"] <= 1 and r["predicted"] > 0, r
    assert "| bfloat16 | 4 |" in (out / "results.md").read_text()
    assert (out / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
