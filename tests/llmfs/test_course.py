"""The manifest (course.toml) is the one declared place for milestones; check it against the repository."""

from __future__ import annotations

import ast
import shutil

import pytest

from llmfs.course import CourseError, load_course


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
