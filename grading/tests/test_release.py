"""`llmfs release`: a learner repository without solutions/ or hidden tests that installs and runs on its own.

The release is installed with pip into a fresh virtual environment. Its third-party dependencies (torch and
the rest, several GB) are not downloaded again: a .pth file lends them from the environment running this test,
while `llmfs` itself is the released copy (pip's editable install; the instructor's is not on that path).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmfs.course import Course

MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


@pytest.fixture(scope="module")
def released(course: Course, llmfs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release") / "learner-repo"
    proc = llmfs("release", str(out), "--upto", "02")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def venv(released: Path, lent_venv) -> Path:
    """A fresh virtual environment with the release installed by pip (dependencies lent by a .pth file)."""
    env_dir = lent_venv(released.parent / "venv")
    python = env_dir / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-e", str(released)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env_dir


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMFS_COURSE", "LLMFS_ROOT", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_release_holds_no_solutions_or_hidden_tests(released: Path) -> None:
    assert not (released / "solutions").exists() and not (released / "tests").exists()
    assert sorted(p.name for p in (released / "milestones").iterdir()) == ["01", "02"]
    for path in released.rglob("*.py"):
        lines = {line.strip() for line in path.read_text(encoding="utf-8").splitlines()}
        assert not lines & set(MARKERS), f"{path} carries a solution region"
    manifest = (released / "course.toml").read_text()
    assert 'id = "01"' in manifest and 'id = "02"' in manifest and 'id = "03"' not in manifest
    assert (released / ".github" / "workflows" / "learner.yml").is_file()


def test_classroom_autograding_counts_only_the_released_milestones(released: Path) -> None:
    """GitHub Classroom's points: a grader step for a milestone the learner does not have would cost them its
    points, so a release up to 02 keeps the steps and reporter entries of 01 and 02 only."""
    import yaml

    workflow = yaml.safe_load((released / ".github" / "workflows" / "classroom.yml").read_text())
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    graders = [s["id"] for s in steps if "autograding-command-grader" in s.get("uses", "")]
    assert graders == ["milestone01", "milestone02"], graders
    reporter = steps[-1]
    assert reporter["with"]["runners"] == "milestone01,milestone02"
    assert sorted(reporter["env"]) == ["MILESTONE01_RESULTS", "MILESTONE02_RESULTS"]


def test_a_learner_installs_no_jupyter_stack_and_grades_without_it(venv: Path, released: Path) -> None:
    """nbgrader (and its Jupyter stack) is the instructor extra: the release does not depend on it, and `llmfs
    grade` there works with nbgrader and nbformat made unimportable."""
    from llmfs.course import tomllib  # tomli on Python 3.10

    project = tomllib.loads((released / "pyproject.toml").read_text())["project"]
    assert project["name"] == "build-an-llm-from-scratch"
    assert not [d for d in project["dependencies"] if d.startswith(("nbgrader", "nbformat", "jupyter"))]
    assert any(d.startswith("nbgrader") for d in project["optional-dependencies"]["instructor"])
    blocked = ("import sys; sys.modules['nbgrader'] = sys.modules['nbformat'] = None; from llmfs.cli import main; "
               "sys.exit(main(['grade', '-m', '01']))")
    proc = _run(venv, released, str(venv / "bin" / "python"), "-c", blocked)
    public = len(re.findall(r"^def test_", (released / "milestones" / "01" / "test_bigram.py").read_text(), re.M))
    assert proc.returncode == 0 and f"0/{public}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_released_llmfs_is_the_released_copy(venv: Path, released: Path) -> None:
    proc = _run(venv, released, str(venv / "bin" / "python"), "-c", "import llmfs; print(llmfs.__file__)")
    assert proc.returncode == 0 and Path(proc.stdout.strip()).is_relative_to(released), proc.stdout + proc.stderr


def test_stubs_fail_naming_the_function_then_the_solution_passes(venv: Path, released: Path,
                                                                  course: Course) -> None:
    python = str(venv / "bin" / "python")
    before = _run(venv, released, python, "-m", "pytest", "milestones/01", "-q", "-p", "no:cacheprovider")
    assert before.returncode == 1, before.stdout[-2000:] + before.stderr[-2000:]
    assert "NotImplementedError: Milestone 01: write `CharTokenizer.__init__` in milestones/01/bigram.py" \
        in before.stdout, before.stdout[-2000:]
    shutil.copy2(course.solutions / "01" / "bigram.py", released / "milestones" / "01" / "bigram.py")
    after = _run(venv, released, python, "-m", "pytest", "milestones/01", "-q", "-p", "no:cacheprovider")
    assert after.returncode == 0, after.stdout[-3000:] + after.stderr[-2000:]


def test_llmfs_grade_grades_the_public_tests_in_a_release(venv: Path, released: Path) -> None:
    proc = _run(venv, released, str(venv / "bin" / "llmfs"), "grade", "-m", "01", "--summary", "summary.md")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Public tests" in proc.stdout
    summary = (released / "summary.md").read_text()
    assert "| 01 |" in summary and "one point per public test" in summary.lower()


def test_a_release_tells_untouched_stubs_from_started_work(llmfs, tmp_path: Path, monkeypatch) -> None:
    """stubs.json holds the released stubs' hashes, so `llmfs grade` in a release (no solutions) still skips building
    08's pair for an untouched 08, and builds it once the learner has started"""
    from llmfs.course import load_course
    from llmfs.untouched import untouched

    out = tmp_path / "whole-course"
    proc = llmfs("release", str(out))
    assert proc.returncode == 0, proc.stderr
    learner = load_course(out)
    assert not learner.solutions.exists()
    eight = learner.milestone("08")
    assert untouched(learner, eight, (out / "milestones").resolve())
    verify = out / "milestones" / "08" / "verify.py"
    verify.write_text(verify.read_text() + "\n# started\n")
    assert not untouched(learner, eight, (out / "milestones").resolve())
    from llmfs import data

    monkeypatch.chdir(out)  # the release's own course: its pair is built by its milestones/08/pair.py
    builder = data.builder(data.dataset("speculative-pair"))
    assert Path(builder.__file__).resolve() == (out / "milestones" / "08" / "pair.py").resolve()


