"""Hidden tests for milestone 02, optim.py and train.py (tasks 02_6 and 02_7): 35 of the milestone's 100 points.

References: torch.optim.AdamW, torch.optim.lr_scheduler.CosineAnnealingLR, torch.nn.utils.clip_grad_norm_,
the mean of F.cross_entropy, and the learner's own uninterrupted run (a resumed or killed-and-resumed run must
reproduce it bit for bit). The speed test times the learner's training step against the same model built from
torch's parts, interleaved in one run.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmfs.data import fetch_file
from llmfs.loader import implementation_root, load_module
from llmfs.testing import implementation_fixture, raise_if_stub, record_threshold, thresholds

model = implementation_fixture("02", "model")
optim = implementation_fixture("02", "optim")
presets = implementation_fixture("02", "presets")
logs = implementation_fixture("02", "logs")
train = implementation_fixture("02", "train")
builtin = load_module(Path(__file__).resolve().parents[1], "02", "builtin_gpt")
LIMITS = thresholds("02")


@pytest.fixture(scope="module")
def text() -> str:
    return fetch_file("tinyshakespeare").read_text(encoding="utf-8")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, **tolerances: float) -> None:
    """torch.testing.assert_close whose failure starts with `what`, which names the part."""
    torch.testing.assert_close(actual, expected, **tolerances, msg=lambda m: f"{what}\n{m}")


def tiny_gpt(model, seed: int = 0):
    torch.manual_seed(seed)
    return model.GPT(model.GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16))


def run_steps(gpt, optimizer, steps: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(13, (4, 8), generator=g)
        _, loss = gpt(idx, idx.roll(-1, dims=1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


# ---------------------------------------------------------------------------------------------- task02_6


@pytest.mark.task02_6
@pytest.mark.points(5)
def test_adamw_matches_torch_after_20_steps(model, presets, optim):
    """Parameters equal torch.optim.AdamW's after 20 steps: two groups (decay and none), betas, eps, weight decay"""
    ours, theirs = tiny_gpt(model), tiny_gpt(model)
    settings = {"lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-6}
    opt = optim.AdamW(presets.param_groups(ours, 0.1), **settings)
    ref = torch.optim.AdamW(presets.param_groups(theirs, 0.1), **settings, foreach=False)
    run_steps(ours, opt, 20)
    run_steps(theirs, ref, 20)
    decays = {id(p): group["weight_decay"] for group in ref.param_groups for p in group["params"]}
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert_close(a, b, f"AdamW: {name} (a parameter of the weight_decay={decays[id(b)]} group) differs from "
                     "torch.optim.AdamW's after 20 steps: bias-correct m and v by 1 - beta ** t, decay p *= 1 - lr * "
                     "weight_decay (decoupled, not added to the gradient) with the group's own weight_decay",
                     rtol=1e-5, atol=1e-6)
    moved = [(a - b).abs().max().item() for a, b in zip(ours.parameters(), tiny_gpt(model).parameters(), strict=True)]
    assert min(moved) > 0, "AdamW: some parameter never moved"


@pytest.mark.task02_6
@pytest.mark.points(2)
def test_adamw_state_survives_a_state_dict_round_trip(model, optim):
    """10 steps, state_dict into a fresh optimizer, 10 more == 20 uninterrupted steps (checkpoints rely on it)"""
    straight = tiny_gpt(model)
    opt = optim.AdamW(straight.parameters(), lr=1e-2, weight_decay=0.05)
    run_steps(straight, opt, 20)
    split = tiny_gpt(model)
    first = optim.AdamW(split.parameters(), lr=1e-2, weight_decay=0.05)
    run_steps(split, first, 10)
    second = optim.AdamW(split.parameters(), lr=1e-2, weight_decay=0.05)
    second.load_state_dict(first.state_dict())
    run_steps(split, second, 10, seed=2)
    again = tiny_gpt(model)
    reference = optim.AdamW(again.parameters(), lr=1e-2, weight_decay=0.05)
    run_steps(again, reference, 10)
    run_steps(again, reference, 10, seed=2)
    for a, b in zip(split.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b), ("AdamW: after load_state_dict the steps differ from an uninterrupted run: keep m, v "
                                   "and the step count in self.state[p]")
    assert set(first.state_dict()["state"][0]) >= {"exp_avg", "exp_avg_sq", "step"}, (
        "AdamW: self.state[p] must hold exp_avg, exp_avg_sq and step")


@pytest.mark.task02_6
@pytest.mark.points(4)
def test_learning_rate_schedule(optim):
    """Linear warmup to max_lr, then the curve of torch's CosineAnnealingLR, then min_lr"""
    kw = {"max_lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 10, "lr_decay_iters": 110}
    for step in range(10):
        assert optim.get_lr(step, **kw) == pytest.approx(1e-3 * (step + 1) / 11, rel=1e-12), (
            f"get_lr({step}) in the warmup must be max_lr * (step + 1) / (warmup_iters + 1)")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100, eta_min=1e-4)
    for t in range(101):
        assert optim.get_lr(10 + t, **kw) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-15), (
            f"get_lr({10 + t}) must follow the cosine from max_lr at warmup_iters=10 down to min_lr at "
            "lr_decay_iters=110: r = (step - warmup_iters) / (lr_decay_iters - warmup_iters)")
        optimizer.step()
        cosine.step()
    assert optim.get_lr(111, **kw) == optim.get_lr(10_000, **kw) == pytest.approx(1e-4), (
        "get_lr after lr_decay_iters must stay at min_lr")
    with pytest.raises(ValueError):
        optim.get_lr(-1, **kw)
    with pytest.raises(ValueError):
        optim.get_lr(5, max_lr=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=10)


