"""The course manifest (course.toml): milestones, their modules, points, limits and thresholds.

Both `llmfs` and the pytest plugin read it, so a milestone's points, task markers and time limits are
declared once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MANIFEST = "course.toml"
SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"  # nbgrader's markers in solutions/
GRADER_COPY = ".grader"  # in a course copy made by `llmfs grade-all`: .grader/llmfs is the grading code


class CourseError(Exception):
    """The manifest is missing or malformed."""


@dataclass(frozen=True)
class Milestone:
    id: str
    title: str
    summary: str
    reference: str
    modules: tuple[str, ...]
    builds_on: tuple[str, ...]
    datasets: tuple[str, ...]
    points: float
    time_limit_s: float
    test_timeout_s: float
    memory_mb: int
    api: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Course:
    root: Path
    title: str
    solutions: Path
    milestones_dir: Path
    hidden_tests: Path
    data_mirrors: tuple[Path, ...]
    milestones: tuple[Milestone, ...]
    package_path: Path | None = None  # a private copy of the llmfs package (`llmfs grade-all`'s course copies)

    def milestone(self, milestone_id: str) -> Milestone:
        for m in self.milestones:
            if m.id == milestone_id:
                return m
        known = ", ".join(m.id for m in self.milestones)
        raise CourseError(f"no milestone {milestone_id!r} in {self.root / MANIFEST} (known: {known})")

    def task_markers(self) -> dict[str, str]:
        return {task: title for m in self.milestones for task, title in m.tasks.items()}


def find_course_root(start: Path | None = None) -> Path:
    """The folder holding course.toml: $LLMFS_COURSE, else the nearest one above `start` (default: cwd),
    else the one this package was installed from (an editable install)."""
    if env := os.environ.get("LLMFS_COURSE"):
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MANIFEST).is_file():
            return folder
    package_parent = Path(__file__).resolve().parents[2]
    if (package_parent / MANIFEST).is_file():
        return package_parent
    raise CourseError(f"no {MANIFEST} found in {here} or above it; run llmfs from inside the course repository")


def _milestone(raw: dict, source: Path) -> Milestone:
    try:
        return Milestone(
            id=str(raw["id"]),
            title=raw["title"],
            summary=raw.get("summary", ""),
            reference=raw.get("reference", ""),
            modules=tuple(raw["modules"]),
            builds_on=tuple(raw.get("builds_on", ())),
            datasets=tuple(raw.get("datasets", ())),
            points=float(raw["points"]),
            time_limit_s=float(raw["time_limit_s"]),
            test_timeout_s=float(raw["test_timeout_s"]),
            memory_mb=int(raw["memory_mb"]),
            api={module: tuple(names) for module, names in raw.get("api", {}).items()},
            tasks=dict(raw.get("tasks", {})),
            thresholds={k: float(v) for k, v in raw.get("thresholds", {}).items()},
        )
    except KeyError as e:
        raise CourseError(f"{source}: milestone {raw.get('id', '?')} lacks the key {e}") from None


@lru_cache(maxsize=8)
def _load(root: Path) -> Course:
    source = root / MANIFEST
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CourseError(f"cannot read {source}: {e}") from e
    meta = raw.get("course", {})
    milestones = tuple(_milestone(m, source) for m in raw.get("milestone", []))
    ids = [m.id for m in milestones]
    if len(set(ids)) != len(ids):
        raise CourseError(f"{source}: milestone ids repeat: {ids}")
    for m in milestones:
        unknown = set(m.builds_on) - set(ids[: ids.index(m.id)])
        if unknown:
            raise CourseError(f"{source}: milestone {m.id} builds on {sorted(unknown)}, not earlier milestones")
    return Course(
        root=root,
        title=meta.get("title", "course"),
        solutions=root / meta.get("solutions", "solutions"),
        milestones_dir=root / meta.get("milestones", "milestones"),
        hidden_tests=root / meta.get("hidden_tests", "tests"),
        data_mirrors=tuple((root / p).resolve() for p in meta.get("data_mirrors", ())),
        milestones=milestones,
        package_path=root / GRADER_COPY if (root / GRADER_COPY / "llmfs").is_dir() else None,
    )


def load_course(root: Path | None = None) -> Course:
    """The course whose manifest is at `root` (default: found by `find_course_root`)."""
    return _load((root or find_course_root()).resolve())
