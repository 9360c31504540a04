"""Milestones are done one task at a time: with tasks 1..k written, task k's public and hidden tests pass and task
k+1's fail naming what to write next.

A learner at task k is simulated from the solution: the marker lines of the regions in the sections of tasks
1..k are removed (those regions stay as written), then `llmfs.stubs.make_stub` stubs the rest. Each region
belongs to the task of the `# taskNN_k:` section comment above it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmfs.course import load_course
from llmfs.stubs import make_stub

SECTION = re.compile(r"^# (task\d\d_\d+):")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def region_tasks(source: str) -> list[str | None]:
    """The task of each solution region, in order (None for a region above every task section)."""
    tasks, current = [], None
    for line in source.splitlines():
        if match := SECTION.match(line):
            current = match.group(1)
        elif line.strip() == BEGIN:
            tasks.append(current)
    return tasks


def solved_up_to(source: str, done: set[str], milestone: str, filename: str) -> str:
    """`source` as a learner has it after writing the tasks in `done`: their regions written, the rest stubs."""
    kept, current, unwrapping = [], None, False
    for line in source.splitlines(keepends=True):
        if match := SECTION.match(line):
            current = match.group(1)
        if line.strip() == BEGIN and current in done:
            unwrapping = True
            continue
        if line.strip() == END and unwrapping:
            unwrapping = False
            continue
        kept.append(line)
    partial = "".join(kept)
    if BEGIN not in partial:  # nbgrader would replace a cell without regions by one stub
        return partial
    return make_stub(partial, milestone, filename)


COURSE = load_course()


def test_every_solution_region_belongs_to_a_declared_task():
    for m in COURSE.milestones:
        found = set()
        for module in m.modules:  # a module may have no regions (04's results.py is only read)
            tasks = region_tasks((COURSE.solutions / m.id / f"{module}.py").read_text())
            assert set(tasks) <= set(m.tasks), f"{m.id}/{module}.py: regions under {set(tasks)}"
            found |= set(tasks)
        assert found == set(m.tasks), f"{m.id}: tasks without a region: {set(m.tasks) - found}"


def earlier_milestones(milestone) -> list[str]:
    """Every milestone `milestone` builds on, directly or through another (05 -> 02 -> 01)."""
    found: list[str] = []
    todo = list(milestone.builds_on)
    while todo:
        m = todo.pop()
        if m not in found:
            found.append(m)
            todo += COURSE.milestone(m).builds_on
    return found


def learner_at(tmp_path: Path, milestone, done: set[str]) -> Path:
    root = tmp_path / "root"
    for earlier in earlier_milestones(milestone):  # finished milestones, with what they build on
        shutil.copytree(COURSE.solutions / earlier, root / earlier, ignore=shutil.ignore_patterns("__pycache__"))
    (root / milestone.id).mkdir(parents=True)
    for module in milestone.modules:
        source = (COURSE.solutions / milestone.id / f"{module}.py").read_text()
        (root / milestone.id / f"{module}.py").write_text(solved_up_to(source, done, milestone.id, f"{module}.py"))
    return root


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