@pytest.mark.task02_6
@pytest.mark.points(4)
def test_clip_grad_norm_matches_torch(model, optim):
    """Same total norm and same clipped gradients as torch.nn.utils.clip_grad_norm_, above and below the limit"""
    for max_norm in (0.05, 1e6):
        ours, theirs = tiny_gpt(model), tiny_gpt(model)
        for gpt in (ours, theirs):
            idx = torch.randint(13, (4, 8), generator=torch.Generator().manual_seed(3))
            gpt(idx, idx)[1].backward()
        ours.lm_head.bias.grad = None  # a parameter without a gradient is skipped
        theirs.lm_head.bias.grad = None
        norm = optim.clip_grad_norm(ours.parameters(), max_norm)
        expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
        assert norm == pytest.approx(expected.item(), rel=1e-6), (
            f"clip_grad_norm(max_norm={max_norm}) must return the global norm before clipping, sqrt of the sum of "
            f"every gradient's squares: {expected.item():.6g}, got {norm}")
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            if b.grad is not None:
                assert_close(a.grad, b.grad, f"clip_grad_norm(max_norm={max_norm}): the gradient of {name} differs "
                             "from clip_grad_norm_'s: scale every gradient by the same max_norm / (global norm "
                             "+ 1e-6), only when the global norm is above max_norm", rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError):
        optim.clip_grad_norm(ours.parameters(), 0.0)


# ---------------------------------------------------------------------------------------------- task02_7


@pytest.mark.task02_7
@pytest.mark.points(2)
def test_evaluate_is_the_mean_loss_in_eval_mode(model, train):
    """evaluate() == the mean of F.cross_entropy over the batches, with dropout off, and the mode restored"""
    torch.manual_seed(4)
    gpt = model.GPT(model.GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.5))
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randint(13, (3, 8), generator=g), torch.randint(13, (3, 8), generator=g)) for _ in range(4)]
    gpt.eval()
    with torch.no_grad():
        expected = sum(F.cross_entropy(gpt(x)[0].flatten(0, 1), y.flatten()).item() for x, y in batches) / 4
    gpt.train()
    assert train.evaluate(gpt, batches) == pytest.approx(expected, rel=1e-6), (
        "evaluate: the mean of the batches' losses in eval mode (dropout off), under torch.no_grad()")
    assert gpt.training, "evaluate: leave the model in the mode it was in (training here)"
    with pytest.raises(ValueError):
        train.evaluate(gpt, [])


