"""Milestone 08: how much speculative decoding saves, measured and predicted.

    python milestones/08/speculative.py results        # results.json, results.md, speedup.png in milestones/08/results

With acceptance rate alpha and gamma draft tokens per round, a round yields on average
E = 1 + alpha + ... + alpha^gamma = (1 - alpha^(gamma+1)) / (1 - alpha) tokens and costs gamma c + v target steps
(c: a draft step / a target step, v: the verification pass / a target step), so the predicted speed-up is
E / (gamma c + v) (Leviathan et al. 2023, Theorem 3.8, with v in place of 1). `write_results` measures it on the
course's pair for gamma = 1..8 in float32 and bfloat16 and puts the prediction next to it (README: Results).
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
    from . import pair as pairs
    from . import speculative
else:
    import pair as pairs
    import speculative

GAMMAS = list(range(1, 9))
PROMPTS = ["Once upon a time", "One day, a little girl named Lily", "Tom and his dog", "The sun was"]



def _check_alpha_gamma(alpha: float, gamma: int) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not isinstance(gamma, int) or isinstance(gamma, bool) or gamma < 0:
        raise ValueError(f"gamma must be an int >= 0, got {gamma!r}")


# ----------------------------------------------------------------------------------------------------
# task08_4: the pair's numbers


def acceptance_rate(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> float:
    """alpha from distributions: the mean over positions of sum_x min(p(x), q(x)), for target_probs and draft_probs
    (..., V) at the same positions. It is the chance that a token drawn from q is accepted (sum over x of q(x) *
    min(1, p(x) / q(x))); 1 for identical distributions, 0 for disjoint ones."""
    ### BEGIN SOLUTION
    return float(torch.minimum(target_probs, draft_probs).sum(dim=-1).mean())
    ### END SOLUTION


def expected_tokens(alpha: float, gamma: int) -> float:
    """Tokens per round (per target pass): (1 - alpha^(gamma+1)) / (1 - alpha), and gamma + 1 when alpha = 1.
    (ValueError unless 0 <= alpha <= 1 and gamma is an int >= 0: checked for you.)"""
    _check_alpha_gamma(alpha, gamma)
    ### BEGIN SOLUTION
    if alpha == 1:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)
    ### END SOLUTION


def predicted_speedup(alpha: float, gamma: int, c: float, v: float = 1.0) -> float:
    """expected_tokens(alpha, gamma) / (gamma c + v): tokens per unit of time against one target step per token.
    c: a draft step's cost / a target step's; v: the verification pass's cost / a target step's."""
    ### BEGIN SOLUTION
    return expected_tokens(alpha, gamma) / (gamma * c + v)
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# Measuring (given code)


def _best_time(run, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def step_costs(pair: pairs.Pair, gamma: int, prompt: torch.Tensor) -> tuple[float, float]:
    """(c, v): a draft step and a target pass over gamma + 1 tokens, each over a target step, with caches."""
    kvcache = dependency("07", "kvcache")

    def forward(model, n):
        cache = kvcache.KVCache.for_model(model, 1, prompt.size(1) + 16)
        kvcache.forward_cached(model, prompt, cache)
        new = prompt[:, -n:]

        def run():
            for _ in range(50):
                kvcache.forward_cached(model, new, cache, last_only=n == 1)
                cache.rollback(prompt.size(1))
        return _best_time(run, 5)

    with torch.no_grad():
        target_step = forward(pair.target, 1)
        return forward(pair.draft, 1) / target_step, forward(pair.target, gamma + 1) / target_step


def measure(pair: pairs.Pair, new_tokens: int = 112, gammas: list[int] = GAMMAS) -> list[dict]:
    """One row per dtype and gamma: tokens/s of 07's greedy decoding and of speculative greedy decoding (interleaved,
    best of three each), the speed-up, alpha, tokens per target pass, c, v and the predicted speed-up. One thread."""
    kvcache = dependency("07", "kvcache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    prompts = [torch.tensor([[pair.eos_token_id, *pair.tokenizer.encode_ordinary(p)]]) for p in PROMPTS]
    rows = []
    try:
        for dtype in ("float32", "bfloat16"):
            cast = pairs.Pair(kvcache.to_dtype(pair.target, getattr(torch, dtype)),
                              kvcache.to_dtype(pair.draft, getattr(torch, dtype)), pair.tokenizer, pair.eos_token_id,
                              pair.info)
            rows += _measure_dtype(cast, dtype, prompts, new_tokens, gammas)
    finally:
        torch.set_num_threads(threads)
    return rows


def _measure_dtype(pair: pairs.Pair, dtype: str, prompts: list[torch.Tensor], new_tokens: int,
                   gammas: list[int]) -> list[dict]:
    from tqdm import tqdm

    decoding = dependency("07", "decoding")
    tokens = len(prompts) * new_tokens
    rows = []
    for gamma in tqdm(gammas, desc=f"08 results, {dtype}", unit="gamma"):
        stats: list = []

        def run(gamma: int = gamma, stats: list = stats) -> None:
            stats[:] = [speculative.speculative_generate(pair.target, pair.draft, p, new_tokens, gamma,
                                                         return_stats=True)[1] for p in prompts]

        plain = fast = float("inf")
        for _ in range(3):  # interleaved, best of three each: the machine's noise only adds time
            plain = min(plain, _best_time(lambda: [decoding.generate(pair.target, p, new_tokens) for p in prompts], 1))
            fast = min(fast, _best_time(run, 1))
        accepted = sum(s.accepted for s in stats)
        alpha = accepted / max(accepted + sum(s.rejected for s in stats), 1)
        c, v = step_costs(pair, gamma, prompts[0])
        rows.append({"dtype": dtype, "gamma": gamma, "plain_tokens_per_s": round(tokens / plain, 1),
                     "tokens_per_s": round(tokens / fast, 1), "speedup": round(plain / fast, 3),
                     "alpha": round(alpha, 3), "tokens_per_call": round(tokens / sum(s.target_calls for s in stats), 3),
                     "c": round(c, 3), "v": round(v, 3), "predicted": round(predicted_speedup(alpha, gamma, c, v), 3)})
    return rows


def plot(rows: list[dict], out: Path) -> Path:
    """speedup.png: measured and predicted speed-up against gamma per dtype, and alpha beside it."""
    from matplotlib.figure import Figure  # the object API: a notebook's backend stays as it is

    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    for dtype, color in (("float32", "tab:blue"), ("bfloat16", "tab:orange")):
        line = [r for r in rows if r["dtype"] == dtype]
        gammas = [r["gamma"] for r in line]
        left.plot(gammas, [r["speedup"] for r in line], marker="o", color=color, label=f"{dtype}, measured")
        left.plot(gammas, [r["predicted"] for r in line], linestyle="--", color=color, label=f"{dtype}, predicted")
        right.plot(gammas, [r["alpha"] for r in line], marker="o", color=color, label=dtype)
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set(xlabel="gamma (draft tokens per round)", ylabel="speed-up over 07's cached greedy decoding",
             title="Speculative greedy decoding, one thread")
    right.set(xlabel="gamma", ylabel="alpha (acceptance rate)", title="Acceptance", ylim=(0, 1))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "speedup.png"
    dependency("02", "train").save_figure(fig, path)  # milestone 02's: atomic
    return path


def table(rows: list[dict]) -> str:
    """results.md: one line per dtype and gamma."""
    lines = ["| dtype | gamma | 07 tokens/s | speculative tokens/s | speed-up | predicted | alpha | tokens per target "
             "pass | c | v |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['gamma']} | {r['plain_tokens_per_s']:.0f} | {r['tokens_per_s']:.0f} | "
                     f"{r['speedup']:.2f}x | {r['predicted']:.2f}x | {r['alpha']:.2f} | {r['tokens_per_call']:.2f} | "
                     f"{r['c']:.2f} | {r['v']:.2f} |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, quick: bool = False, folder: Path | None = None) -> dict:
    """Measure on the course's pair (or the pair in `folder`) and write results.json, results.md and speedup.png
    into `out`, atomically; returns what results.json holds."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pair = pairs.load_pair(folder)
    rows = measure(pair, new_tokens=64 if quick else 112, gammas=[1, 2, 4] if quick else GAMMAS)
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, one thread"
    written = {"machine": machine, "pair": pair.info, "rows": rows}
    atomic_write_text(out / "results.json", json.dumps(written, indent=1) + "\n")
    atomic_write_text(out / "results.md", f"Pair: {pairs.describe(pair.info)}. Machine: {machine}.\n\n" + table(rows))
    plot(rows, out)
    print(table(rows))
    return written
