"""Does the reference keep every point on a busy machine? Grade it beside CPU-heavy processes, several times.

    python -m llmfs.loaded --busy 2 --runs 3                    # every milestone, three times, two busy processes
    python -m llmfs.loaded -m 01 -m 02 --runs 1 --json FILE     # some milestones, once, figures kept in FILE

Each run is `llmfs grade --reference` under the course's own limits while `--busy` processes compete for the
cores. Each busy process alternates single-threaded matrix products with pure Python arithmetic, as another
learner's grading or a browser would. A grade that depends on how busy the machine is fails this check: the
course asks for full points in every run (exit code 1 otherwise, with the tests that lost points). The table also
shows the most CPU-seconds one test used against the per-test limit (course.toml `test_timeout_s`, CPU-seconds): the
headroom a slower but correct submission has.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmfs.course import load_course
from llmfs.fsutil import atomic_write_text
from llmfs.margins import cpu_load

BUSY = """
import torch
torch.set_num_threads(1)
a = torch.randn(384, 384)
while True:
    for _ in range(20):
        a = torch.tanh(a @ a)
    sum(i * i for i in range(100_000))
"""


def grade_reference(milestones: list[str], timeout_s: float) -> list[dict]:
    """One `llmfs grade --reference`: per milestone, its score, status, seconds and the tests that lost points."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "results.json"
        selection = [arg for m in milestones for arg in ("-m", m)]
        proc = subprocess.run([sys.executable, "-m", "llmfs.cli", "grade", "--reference", *selection, "--json",
                               str(out)], capture_output=True, text=True, timeout=timeout_s)
        if not out.exists():
            raise RuntimeError(f"llmfs grade wrote no results (exit code {proc.returncode})\n{proc.stdout[-2000:]}"
                               f"\n{proc.stderr[-2000:]}")
        results = json.loads(out.read_text())
    lost = [t for t in results["tests"] if t["score"] < t["max_score"]]
    rows = []
    for m in results["extra_data"]["milestones"]:
        rows.append({"milestone": m["id"], "score": m["score"], "max_score": m["max_score"], "status": m["status"],
                     "seconds": m["seconds"], "most_test_cpu_s": m["most_test_cpu_s"],
                     "most_test_cpu": m["most_test_cpu"], "test_cpu_limit_s": m["test_cpu_limit_s"],
                     "lost": [f"{t['name']}: {t['output'][:300]}" for t in lost if t["number"].startswith(m["id"])]})
    return rows


def table(runs: list[list[dict]]) -> str:
    milestones = [row["milestone"] for row in runs[0]]
    lines = ["| milestone | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
             + " | slowest run | most CPU one test used | per-test limit (headroom) |",
             "|---|" + "---|" * len(runs) + "---|---|---|"]
    for index, milestone in enumerate(milestones):
        cells = [f"{run[index]['score']:g}/{run[index]['max_score']:g}" for run in runs]
        slowest = max(run[index]["seconds"] for run in runs)
        heaviest = max((run[index] for run in runs), key=lambda row: row["most_test_cpu_s"])
        cpu, limit = heaviest["most_test_cpu_s"], heaviest["test_cpu_limit_s"]
        headroom = f"{limit / cpu:.1f}x" if cpu else "-"
        lines.append(f"| {milestone} | " + " | ".join(cells) + f" | {slowest:.0f} s | {cpu:.1f} CPU-s "
                     f"({heaviest['most_test_cpu'][:60]}) | {limit:g} CPU-s ({headroom}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--milestone", action="append", metavar="NN", help="only these milestones")
    parser.add_argument("--busy", type=int, default=2, metavar="N", help="CPU-heavy processes alongside (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="how many times to grade (default 3)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every run's figures to FILE")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.busy < 0:
        parser.error("--runs must be at least 1 and --busy at least 0")
    course = load_course()
    known = [m.id for m in course.milestones]
    if unknown := [m for m in args.milestone or [] if m not in known]:
        parser.error(f"unknown milestone(s) {', '.join(unknown)}; the course has {', '.join(known)}")
    chosen = args.milestone or known
    budget = 2 * sum(m.time_limit_s for m in course.milestones if m.id in chosen) + 1800  # plus any dataset build
    runs: list[list[dict]] = []
    started = time.monotonic()
    with cpu_load(args.busy, BUSY):
        for run in range(args.runs):
            runs.append(grade_reference(chosen, budget))
            print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{r['milestone']} {r['score']:g}/{r['max_score']:g}"
                                                         for r in runs[-1]), flush=True)
    print(table(runs))
    for number, run in enumerate(runs, start=1):
        for row in run:
            for test in row["lost"]:
                print(f"run {number}, lost points: {test}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"busy": args.busy, "runs": runs,
                                                 "seconds": round(time.monotonic() - started)}, indent=1) + "\n")
    full = all(row["score"] == row["max_score"] for run in runs for row in run)
    return 0 if full else 1


if __name__ == "__main__":
    sys.exit(main())
