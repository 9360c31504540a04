"""`llmfs release OUT [--upto NN]`: the learner's repository, made from this one.

What goes in: milestones/NN/ up to NN (stubs, README, public tests, reference figures), course.toml cut to those
milestones, the `llmfs` package (grading/llmfs/ and data/registry.toml, so `llmfs grade`, the loader and the datasets
work), pyproject.toml with `pytest` collecting milestones/, a README for learners, the learner's CI workflow and GitHub
Classroom's autograding workflow (public-test points, cut to the released milestones).
What never goes in: solutions/, the hidden tests (tests/), this repository's CI and results of its own runs.

In a released repository `llmfs grade` has no hidden tests, so it grades the public tests, one point each,
and says so; the instructor grades the same code with `llmfs grade-all`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from llmfs.course import Course, CourseError
from llmfs.untouched import PUBLIC_TESTS, STUB_HASHES, collect_public_tests, stub_hashes

IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", ".benchmarks", "*.egg-info")
LEARNER_WORKFLOW = Path(".github/workflows/learner.yml")
CLASSROOM_WORKFLOW = Path(".github/workflows/classroom.yml")  # GitHub Classroom's autograding: public-test points


def _manifest_upto(text: str, keep: set[str]) -> str:
    """course.toml with only the `[[milestone]]` blocks whose id is in `keep` (sub-tables move with them)."""
    head, *blocks = re.split(r"(?m)^(?=\[\[milestone\]\])", text)
    kept = [b for b in blocks if (m := re.search(r'(?m)^id\s*=\s*"([^"]+)"', b)) and m.group(1) in keep]
    return head + "".join(kept)


def _pyproject(text: str) -> str:
    """The learner's pytest collects the public tests in milestones/."""
    text = re.sub(r"(?ms)^# The tool's own tests\..*?^testpaths = \[[^\]]*\]",
                  'testpaths = ["milestones"]', text)
    if 'testpaths = ["milestones"]' not in text:
        raise CourseError("pyproject.toml: could not point testpaths at milestones/ for the release")
    return text


def _classroom_upto(text: str, keep: set[str]) -> str:
    """classroom.yml with only the grader steps (and reporter entries) of the released milestones: a step for a
    milestone that is not there would count its points against every learner."""
    steps = re.split(r"(?m)^(?=      - )", text)
    kept = [s for s in steps if not (m := re.search(r"(?m)^        id: milestone(\d+)$", s)) or m.group(1) in keep]
    text = "".join(kept)
    text = re.sub(r"(?m)^          MILESTONE(\d+)_RESULTS: .*\n", lambda m: m.group(0) if m.group(1) in keep else "",
                  text)
    return re.sub(r"(?m)^(          runners: ).*$",
                  lambda m: m.group(1) + ",".join(f"milestone{i}" for i in sorted(keep)), text)


def _readme(course: Course, milestones: list) -> str:
    rows = "\n".join(f"| {m.id} | [{m.title}](milestones/{m.id}/README.md) | {m.summary} |" for m in milestones)
    return f"""# {course.title}

Rebuild a language-model stack from first principles, one milestone at a time. Each milestone is a small
file with the parts you write marked `# YOUR CODE HERE`; its README says what to build and how it is checked.

## Set up (Python 3.10+)

```bash
python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/pytest milestones/01
```

On untouched stubs every test fails with one line naming the function to write, for example
`NotImplementedError: Milestone 01: write CharTokenizer.__init__ in milestones/01/bigram.py`.

## Work

```bash
.venv/bin/pytest milestones/01 -m task01_1    # one task at a time
.venv/bin/llmfs grade                         # your points on the public tests (one point each)
```

Your grade comes from hidden tests your instructor runs on the same code (`llmfs grade-all`); the public tests
are a subset of what they check. Datasets are found under `$LLMFS_DATA` or downloaded once (`llmfs data list`).
Every push runs `.github/workflows/learner.yml`: the public tests and a grade table in the job summary.

| # | milestone | what you build |
| --- | --- | --- |
{rows}
"""


def release(course: Course, out: Path, upto: str | None = None) -> list[Path]:
    """Write the learner repository into `out` (which must be empty or absent); returns the files written."""
    ids = [m.id for m in course.milestones]
    if upto is not None and upto not in ids:
        raise CourseError(f"--upto {upto}: no such milestone (known: {', '.join(ids)})")
    milestones = [m for m in course.milestones if upto is None or m.id <= upto]
    if out.exists() and any(out.iterdir()):
        raise CourseError(f"{out} is not empty; release into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    root = course.root
    for m in milestones:
        shutil.copytree(course.milestones_dir / m.id, out / "milestones" / m.id, ignore=IGNORED)
    shutil.copytree(root / "grading" / "llmfs", out / "grading" / "llmfs", ignore=IGNORED)  # not the tool's tests
    shutil.copytree(root / "data", out / "data", ignore=IGNORED)
    (out / "course.toml").write_text(
        _manifest_upto((root / "course.toml").read_text(encoding="utf-8"), {m.id for m in milestones}),
        encoding="utf-8")
    (out / "pyproject.toml").write_text(_pyproject((root / "pyproject.toml").read_text(encoding="utf-8")),
                                        encoding="utf-8")
    (out / "README.md").write_text(_readme(course, milestones), encoding="utf-8")
    (out / STUB_HASHES).write_text(json.dumps(stub_hashes(course, milestones), indent=1) + "\n", encoding="utf-8")
    (out / PUBLIC_TESTS).write_text(json.dumps(collect_public_tests(course, milestones), indent=1) + "\n",
                                    encoding="utf-8")
    (out / ".gitignore").write_text((root / ".gitignore").read_text(encoding="utf-8") + ".hypothesis/\n",
                                    encoding="utf-8")
    workflow = out / LEARNER_WORKFLOW
    workflow.parent.mkdir(parents=True)
    shutil.copy2(root / LEARNER_WORKFLOW, workflow)
    (out / CLASSROOM_WORKFLOW).write_text(
        _classroom_upto((root / CLASSROOM_WORKFLOW).read_text(encoding="utf-8"), {m.id for m in milestones}),
        encoding="utf-8")
    return sorted(p for p in out.rglob("*") if p.is_file())