@pytest.mark.task02_7
@pytest.mark.points(2)
def test_save_checkpoint_is_atomic(train, tmp_path, monkeypatch):
    """A save that fails midway leaves the previous checkpoint intact and no temporary file behind"""
    path = tmp_path / "new" / "ckpt.pt"
    train.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1, "save_checkpoint must torch.save the state to path"
    before = path.read_bytes()

    def torn_save(obj, f, *args, **kwargs):  # a full disk: half the bytes, then an error
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as file:
                file.write(b"half a checkpoint")
        else:
            f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="No space"):
        train.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before, ("save_checkpoint is not atomic: a failed save destroyed the previous "
                                         "checkpoint (write a temporary file in the same folder, then os.replace)")
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"], (
        "save_checkpoint: remove the temporary file when saving fails")


@pytest.fixture(scope="module")
def tiny_run(presets, train, text, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return out, train.train(presets.PRESETS["tiny"], text, out, progress=False)


@pytest.mark.task02_7
@pytest.mark.points(2)
def test_training_learns_and_writes_its_outputs(logs, presets, train, tiny_run):
    """The tiny preset lowers validation loss from ln(65) and writes checkpoints, losses.csv, loss.png, results.json"""
    out, results = tiny_run
    config = presets.PRESETS["tiny"]
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "losses.csv", "loss.png", "results.json"}
    rows = logs.read_log(out / "losses.csv")
    assert [int(r["step"]) for r in rows] == list(range(config.max_iters + 1))
    evals = [float(r["eval_val"]) for r in rows if r["eval_val"]]
    assert len(evals) == config.max_iters // config.eval_interval + 1
    assert evals[0] == pytest.approx(math.log(65), abs=0.1)  # an untrained model is close to uniform
    assert results["val_loss"] == pytest.approx(evals[-1], abs=1e-5) and results["val_loss"] < math.log(65) - 0.5
    best = train.load_checkpoint(out / "best.pt")
    assert best["best_val"] == pytest.approx(min(evals), abs=1e-5)
    assert len(best["chars"]) == 65 and set(best) >= {"model", "optimizer", "step", "config", "rng", "batch_rng"}
    assert results["ms_per_iter"] > 0 and results["steps"] == config.max_iters


def documented_lr(step: int, config) -> float:
    """train()'s schedule, from get_lr's docstring: linear warmup, cosine decay, then min_lr."""
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / (config.warmup_iters + 1)
    ratio = min(1.0, (step - config.warmup_iters) / (config.lr_decay_iters - config.warmup_iters))
    return config.min_lr + (config.learning_rate - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * ratio))


