"""The results page of milestone 06: what sampling settings and penalties do to a model the course trained.

Nothing to write here: `python milestones/06/sampling.py results` calls `write_results` with your processors and
your `generate`. With milestone 05's `cpu-shakespeare` checkpoint (trained first if it is missing) it measures

    next-token distributions   the probabilities after temperature, top-k and top-p, for one prompt
    repetition                 distinct-n and repeated n-grams in 200 generated tokens, per penalty, over prompts

and writes results.json, results.md, distributions.png and penalties.png into the output folder, atomically.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import torch

from llmfs.fsutil import atomic_write_text
from llmfs.loader import dependency

if __package__:
    from .sampling import LoadedModel, SamplingConfig, generate, load_generator, process_logits
else:
    from sampling import LoadedModel, SamplingConfig, generate, load_generator, process_logits

PROMPT = "ROMEO:\nI will"
PROMPTS = ["ROMEO:\n", "JULIET:\nO", "KING RICHARD II:\nWhat", "First Citizen:\nWe", "MENENIUS:\nI tell you"]
WARPERS = {  # label: SamplingConfig settings (do_sample=True)
    "T = 1 (the model)": {},
    "T = 0.5": {"temperature": 0.5},
    "T = 1.5": {"temperature": 1.5},
    "top-k = 10": {"top_k": 10},
    "top-p = 0.5": {"top_p": 0.5},
    "T = 0.8, top-p = 0.9": {"temperature": 0.8, "top_p": 0.9},
}
PENALTIES = {  # label: generate settings, greedy unless it says sampled
    "greedy": {},
    "greedy, repetition 1.3": {"repetition_penalty": 1.3},
    "greedy, presence 1.0": {"presence_penalty": 1.0},
    "greedy, frequency 0.5": {"frequency_penalty": 0.5},
    "sampled, T = 0.8, top-p = 0.9": {"do_sample": True, "temperature": 0.8, "top_p": 0.9},
    "sampled + repetition 1.3": {"do_sample": True, "temperature": 0.8, "top_p": 0.9, "repetition_penalty": 1.3},
}
NEW_TOKENS = 200


def next_token_distributions(gen: LoadedModel, prompt: str = PROMPT, top: int = 12) -> dict[str, dict]:
    """For each of WARPERS: the `top` most likely next tokens of the model's distribution, with their probability
    after the warper, and how many tokens keep a non-zero probability."""
    ids = torch.tensor([gen.encode(prompt)])
    with torch.no_grad():
        logits = gen.model(ids[:, -gen.model.config.block_size:])[0][:, -1, :].float()  # (1, V)
    order = logits[0].argsort(descending=True)[:top]
    rows = {}
    for label, settings in WARPERS.items():
        probs = process_logits(logits, ids, ids.size(1), SamplingConfig(do_sample=True, **settings)).softmax(-1)[0]
        rows[label] = {"tokens": [gen.decode([i]) for i in order.tolist()],
                       "probs": [round(p, 5) for p in probs[order].tolist()],
                       "support": int((probs > 0).sum())}
    return rows


def repetition_stats(tokens: list[int], n_values: tuple[int, ...] = (1, 2, 3)) -> dict[str, float]:
    """distinct-n: distinct n-grams / all n-grams (1 = nothing repeats); repeated-n: the share of n-grams that
    already occurred earlier in the text (0 = no loop)."""
    stats = {}
    for n in n_values:
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        stats[f"distinct-{n}"] = len(set(grams)) / max(len(grams), 1)
        stats[f"repeated-{n}"] = 1 - stats[f"distinct-{n}"]
    return stats


def penalty_samples(gen: LoadedModel, prompts: list[str] = PROMPTS, new_tokens: int = NEW_TOKENS) -> dict[str, dict]:
    """For each of PENALTIES: mean repetition statistics over the prompts (one seeded sample each) and the first
    prompt's text."""
    rows = {}
    for label, settings in PENALTIES.items():
        stats, texts = [], []
        for seed, prompt in enumerate(prompts):
            ids = gen.encode(prompt)
            out = generate(gen.model, torch.tensor([ids]), new_tokens, eos_token_id=gen.eos_token_id,
                           generator=torch.Generator().manual_seed(seed), **settings)
            new = out[0, len(ids):].tolist()
            stats.append(repetition_stats(new))
            texts.append(prompt + gen.decode(new))
        rows[label] = {"settings": settings, "text": texts[0],
                       **{k: round(sum(s[k] for s in stats) / len(stats), 4) for k in stats[0]}}
    return rows


