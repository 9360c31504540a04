"""The mutation suite: every realistic single mistake in grading/tests/mutants/ loses points, with a message naming it.

Each mutant is the reference with one mistake planted (grading/tests/mutation.py), graded by the hidden tests of its
task. It must fail at least one of them, the failing output must name the part that is wrong, and a mistake that
changes outputs (a model's logits, a tokenizer's ids, a training run's result) must lose at least a quarter of its
task's points (in 01-05, whose points were rebalanced for it; 06-08 report the share, see mutation.REBALANCED).
Speed mutants give right answers slowly and must lose their benchmark's points, with a hint at the fix. Each
milestone's mutants run in one process (`python grading/tests/mutation.py -m NN --targets ...`), which forks a runner
per mutant and grades it with the hidden tests the last full run (docs/mutation/score.json) saw it fail, so that the
suite fits CI's time.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from llmfs.course import SOLUTION_BEGIN, SOLUTION_END

HERE = Path(__file__).parent
LAST_FULL_RUN = HERE.parents[1] / "docs" / "mutation" / "score.json"
_spec = importlib.util.spec_from_file_location("mutation", HERE / "mutation.py")
mutation = importlib.util.module_from_spec(_spec)
sys.modules["mutation"] = mutation  # the mutant lists import Mutant from it; dataclasses look their module up
_spec.loader.exec_module(mutation)
MUTANTS = mutation.all_mutants()


@cache
def outcomes(milestone: str, scratch: Path) -> dict[str, dict] | str:
    """Each mutant's record from one run of the milestone's mutants, or why there is none (kept, so that a run that
    broke is not repeated for each of its mutants)."""
    out = scratch / f"mutants-{milestone}.json"
    try:
        proc = subprocess.run([sys.executable, str(HERE / "mutation.py"), "-m", milestone, "--json", str(out),
                               "--targets", str(LAST_FULL_RUN)], capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as error:
        return f"the mutants of {milestone} did not finish in {error.timeout:g} s"
    if not out.exists():
        return f"the mutants of {milestone} wrote no results:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return {record["mutant"]: record for record in json.loads(out.read_text())}


def test_the_last_full_run_knows_every_mutant():
    """The slow suite grades each mutant with the hidden tests the last full run saw it fail: a mutant added or
    renamed since needs a new full run (or it would be graded with its whole task, slowly)."""
    recorded = {r["mutant"]: r for r in json.loads(LAST_FULL_RUN.read_text())}
    missing = [m.id for m in MUTANTS if not recorded.get(m.id, {}).get("failed")]
    assert not missing, f"{LAST_FULL_RUN.name} has no failed tests for {missing}: run {mutation.FULL_RUN}"


def _inside_a_region(source: str, anchor: str) -> bool:
    start = source.index(anchor)
    opened, closed = source.rfind(SOLUTION_BEGIN, 0, start), source.rfind(SOLUTION_END, 0, start)
    return opened > closed and source.find(SOLUTION_END, start) >= start + len(anchor)


def test_every_mutant_is_a_mistake_in_code_the_learner_writes(course):
    """A mutant changes code inside a solution region: argument checks and other given code are not the learner's
    to get wrong."""
    outside = []
    for m in MUTANTS:
        source = (course.solutions / m.milestone / f"{m.module}.py").read_text()
        anchors = m.original if isinstance(m.original, tuple) else (m.original,)
        if not all(_inside_a_region(source, anchor) for anchor in anchors):
            outside.append(f"{m.id} ({m.module}.py)")
    assert not outside, "mutants outside the learner's regions:\n" + "\n".join(outside)


def test_every_milestone_has_a_dozen_mutants_over_all_its_tasks(course):
    """Issue 16: at least 12 mutants for each of 01-05, and every task of every milestone has one."""
    for milestone in course.milestones:
        mine = [m for m in MUTANTS if m.milestone == milestone.id]
        if milestone.id <= "05":
            assert len(mine) >= 12, f"milestone {milestone.id} has {len(mine)} mutants; the course asks for 12"
        covered = set()
        for m in mine:
            anchor = m.original[0] if isinstance(m.original, tuple) else m.original
            path = course.solutions / m.milestone / f"{m.module}.py"
            covered.add(m.task or mutation.task_of(path.read_text(), anchor, str(path)))
        assert covered >= set(milestone.tasks), (
            f"milestone {milestone.id}: no mutant in {sorted(set(milestone.tasks) - covered)}")


@pytest.mark.slow
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_a_single_mistake_loses_points_with_a_message_naming_it(mutant, tmp_path_factory):
    records = outcomes(mutant.milestone, tmp_path_factory.getbasetemp())
    assert isinstance(records, dict), records
    record = records[mutant.id]
    assert record["verdict"] == "caught", (
        f"{mutant.id}: {record['verdict']}; failed: {record['failed']}\n{record['output'][-3000:]}")
