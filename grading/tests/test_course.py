"""The manifest (course.toml) is the one declared place for milestones; check it against the repository."""

from __future__ import annotations

import ast
import shutil

import pytest

from llmfs.course import CourseError, load_course
from llmfs.data import registry


def public_names(path) -> set[str]:
    """Top-level classes and functions (and their methods) a solution file defines, `main` excepted."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_") and node.name != "main":
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{m.name}" for m in node.body
                          if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")}
    return names


def test_every_milestone_has_its_files(course):
    for m in course.milestones:
        for module in m.modules:
            assert (course.solutions / m.id / f"{module}.py").is_file()
            assert (course.milestones_dir / m.id / f"{module}.py").is_file()
        assert list((course.hidden_tests / m.id).glob("test_*.py")), f"no hidden tests for {m.id}"
        assert list((course.milestones_dir / m.id).glob("test_*.py")), f"no public tests for {m.id}"
        assert (course.milestones_dir / m.id / "README.md").is_file()
        assert m.tasks and all(task.startswith(f"task{m.id}_") for task in m.tasks)
        assert m.points > 0 and m.time_limit_s > m.test_timeout_s > 0 and m.memory_mb >= 1024


def test_declared_api_is_exactly_what_the_solution_defines(course):
    for m in course.milestones:
        for module in m.modules:
            assert set(m.api.get(module, ())) == public_names(course.solutions / m.id / f"{module}.py")


def fetched_datasets(folder) -> set[str]:
    """Dataset names passed as literals to fetch()/fetch_file() anywhere in the test files of `folder`."""
    names = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
                    in ("fetch", "fetch_file") and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def test_hidden_tests_only_use_declared_datasets(course):
    """`llmfs grade` fetches a milestone's declared datasets before its tests run; an undeclared one would be
    downloaded inside the time-limited test process, on the learner's clock."""
    for m in course.milestones:
        used = fetched_datasets(course.hidden_tests / m.id)
        assert used <= set(m.datasets), f"milestone {m.id} fetches {sorted(used - set(m.datasets))} undeclared"
        assert set(m.datasets) <= set(registry()), f"milestone {m.id} declares datasets the registry lacks"


@pytest.mark.parametrize("edit,words", [
    (lambda s: s + s[s.index("[[milestone]]"):], "repeat"),
    (lambda s: s.replace('builds_on = []', 'builds_on = ["07"]', 1), "builds on"),
    (lambda s: s.replace("points = 100\n", "", 1), "lacks the key 'points'"),
    (lambda s: s.replace("[course]", "[course", 1), "cannot read"),
])
def test_malformed_manifests_are_refused(course, tmp_path, edit, words):
    shutil.copy(course.root / "course.toml", tmp_path / "course.toml")
    (tmp_path / "course.toml").write_text(edit((tmp_path / "course.toml").read_text()))
    with pytest.raises(CourseError, match=words):
        load_course(tmp_path)


def test_task_markers_are_registered_strictly(course, tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_markers.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.task01_1\n@pytest.mark.points(2)\n@pytest.mark.slow\ndef test_ok():\n    pass\n\n"
        "@pytest.mark.task99_1\ndef test_unknown():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_markers.py"), "-q", "--strict-markers",
                           "-p", "no:cacheprovider"], cwd=course.root, capture_output=True, text=True)
    assert proc.returncode != 0 and "'task99_1' not found in `markers`" in proc.stdout
    assert "task01_1" not in proc.stdout.split("not found")[0][-40:]
