"""Feedback per function: every function a learner writes has public tests of its own, which turn green as soon
as it (and the functions before it) are written, while the next function's still fail on its stub. At the last
function of a task, the task's hidden tests pass and the next task's fail on stubs.

The replay itself is grading/tests/replay.py (one forked pytest per function, torch imported once).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmfs.course import load_course

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import replay  # noqa: E402 - a sibling script, importable once its folder is on the path

COURSE = load_course()
IDS = [m.id for m in COURSE.milestones]


@pytest.mark.parametrize("milestone", IDS)
def test_every_public_test_checks_one_function_of_its_task_and_every_function_has_its_own(milestone):
    _, problems = replay.public_checks(COURSE, COURSE.milestone(milestone))
    assert not problems, "\n".join(problems)


def test_the_order_puts_tasks_first_then_modules_then_lines():
    m = COURSE.milestone("03")
    functions = replay.learner_functions(COURSE, m)
    tasks = [f.task for f in functions]
    assert tasks == sorted(tasks, key=list(m.tasks).index)
    assert len({f.qualname for f in functions}) == len(functions) >= 10


def test_written_keeps_exactly_the_chosen_functions():
    source = (COURSE.solutions / "01" / "bigram.py").read_text()
    partial = replay.written(source, {"CharTokenizer.__init__", "CharTokenizer.encode"}, "01", "bigram.py")
    assert "### BEGIN SOLUTION" not in partial
    stubbed = partial.count("raise NotImplementedError")
    assert stubbed == len(replay.learner_functions(COURSE, COURSE.milestone("01"))) - 2, stubbed


@pytest.mark.slow
@pytest.mark.parametrize("milestone", IDS)
def test_each_function_turns_its_own_public_tests_green(milestone):
    proc = subprocess.run([sys.executable, str(HERE / "replay.py"), "-m", milestone, "--jobs", "2"],
                          cwd=COURSE.root, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_k_with_a_functions_name_selects_its_tests_whatever_they_are_called():
    """`pytest milestones/NN -k NAME` selects the tests whose checks marker names NAME (the plugin adds it to their
    keywords), also those whose own name does not contain it."""
    for m in COURSE.milestones:
        checks, _ = replay.public_checks(COURSE, m)
        unnamed = [(name, ids) for name, ids in checks.items()
                   if any(name.rsplit(".", 1)[-1] not in i.split("::")[1] for i in ids)]
        if unnamed:
            break
    name, ids = unnamed[0]
    proc = subprocess.run([sys.executable, "-m", "pytest", f"milestones/{m.id}", "--collect-only", "-q",
                           "-k", name.rsplit(".", 1)[-1]], cwd=COURSE.root, capture_output=True, text=True, timeout=300)
    selected = {line.split("[")[0] for line in proc.stdout.splitlines() if "::" in line}
    assert set(ids) <= selected, f"-k {name} missed {set(ids) - selected}"
