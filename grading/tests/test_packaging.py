"""The distribution people install: its name, `python -m llmfs`, `--version`, and pytest's cache for --lf/--sw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmfs.course import (
    Course,
    tomllib,  # tomli on Python 3.10
)


def test_python_dash_m_llmfs_is_the_command_and_knows_its_version(course: Course) -> None:
    version = tomllib.loads((course.root / "pyproject.toml").read_text())["project"]["version"]
    proc = subprocess.run([sys.executable, "-m", "llmfs", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"llmfs {version}", proc.stdout + proc.stderr
    help_text = subprocess.run([sys.executable, "-m", "llmfs", "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert all(command in help_text for command in ("grade-all", "merge-grades", "autograder", "release"))


def test_the_distribution_name_is_not_the_unrelated_llmfs(course: Course) -> None:
    """`pip install llmfs` installs someone else's project; ours is published under its own name."""
    project = tomllib.loads((course.root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "build-an-llm-from-scratch"
    assert project["scripts"] == {"llmfs": "llmfs.cli:main"}


def test_pytest_remembers_the_last_failures(course: Course, tmp_path: Path) -> None:
    """With the course's pytest settings, `--lf` reruns only what failed last time (the cache is on)."""
    (tmp_path / "test_two.py").write_text("def test_passes():\n    pass\n\ndef test_fails():\n    assert False\n")
    command = [sys.executable, "-m", "pytest", "-c", str(course.root / "pyproject.toml"), "--rootdir",
               str(tmp_path), "-p", "no:llmfs", str(tmp_path / "test_two.py"), "-q"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "1 failed, 1 passed" in first.stdout, first.stdout + first.stderr
    again = subprocess.run([*command, "--lf"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "1 failed, 1 deselected" in again.stdout, again.stdout + again.stderr
