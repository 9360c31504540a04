"""What a learner sees: `pytest milestones/NN` on the stubs, then with the solution filled in."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay  # noqa: E402 - a sibling script: the functions a learner writes, in order


def learner_copy(course, tmp_path: Path) -> Path:
    """A learner's checkout: the manifest, the pytest settings and milestones/, without solutions/ or tests/."""
    root = tmp_path / "learner"
    root.mkdir()
    for name in ("course.toml", "pyproject.toml"):
        shutil.copy(course.root / name, root / name)
    shutil.copytree(course.milestones_dir, root / "milestones")
    return root


def run_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("milestone", ["01", "02", "03", "04", "05", "06", "07"])
def test_stubs_fail_fast_naming_the_function_to_write(course, tmp_path, milestone):
    root = learner_copy(course, tmp_path)
    proc = run_pytest(root, f"milestones/{milestone}")
    assert proc.returncode == 1
    out = proc.stdout
    assert f"NotImplementedError: Milestone {milestone}: write `" in out
    assert "still to write" in out
    assert "Traceback" not in out and "ImportError" not in out
    failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|errors?)\b", out))
    assert len(out.splitlines()) < 30 + 4 * failed, out  # a few lines per failing test, not a wall of tracebacks


@pytest.mark.parametrize("milestone", ["01", "03", "05", "08"])
def test_still_to_write_lists_every_stub_by_task_in_order(course, tmp_path, milestone):
    """The list is read from the learner's files, so it names every function left, not only those a failing test
    reached; in the order to write them (the solution's regions, in course order)."""
    root = learner_copy(course, tmp_path)
    proc = run_pytest(root, f"milestones/{milestone}", "-k", "not a_test_name_that_matches_nothing", "-x")
    section = proc.stdout.split("still to write", 1)[1].split("short test summary", 1)[0]
    listed = [name.strip() for line in section.splitlines() if ": " in line
              for name in line.split(": ", 1)[1].split(",")]
    expected = [f.qualname for f in replay.learner_functions(course, course.milestone(milestone))]
    assert listed == expected, section
    tasks = [line.split()[0] for line in section.splitlines() if re.match(r"\s+task\d\d_\d+ ", line)]
    assert tasks == sorted(tasks, key=list(course.milestone(milestone).tasks).index), section


@pytest.mark.parametrize("milestone,task,named,unnamed", [
    ("01", "task01_2", "count_bigrams", "CharTokenizer"),
    ("02", "task02_1", "causal_self_attention", "AdamW"),
    ("03", "task03_2", "count_pairs", "Tokenizer"),
    ("04", "task04_1", "count_pretokens", "learn_merges"),
    ("05", "task05_1", "GPT.init_weights", "rope_tables"),
    ("06", "task06_2", "top_k_filter", "generate"),
    ("07", "task07_3", "position_ids_from_mask", "KVCache"),
])
def test_one_task_at_a_time(course, tmp_path, milestone, task, named, unnamed):
    root = learner_copy(course, tmp_path)
    proc = run_pytest(root, f"milestones/{milestone}", "-m", task)
    assert proc.returncode == 1
    failures = proc.stdout.split("still to write", 1)[0]  # the list after it names every stub left, by task
    assert f"write `{named}` in milestones/{milestone}/" in failures and unnamed not in failures


@pytest.mark.parametrize("milestone", ["01", "02", "03", "04", "05", "06", "07"])
def test_public_tests_pass_once_the_solution_is_copied_over_the_stubs(course, tmp_path, milestone):
    root = learner_copy(course, tmp_path)
    for done in (*course.milestone(milestone).builds_on, milestone):  # 02 trains with the learner's own 01
        for module in course.milestone(done).modules:
            shutil.copy(course.solutions / done / f"{module}.py", root / "milestones" / done / f"{module}.py")
    proc = run_pytest(root, f"milestones/{milestone}")
    assert proc.returncode == 0, proc.stdout
    assert " passed" in proc.stdout and "failed" not in proc.stdout