def plot(distributions: dict[str, dict], penalties: dict[str, dict], out: Path) -> list[Path]:
    """distributions.png (one bar chart per warper) and penalties.png (distinct-2 and repeated-3 per setting)."""
    from matplotlib.figure import Figure  # the object API: a notebook keeps its backend

    fig = Figure(figsize=(13, 6.5))
    axes = fig.subplots(2, 3, sharey=True)
    model = next(iter(distributions.values()))["probs"]
    for ax, (label, row) in zip(axes.flat, distributions.items(), strict=True):
        names = [repr(t)[1:-1] for t in row["tokens"]]
        ax.bar(range(len(names)), model, color="none", edgecolor="gray", linestyle="--", label="T = 1")
        ax.bar(range(len(names)), row["probs"], color="tab:blue", alpha=0.8, label=label)
        ax.set_xticks(range(len(names)), names, rotation=70, fontsize=8)
        ax.set_title(f"{label}: {row['support']:,} tokens possible", fontsize=10)
    axes[0, 0].set_ylabel("probability of the next token")
    axes[1, 0].set_ylabel("probability of the next token")
    fig.suptitle(f"Next token after {PROMPT!r}: what temperature, top-k and top-p keep", fontsize=11)
    paths = [out / "distributions.png", out / "penalties.png"]
    _save(fig, paths[0])
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    labels = list(penalties)
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], [penalties[k]["distinct-2"] for k in labels], 0.4, label="distinct-2 (higher: varied)")
    ax.bar([i + 0.2 for i in x], [penalties[k]["repeated-3"] for k in labels], 0.4,
           label="repeated 3-grams (higher: loops)")
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    ax.set_title(f"Repetition in {NEW_TOKENS} generated tokens, mean over {len(PROMPTS)} prompts", fontsize=11)
    _save(fig, paths[1])
    return paths


def _save(fig, path: Path) -> None:
    """Save a figure atomically: a temporary file, then a rename."""
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def table(distributions: dict[str, dict], penalties: dict[str, dict], name: str) -> str:
    """results.md: the two tables and the samples side by side."""
    lines = [f"Model: {name}. Prompt for the distributions: `{PROMPT!r}`.", "",
             "| setting | tokens possible | top-3 next tokens (probability) |", "|---|---|---|"]
    for label, row in distributions.items():
        top = ", ".join(f"`{t!r}` {p:.3f}" for t, p in zip(row["tokens"][:3], row["probs"][:3], strict=True))
        lines.append(f"| {label} | {row['support']:,} | {top} |")
    lines += ["", f"Repetition in {NEW_TOKENS} new tokens, mean over {len(PROMPTS)} prompts:", "",
              "| setting | distinct-1 | distinct-2 | repeated 3-grams |", "|---|---|---|---|"]
    for label, row in penalties.items():
        lines.append(f"| {label} | {row['distinct-1']:.3f} | {row['distinct-2']:.3f} | {row['repeated-3']:.3f} |")
    lines += ["", f"Samples from the prompt `{PROMPTS[0]!r}` (first {NEW_TOKENS} tokens):", ""]
    labels = list(penalties)
    for left, right in zip(labels[::2], labels[1::2], strict=True):
        lines += [f"| {left} | {right} |", "|---|---|",
                  f"| {_cell(penalties[left]['text'])} | {_cell(penalties[right]['text'])} |", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """A sample inside a table cell: line breaks shown as ⏎, a run of them counted (⏎×37)."""
    text = re.sub(r"\n{2,}", lambda m: f" ⏎×{len(m.group())} ", text.replace("|", "\\|"))
    return text.replace("\n", " ⏎ ")


def write_results(checkpoint: Path | None, out: Path) -> dict:
    """Measure, plot and write the page; trains 05's cpu-shakespeare preset first when no checkpoint is given and
    runs/05/cpu-shakespeare/last.pt is missing (about 3 minutes on 2 cores)."""
    if checkpoint is None:
        checkpoint = Path("runs/05/cpu-shakespeare/last.pt")
        if not checkpoint.is_file():
            m05 = dependency("05", "train")
            print(f"no {checkpoint}: training milestone 05's cpu-shakespeare preset first")
            m05.train(m05.PRESETS["cpu-shakespeare"], checkpoint.parent)
    gen = load_generator(checkpoint)
    torch.manual_seed(0)
    distributions = next_token_distributions(gen)
    penalties = penalty_samples(gen)
    out.mkdir(parents=True, exist_ok=True)
    plot(distributions, penalties, out)
    results = {"model": gen.name, "checkpoint": str(checkpoint), "machine": f"{platform.machine()}, torch "
               f"{torch.__version__}", "prompt": PROMPT, "distributions": distributions, "penalties": penalties}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "results.md", table(distributions, penalties, gen.name) + "\n")
    print(f"wrote {out}/results.md, results.json, distributions.png, penalties.png")
    return results
