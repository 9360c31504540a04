"""How much room each speed threshold leaves the reference: run the benchmarks several times, optionally beside a
CPU-heavy process, and report the smallest margin of every threshold.

    python -m llmfs.margins -m 01 -m 02 -m 03 -m 05 --runs 5            # an idle machine
    python -m llmfs.margins -m 01 -m 02 -m 03 -m 05 --runs 5 --load 1   # beside one busy-looping process

Each run is `pytest tests/NN -m benchmark` against the reference, in a fresh process. The tests note the threshold
they checked with `llmfs.testing.record_threshold`; a margin is how far the figure could worsen before failing
(1.25 = 25% of room). The course asks for at least 1.2 in every run. `--json FILE` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from llmfs.course import load_course
from llmfs.fsutil import atomic_write_text

REQUIRED_MARGIN = 1.2
BUSY_LOOP = "while True: pass"


@contextmanager
def cpu_load(processes: int, program: str = BUSY_LOOP):
    """`processes` CPU-heavy Python processes (each running `program`, a busy loop by default) for the block."""
    hogs = [subprocess.Popen([sys.executable, "-c", program]) for _ in range(processes)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def run_benchmarks(root: Path, milestone: str, timeout_s: float) -> list[dict]:
    """One `pytest tests/NN -m benchmark` run: each benchmark that recorded a threshold, as a dict."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "benchmark.json"
        proc = subprocess.run([sys.executable, "-m", "pytest", f"tests/{milestone}", "-m", "benchmark", "-q",
                               "-p", "no:cacheprovider", f"--benchmark-json={out}"], cwd=root, capture_output=True,
                              text=True, timeout=timeout_s)
        if not out.exists():
            raise RuntimeError(f"tests/{milestone}: pytest wrote no benchmark JSON\n{proc.stdout[-2000:]}")
        failed = proc.returncode != 0
        rows = []
        for bench in json.loads(out.read_text())["benchmarks"]:
            info = bench["extra_info"]
            if "threshold" in info:
                rows.append({"milestone": milestone, "test": bench["name"], **{k: info[k] for k in
                             ("threshold", "limit", "figure", "margin")}, "run_failed": failed})
        return rows


def table(rows: list[dict]) -> str:
    by_key: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_key.setdefault((row["milestone"], row["threshold"]), []).append(row)
    lines = ["| Milestone | Threshold | Limit | Figures | Smallest margin |", "|---|---|---|---|---|"]
    for (milestone, key), runs in sorted(by_key.items()):
        figures = ", ".join(f"{r['figure']:.3g}" for r in runs)
        worst = min(r["margin"] for r in runs)
        flag = "" if worst >= REQUIRED_MARGIN else " (below 1.2)"
        lines.append(f"| {milestone} | `{key}` | {runs[0]['limit']} | {figures} | {worst:.2f}{flag} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfs.margins", description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--milestone", action="append", required=True, help="milestone id, repeatable")
    parser.add_argument("--runs", type=int, default=5, help="consecutive runs of each milestone (default 5)")
    parser.add_argument("--load", type=int, default=0, metavar="N", help="busy-looping processes alongside")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.load < 0:
        parser.error("--runs must be at least 1 and --load at least 0")
    course = load_course()
    for milestone in args.milestone:
        course.milestone(milestone)  # an unknown id is a clear error before any run
    os.environ.pop("LLMFS_ROOT", None)  # the reference
    rows: list[dict] = []
    with cpu_load(args.load):
        for run in range(args.runs):
            for milestone in args.milestone:
                found = run_benchmarks(course.root, milestone, course.milestone(milestone).time_limit_s)
                rows += [{**row, "run": run} for row in found]
                print(f"run {run + 1}/{args.runs}, {milestone}: " + ", ".join(
                    f"{r['threshold']} {r['figure']:.3g} (margin {r['margin']:.2f})" for r in found), flush=True)
    print(table(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps({"load": args.load, "runs": args.runs, "rows": rows}, indent=1))
    return 0 if all(r["margin"] >= REQUIRED_MARGIN and not r["run_failed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