def documented_losses(train, presets, config, text: str, *, clip: bool = True, schedule: bool = True,
                      zero_grad: bool = True) -> list[float]:
    """The training loss of each step of the loop train()'s docstring describes, written with torch.optim.AdamW and
    clip_grad_norm_; each flag set to False leaves out one part, to name the part a learner's loop lacks."""
    bigram = train.bigram
    tokenizer = bigram.CharTokenizer(text)
    train_ids, _ = bigram.train_val_split(torch.tensor(tokenizer.encode(text), dtype=torch.long))
    torch.manual_seed(config.seed)
    gpt = presets.build_model(config, tokenizer.vocab_size).train()
    optimizer = torch.optim.AdamW(presets.param_groups(gpt, config.weight_decay), lr=config.learning_rate,
                                  betas=(config.beta1, config.beta2), foreach=False)
    batches = torch.Generator().manual_seed(config.seed)
    losses = []
    for step in range(config.max_iters):
        if schedule:
            for group in optimizer.param_groups:
                group["lr"] = documented_lr(step, config)
        x, y = bigram.get_batch(train_ids, config.batch_size, config.block_size, batches)
        _, loss = gpt(x, y)
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(gpt.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


LOOP_MISTAKES = {
    "as if the gradients were never clipped (clip_grad_norm(model.parameters(), grad_clip) when grad_clip > 0)":
        {"clip": False},
    "as if the learning rate never reached the optimizer (set get_lr(step) as every param group's lr)":
        {"schedule": False},
    "as if the gradients were never reset (optimizer.zero_grad(set_to_none=True) before backward)":
        {"zero_grad": False},
}


@pytest.mark.task02_7
@pytest.mark.points(5)
def test_training_steps_follow_the_documented_loop(logs, presets, train, text, tmp_path):
    """Each logged step's lr and loss equal a loop written here with torch.optim.AdamW and clip_grad_norm_ (lr from the
    schedule on every param group, zero_grad, backward, clipping, step), with dropout on: an evaluation that draws
    dropout masks, or leaves the model in eval mode, changes the losses too"""
    config = replace(presets.PRESETS["tiny"], max_iters=10, eval_interval=5, eval_iters=2, dropout=0.1)
    text = text[:200_000]
    train.train(config, text, tmp_path, progress=False)
    rows = logs.read_log(tmp_path / "losses.csv")[:config.max_iters]
    assert [float(r["lr"]) for r in rows] == pytest.approx([documented_lr(s, config) for s in range(10)], rel=1e-5), (
        "train: the lr column must hold get_lr(step) of each step")
    losses, expected = [float(r["loss"]) for r in rows], documented_losses(train, presets, config, text)
    assert losses[0] == pytest.approx(expected[0], abs=2e-5), (
        f"train: step 0's loss (before any update) is {losses[0]}, the documented loop's {expected[0]:.6f}: seed with "
        "config.seed before build_model, draw batches with bigram.get_batch(train ids, ..., batch_generator), train "
        "in training mode; evaluate() must run in eval mode (no dropout masks drawn) and restore training mode")
    if losses != pytest.approx(expected, abs=2e-5):
        step = next(s for s, (a, e) in enumerate(zip(losses, expected, strict=True)) if a != pytest.approx(e, abs=2e-5))
        mistake = next((what for what, flags in LOOP_MISTAKES.items()
                        if losses == pytest.approx(documented_losses(train, presets, config, text, **flags), abs=2e-5)),
                       "set get_lr(step) as every param group's lr, zero_grad, backward, clip_grad_norm when "
                       "grad_clip > 0, optimizer.step()")
        pytest.fail(f"train: the loss of step {step} is {losses[step]}, the documented loop's {expected[step]:.6f}: "
                    f"the updates differ, {mistake}")


@pytest.mark.task02_7
@pytest.mark.points(4)
def test_resumed_run_continues_bit_for_bit(logs, presets, train, text, tmp_path):
    """Stopping at step 30 and resuming to 60 gives exactly the losses of the uninterrupted run; a changed
    config is refused"""
    config = replace(presets.PRESETS["tiny"], dropout=0.1)  # dropout: the RNG state must be restored too
    straight = train.train(config, text, tmp_path / "straight", progress=False)
    train.train(replace(config, max_iters=30), text, tmp_path / "split", progress=False)
    resumed = train.train(config, text, tmp_path / "split", resume=True, progress=False)
    rows = {r["step"]: r for r in logs.read_log(tmp_path / "straight" / "losses.csv")}
    again = {r["step"]: r for r in logs.read_log(tmp_path / "split" / "losses.csv")}
    assert list(again) == list(rows), ("train(resume=True): losses.csv must hold every step 0..max_iters once; "
                                       "LossLog(path, start) keeps the rows before the step it resumes from")
    differ = [step for step in rows if again[step]["loss"] != rows[step]["loss"]]
    assert not differ, (f"train(resume=True): the losses differ from the uninterrupted run's from step {differ[0]}: "
                        "continue from the saved step with the saved model, optimizer and RNG states")
    assert resumed["val_loss"] == straight["val_loss"], "train(resume=True): the final val_loss differs"
    with pytest.raises(ValueError, match="learning_rate"):
        train.train(replace(config, learning_rate=0.5), text, tmp_path / "split", resume=True, progress=False)


@pytest.mark.task02_7
@pytest.mark.points(2)
def test_killed_run_resumes_to_the_same_losses(presets, train, text, tmp_path):
    """`train.py train` killed with SIGKILL mid-run, then run again with --resume, writes the uninterrupted
    run's losses.csv exactly, and `train.py sample` prints text from its checkpoint"""
    script = implementation_root() / "02" / "train.py"
    out, steps = tmp_path / "killed", 400
    command = [sys.executable, str(script), "train", "--preset", "tiny", "--out", str(out),
               "--max-iters", str(steps), "--device", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "losses.csv").exists() and len((out / "losses.csv").read_text().splitlines()) > 50:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate()[1].decode(errors="replace")
    raise_if_stub(stderr)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr[-2000:]}"
    assert train.load_checkpoint(out / "last.pt")["step"] < steps

    finished = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    raise_if_stub(finished.stderr)
    assert finished.returncode == 0, finished.stderr[-2000:]
    straight = train.train(replace(presets.PRESETS["tiny"], max_iters=steps), text, tmp_path / "straight",
                           progress=False)
    assert (out / "losses.csv").read_text() == (tmp_path / "straight" / "losses.csv").read_text()
    assert train.load_checkpoint(out / "last.pt")["best_val"] == straight["best_val"]

    sampled = subprocess.run([sys.executable, str(script), "sample", str(out / "best.pt"), "--tokens", "200",
                              "--prompt", "ROMEO:"], env=env, capture_output=True, text=True, timeout=60)
    raise_if_stub(sampled.stderr)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert sampled.stdout.startswith("ROMEO:") and len(sampled.stdout.rstrip("\n")) >= 200


