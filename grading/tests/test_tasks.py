"""Milestones are done one task at a time, each task's code in one section of its files.

Every solution region belongs to the task of the `# taskNN_k:` section comment above it, and every task has one.
The replay that writes a milestone one function at a time (grading/tests/replay.py, run by test_functions.py)
also checks, at the last function of each task, that the task's hidden tests pass and the next task's fail on
stubs with "still to write" naming what is left.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
