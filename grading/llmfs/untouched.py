"""Untouched stubs: told apart cheaply, and graded without running a test where that is possible.

A milestone is untouched when each of its files with learner regions is still exactly its stub. Grading it
then needs no dataset (08's pair: minutes of training) and its result is known in advance: every test fails,
naming the function to write. How the stubs are known:
- in a learner's release or an autograder bundle (no solutions), by the sha256 that `llmfs release` recorded
  in stubs.json; a release also lists its public tests in public-tests.json (collected when it was made), so
  `llmfs grade` on untouched stubs starts no pytest at all;
- in the course repository, by comparison with the committed stubs in milestones/ (kept equal to the generated
  ones by `llmfs stubs --check`); milestones/ itself is untouched while every function the learner writes is
  still a stub. A file in which one of them is no longer a stub is told apart by `ast` alone (no nbgrader).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from llmfs import todo
from llmfs.course import SOLUTION_BEGIN, Course, Milestone

STUB_HASHES = "stubs.json"  # in a release: how `llmfs grade` tells untouched stubs without the solutions
PUBLIC_TESTS = "public-tests.json"  # in a release: the public tests, so untouched stubs are graded without pytest
MAX_SOURCE = 1 << 20  # a learner file larger than this is not a stub (and is not parsed here)


def untouched(course: Course, m: Milestone, root: Path) -> bool:
    """True when every file of milestone `m` under `root` is still exactly its stub."""
    if root == course.solutions.resolve():
        return False
    released = course.root / STUB_HASHES  # a release or an autograder bundle: the graded solutions are not there
    if released.is_file() or not (course.solutions / m.id).is_dir():
        try:
            hashes = json.loads(released.read_text(encoding="utf-8"))[m.id]
        except (OSError, ValueError, KeyError):
            return False
        return all(_sha256(root / m.id / name) == digest for name, digest in hashes.items())
    stubbed = 0
    for module in m.modules:
        solution = (course.solutions / m.id / f"{module}.py").read_text(encoding="utf-8")
        if SOLUTION_BEGIN in solution:
            if not _is_stub_file(course, m, root, module, solution):
                return False
            stubbed += 1
    return stubbed > 0  # a milestone with nothing to write is never "untouched"


def _is_stub_file(course: Course, m: Milestone, root: Path, module: str, solution: str) -> bool:
    mine = root / m.id / f"{module}.py"
    try:
        if mine.stat().st_size > MAX_SOURCE:
            return False
        text = mine.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if set(todo.learner_functions(solution)) - set(todo.stub_messages(text)):
        return False  # some function is written: no stub to generate
    if root == course.milestones_dir.resolve():
        return True  # the course's own stubs, whose every function is still a stub (`llmfs stubs --check` in CI)
    committed = course.milestones_dir / m.id / f"{module}.py"
    return committed.is_file() and text == committed.read_text(encoding="utf-8")


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.stat().st_size <= MAX_SOURCE else None
    except OSError:
        return None


def stub_hashes(course: Course, milestones: list[Milestone]) -> dict[str, dict[str, str]]:
    """sha256 of every stub file as released, by milestone: {"08": {"verify.py": ...}} (files with solution regions)."""
    hashes: dict[str, dict[str, str]] = {}
    for m in milestones:
        for module in m.modules:
            if SOLUTION_BEGIN in (course.solutions / m.id / f"{module}.py").read_text(encoding="utf-8"):
                stub = (course.milestones_dir / m.id / f"{module}.py").read_bytes()
                hashes.setdefault(m.id, {})[f"{module}.py"] = hashlib.sha256(stub).hexdigest()
    return hashes


def collect_public_tests(course: Course, milestones: list[Milestone]) -> dict[str, list[dict]]:
    """The public tests of each milestone as pytest collects them (node id, title, points, task, checks), in
    one `pytest --collect-only` over every milestone."""
    with tempfile.TemporaryDirectory(prefix="llmfs-collect-") as tmp:
        results = Path(tmp) / "collected.jsonl"
        folders = [str(course.milestones_dir / m.id) for m in milestones]
        proc = subprocess.run([sys.executable, "-m", "pytest", *folders, "--collect-only", "-q", "-p", "no:randomly",
                               "-p", "no:cacheprovider", "--llmfs-results", str(results)],
                              cwd=course.root, capture_output=True, text=True, timeout=600)
        events = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    collected = next((e["tests"] for e in events if e["event"] == "collected"), None)
    if proc.returncode != 0 or collected is None:
        raise RuntimeError(f"collecting the public tests failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    listing: dict[str, list[dict]] = {m.id: [] for m in milestones}
    for test in collected:
        milestone = test["nodeid"].split("/")[1]
        listing[milestone].append(test)
    return listing


def listed_tests(course: Course, m: Milestone) -> list[dict] | None:
    """The public tests a release recorded for `m`, when the release has no hidden tests to run instead."""
    if (course.hidden_tests / m.id).is_dir() or course.solutions.is_dir():
        return None
    try:
        tests = json.loads((course.root / PUBLIC_TESTS).read_text(encoding="utf-8"))[m.id]
    except (OSError, ValueError, KeyError):
        return None
    return tests if isinstance(tests, list) and tests else None


class StubMessages:
    """What each test reports on untouched stubs, from one read of the milestone's files under `root`: the stub
    message of the function it checks, else of the first function of its task, else of the milestone's first."""

    def __init__(self, root: Path, m: Milestone) -> None:
        self.milestone = m.id
        self.messages: dict[str, str] = {}
        for module in m.modules:
            try:
                self.messages |= todo.stub_messages((root / m.id / f"{module}.py").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
        rows = todo.stubs_left(root, m)  # in course order: the first row of a task holds its first function
        self.first_of_task = {task: names[0] for task, _, names in reversed(rows)}
        self.first = rows[0][2][0] if rows else None

    def of(self, task: str | None, checks: str | None) -> str:
        for name in (checks, self.first_of_task.get(task), self.first):
            if name in self.messages:
                return self.messages[name]
        return next(iter(self.messages.values()), f"Milestone {self.milestone}: not started")
