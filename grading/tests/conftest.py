"""Fixtures for the tests of the `llmfs` tool itself (not collected by `llmfs grade`, which runs tests/NN)."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmfs.course import Course, load_course


@pytest.fixture(scope="session")
def course() -> Course:
    return load_course()


@pytest.fixture(scope="session")
def llmfs(course: Course) -> Callable[..., subprocess.CompletedProcess]:
    """llmfs("grade", "--reference", cwd=..., env=...): the command line as a user runs it, in a fresh process."""

    def run(*args: str, cwd: Path = course.root, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "llmfs.cli", *args], cwd=cwd, env={**os.environ, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)

    return run


@dataclass
class Graded:
    proc: subprocess.CompletedProcess
    results: dict  # Gradescope's results.json
    milestones: dict[str, dict]  # extra_data summaries by milestone id


@pytest.fixture
def grade(llmfs, tmp_path: Path) -> Callable[..., Graded]:
    """grade(ROOT, *flags, cwd=course): `llmfs grade ROOT --json FILE`, which must exit 0, and its results."""

    def run(root: Path, *extra: str, cwd: Path | None = None, timeout: float = 300) -> Graded:
        out = tmp_path / "results.json"
        proc = llmfs("grade", str(root), "--json", str(out), *extra, timeout=timeout, **({"cwd": cwd} if cwd else {}))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results = json.loads(out.read_text())
        return Graded(proc, results, {m["id"]: m for m in results["extra_data"]["milestones"]})

    return run


@pytest.fixture
def copy_of_solutions(course: Course, tmp_path: Path) -> Callable[[str], Path]:
    """copy("01") -> a fresh implementation root holding the reference 01, to break on purpose."""

    def copy(milestone: str) -> Path:
        root = tmp_path / "submission"
        shutil.copytree(course.solutions / milestone, root / milestone)
        return root

    return copy


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The default run leaves out the `slow` tests (the whole course graded with the reference, every task replayed,
    the mutants, the cpu-small training run); the README's test command and CI run them afterwards with
    `pytest -m slow`. Any `-m` selects as usual."""
    if config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_sessionstart(session: pytest.Session) -> None:
    """The slow run (`-m slow`, whose whole-course grade needs milestone 08's draft/target pair) builds the pair
    before its first test (`llmfs data fetch speculative-pair`: minutes of training, once), so that no benchmark
    shares the machine with the training and no test's time limit includes it. Nothing happens when the pair is
    already built, or with LLMFS_NO_PREBUILD=1. (Building in the background during the default run was tried: its
    threads slowed the default run's timed tests past their limits.)"""
    markexpr = session.config.option.markexpr  # "slow", "slow and not benchmark", ...; not "not slow"
    if os.environ.get("LLMFS_NO_PREBUILD") or not re.search(r"(?<!not )\bslow\b", markexpr or ""):
        return
    from llmfs import data

    for name, ds in data.registry().items():
        if ds.build and data.locate(name) is None:
            print(f"\nbuilding dataset {name} before the slow tests (minutes, once)", flush=True)
            data.fetch(name, progress=False)


@pytest.fixture(scope="session")
def lent_venv() -> Callable[..., Path]:
    """lent_venv(DIR, pip=False): a fresh virtual environment that sees this one's packages (torch, transformers,
    ...) through a .pth file, so installing the course into it downloads nothing; `pip=True` also gives it its own
    `bin/pip` (scripts such as the autograder's setup.sh call it)."""

    def make(env_dir: Path, pip: bool = False) -> Path:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
        if pip:
            subprocess.run([str(env_dir / "bin" / "python"), "-m", "ensurepip", "--default-pip"], check=True,
                           capture_output=True, timeout=300)
        purelib = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
        (purelib / "_lent_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        return env_dir

    return make