def test_untouched_stubs_in_a_release_are_graded_without_starting_pytest(llmfs, course: Course, tmp_path: Path,
                                                                           monkeypatch) -> None:
    """public-tests.json lists the public tests as the release was made: on untouched stubs `llmfs grade` knows
    the result (every test fails on the stub of the function it checks) and starts no pytest, so it takes well
    under a second per milestone instead of the seconds that importing torch and transformers costs."""
    import sys

    from llmfs import grader
    from llmfs.course import load_course

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import replay

    def refuse(*args, **kwargs):
        raise AssertionError("pytest was started for untouched stubs")

    released = tmp_path / "fresh-release"  # not the module's release, which other tests fill with solutions
    assert llmfs("release", str(released), "--upto", "04").returncode == 0
    monkeypatch.setattr(grader, "grade_milestone", refuse)
    learner = load_course(released)
    for result in grader.grade(learner, (released / "milestones").resolve(), fetch=False):
        m = result.milestone
        assert result.status == grader.NOT_STARTED and result.score == 0 and result.public
        first = replay.learner_functions(course, m)[0].qualname  # the function to write first, in course order
        assert f"write `{first}` in milestones/{m.id}/" in result.message, result.message
        checked = {t.nodeid.split("::", 1)[1]: t.checks[0] for t in replay.public_tests(course, m)}
        assert sorted(t.nodeid.split("::", 1)[1].split("[")[0] for t in result.tests) == sorted(checked)
        for t in result.tests:
            assert t.kind == "stub" and t.outcome == "failed"
            assert f"write `{checked[t.nodeid.split('::', 1)[1].split('[')[0]]}` in milestones/{m.id}/" in t.message
