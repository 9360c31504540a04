"""Milestones are done one task at a time: with tasks 1..k written, task k's public and hidden tests pass and task
k+1's fail naming what to write next.

A learner at task k is simulated from the solution (grading/tests/replay.py): the functions whose regions lie in
the sections of tasks 1..k are written, `llmfs.stubs.make_stub` stubs the rest. Each region belongs to the task
of the `# taskNN_k:` section comment above it. test_functions.py replays the same one function at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmfs.course import load_course

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay  # noqa: E402 - a sibling script: the regions, their functions and tasks, a learner's folder

COURSE = load_course()


def test_every_solution_region_belongs_to_a_declared_task():
    for m in COURSE.milestones:
        found = set()
        for module in m.modules:  # a module may have no regions (04's results.py is only read)
            regions = replay.region_functions((COURSE.solutions / m.id / f"{module}.py").read_text())
            tasks = {task for _, task, _ in regions}
            assert tasks <= set(m.tasks), f"{m.id}/{module}.py: regions under {tasks}"
            found |= tasks
        assert found == set(m.tasks), f"{m.id}: tasks without a region: {set(m.tasks) - found}"


def learner_at(tmp_path: Path, milestone, done: set[str]) -> Path:
    """A learner who has written the tasks in `done`: their functions' regions written, the rest stubs."""
    functions = {f.qualname for f in replay.learner_functions(COURSE, milestone) if f.task in done}
    return replay.learner_root(COURSE, milestone, tmp_path / "root",
                               lambda module, text: replay.written(text, functions, milestone.id, f"{module}.py"))


STAGES = [(m, k) for m in COURSE.milestones for k in range(len(m.tasks))]


@pytest.mark.slow
@pytest.mark.parametrize("milestone,k", STAGES, ids=[f"{m.id}-{list(m.tasks)[k]}" for m, k in STAGES])
def test_each_task_passes_once_written_and_the_next_names_its_functions(tmp_path, milestone, k):
    tasks = list(milestone.tasks)
    current, following = tasks[k], tasks[k + 1] if k + 1 < len(tasks) else None
    root = learner_at(tmp_path, milestone, set(tasks[: k + 1]))
    results = tmp_path / "results.jsonl"
    # Speed is measured by the benchmark tests, and slow tests run in the reference grade: here only the rest.
    selected = f"({current} or {following}) and not benchmark and not slow" if following else \
        f"{current} and not benchmark and not slow"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", f"milestones/{milestone.id}", f"tests/{milestone.id}", "-m", selected,
         "--impl-root", str(root), "--llmfs-results", str(results)],
        cwd=COURSE.root, capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in results.read_text().splitlines()]
    outcomes = {e["nodeid"]: e for e in events if e["event"] == "result"}
    task_of = {t["nodeid"]: t["task"] for e in events if e["event"] == "collected" for t in e["tests"]
               if t["nodeid"] in outcomes}  # "collected" lists the deselected tests too
    mine = {n: outcomes[n]["outcome"] for n, t in task_of.items() if t == current}
    assert mine and set(mine.values()) == {"passed"}, f"{current}: {mine}\n{proc.stdout[-3000:]}"
    if following:
        nxt = [outcomes[n] for n, t in task_of.items() if t == following]
        assert nxt and all(r["outcome"] == "failed" and r["kind"] == "stub" for r in nxt), proc.stdout[-3000:]
        assert "still to write" in proc.stdout