def training_step(gpt, optimizer, clip, x, y) -> float:
    started = time.perf_counter()
    _, loss = gpt(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip(gpt.parameters(), 1.0)
    optimizer.step()
    return time.perf_counter() - started


@pytest.mark.task02_7
@pytest.mark.benchmark
@pytest.mark.points(3)
def test_training_step_speed_is_close_to_torch_builtins(model, presets, optim, benchmark, leaderboard):
    """A cpu-small training step (from-scratch attention, LayerNorm, AdamW, clipping) costs at most
    speed_ratio_max times the same step with scaled_dot_product_attention, nn.LayerNorm, torch.optim.AdamW and
    clip_grad_norm_ (interleaved, one thread, the median of 25 rounds)"""
    config = presets.PRESETS["cpu-small"]
    torch.manual_seed(0)
    ours = model.GPT(model.GPTConfig(vocab_size=65, block_size=config.block_size, n_layer=config.n_layer,
                                     n_head=config.n_head, n_embd=config.n_embd))
    theirs = builtin.builtin_copy(ours)
    our_opt = optim.AdamW(presets.param_groups(ours, 0.1), lr=1e-3, betas=(0.9, 0.99))
    their_opt = torch.optim.AdamW(presets.param_groups(theirs, 0.1), lr=1e-3, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(65, (config.batch_size, config.block_size), generator=g) for _ in range(2))
    times: dict[str, list[float]] = {"scratch": [], "builtin": []}

    def both() -> None:
        times["scratch"].append(training_step(ours, our_opt, optim.clip_grad_norm, x, y))
        times["builtin"].append(training_step(theirs, their_opt, torch.nn.utils.clip_grad_norm_, x, y))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ratio must not depend on how many cores the grader gives
    try:
        benchmark.pedantic(both, rounds=25, warmup_rounds=3)
    finally:
        torch.set_num_threads(threads)
    scratch, fast = statistics.median(times["scratch"]), statistics.median(times["builtin"])
    benchmark.extra_info.update({"scratch_ms": 1000 * scratch, "builtin_ms": 1000 * fast, "ratio": scratch / fast})
    record_threshold(benchmark, "speed_ratio_max", LIMITS["speed_ratio_max"], scratch / fast)
    leaderboard("training step time / torch's", scratch / fast)
    assert scratch / fast <= LIMITS["speed_ratio_max"], (
        f"a from-scratch training step takes {1000 * scratch:.1f} ms, {scratch / fast:.2f}x the built-in "
        f"{1000 * fast:.1f} ms (limit {LIMITS['speed_ratio_max']}x): look for Python loops over positions or heads, "
        "and for LayerNorm's passes (see LayerNorm.forward)")
