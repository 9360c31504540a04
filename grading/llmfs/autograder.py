"""`llmfs autograder MILESTONE... --out autograder.zip`: the bundle Gradescope's autograder expects.

Gradescope unpacks the zip into /autograder/source, runs `setup.sh` once when it builds the image, and runs
/autograder/run_autograder for every submission, which must leave /autograder/results/results.json:

    autograder.zip
      setup.sh          Ubuntu: python3-venv, a venv in /autograder/venv, torch's CPU wheel, this course
      run_autograder    grades /autograder/submission; writes results.json whatever happens
      README.md         the Gradescope settings this bundle needs (memory, CPUs), for the instructor
      course/           course.toml, pyproject.toml, grading/llmfs/ and data/ (the `llmfs` package), the graded
                        milestones' hidden tests, and the references they build on: never the graded
                        milestones' own solutions (their stub hashes tell untouched stubs apart instead)
      datasets/         datasets that are built, not downloaded (08's pair); setup.sh fetches the others here

A submission is a repository (GitHub or a zip of it: `milestones/NN/...`, or `NN/...`) or the milestone's
files uploaded one by one (`bigram.py`). When a bundle grades several milestones, a later one builds on the
learner's own earlier one, because that reference is withheld; a bundle per milestone grades each against
the reference. A failure of the grader itself still writes a results.json that says it is not the learner's
fault (`extra_data.infrastructure_error`), and run_autograder exits 0 whenever results.json was written.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import stat
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

from llmfs.course import SOLUTION_BEGIN, Course, CourseError, Milestone, load_course
from llmfs.fsutil import atomic_write_text, replaced_atomically

VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")
TORCH = "torch==2.13.0"  # pinned in pyproject.toml; setup.sh installs its CPU wheel first
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
MEMORY_HEADROOM_MB = 1024  # Python, the grader and pytest beside the capped grading process
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "*.egg-info", "results")
REFERENCE_IMPORT = re.compile(r"""solutions\s*,\s*["'](\d\d)["']""")  # load_module(COURSE.solutions, "03", ...)

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder image (made by `llmfs autograder`).
set -euo pipefail
SOURCE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{PYTHON:-python3}}"
if ! "$PYTHON" -m venv --help > /dev/null 2>&1 && command -v apt-get > /dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-pip git
fi
"$PYTHON" -m venv "$ROOT/venv"
# torch's CPU wheel (about 200 MB) first, so that pip never resolves the multi-GB CUDA build
# (TORCH_INDEX_URL="" uses pip's own index: a mirror, or a machine that has the wheel already)
TORCH_INDEX_URL="${{TORCH_INDEX_URL-{index}}}"
"$ROOT/venv/bin/pip" install -q --disable-pip-version-check "{torch}" \
    ${{TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}}
"$ROOT/venv/bin/pip" install -q --disable-pip-version-check "$SOURCE/course"
# the datasets, once, into the image: grading never downloads
LLMFS_CACHE="$SOURCE/datasets" LLMFS_COURSE="$SOURCE/course" \\
    "$ROOT/venv/bin/python" -m llmfs.autograder bake-data --into "$SOURCE/datasets" {milestones}
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission. It always leaves results/results.json: the grade, or a record
# that the grader itself failed (not the learner's fault), so a crash never reads as "no submission".
set -u
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
SOURCE="$ROOT/source"
RESULTS="$ROOT/results/results.json"
mkdir -p "$ROOT/results" "$ROOT/home" "$ROOT/tmp"
rm -f "$RESULTS"
env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$ROOT/home" TMPDIR="$ROOT/tmp" LANG=C.UTF-8 \\
    LLMFS_COURSE="$SOURCE/course" LLMFS_DATA="$SOURCE/datasets" LLMFS_CACHE="$SOURCE/datasets" \\
    "$ROOT/venv/bin/python" -m llmfs.autograder run --root "$ROOT" --visibility {visibility} {milestones}
status=$?
if [ ! -s "$RESULTS" ]; then
    REASON="This is not your fault: tell your instructor, who can regrade it."
    cat > "$RESULTS" <<EOF
{{"score": 0, "tests": [], "output_format": "text", "visibility": "visible", "stdout_visibility": "hidden",
 "output": "The autograder itself failed (exit status $status) before it could grade this submission.\\n$REASON",
 "extra_data": {{"infrastructure_error": true, "exit_status": $status}}}}
EOF
fi
exit 0
"""


class AutograderError(CourseError):
    """The bundle cannot be built as asked (unknown milestone, a combination that would leak or break)."""


# ------------------------------------------------------------------------------------------- building


def _closure(course: Course, chosen: list[Milestone]) -> list[Milestone]:
    """The chosen milestones and every milestone they build on, transitively, in course order; a milestone with
    a built dataset (08's pair) needs every earlier one, which its builder's key hashes (03's and 04's tokenizer)."""
    from llmfs import data

    needed = {m.id for m in chosen}
    for m in chosen:
        if any(data.dataset(name).build for name in m.datasets):
            needed.update(e.id for e in course.milestones[: course.milestones.index(m)])
    for m in reversed(course.milestones):
        if m.id in needed:
            needed.update(m.builds_on)
    return [m for m in course.milestones if m.id in needed]


def _check_withheld_references(course: Course, chosen: list[Milestone]) -> None:
    """A graded milestone's hidden tests that load another graded milestone's reference would break."""
    graded = {m.id for m in chosen}
    for m in chosen:
        for test in sorted((course.hidden_tests / m.id).glob("*.py")):
            for other in set(REFERENCE_IMPORT.findall(test.read_text(encoding="utf-8"))) & (graded - {m.id}):
                raise AutograderError(
                    f"{m.id}'s hidden tests ({test.name}) compare against the reference {other}, which a bundle that "
                    f"also grades {other} must withhold; make one bundle per milestone (`llmfs autograder {m.id}`)")


def _is_solved(path: Path) -> bool:
    return SOLUTION_BEGIN in path.read_text(encoding="utf-8")


def _copy_course(course: Course, chosen: list[Milestone], dest: Path) -> None:
    """course/: the `llmfs` package, the manifest, the graded milestones' hidden tests and stub hashes, and the
    references of what they build on; the graded milestones keep only their given (solution-free) files."""
    from llmfs.untouched import STUB_HASHES, stub_hashes

    graded = {m.id for m in chosen}
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "course.toml"):
        shutil.copy2(course.root / name, dest / name)
    manifest = (dest / "course.toml").read_text(encoding="utf-8")
    (dest / "course.toml").write_text(re.sub(r"(?m)^data_mirrors\s*=.*$", "data_mirrors = []", manifest),
                                      encoding="utf-8")
    (dest / "README.md").write_text(f"# {course.title}: Gradescope autograder\n", encoding="utf-8")
    for folder in ("grading/llmfs", "data"):  # the package and its registry, not the tool's own tests
        shutil.copytree(course.root / folder, dest / folder, ignore=IGNORED)
    for m in chosen:
        shutil.copytree(course.hidden_tests / m.id, dest / "tests" / m.id, ignore=IGNORED)
    for m in _closure(course, chosen):
        target = dest / "solutions" / m.id
        target.mkdir(parents=True)
        for source in sorted((course.solutions / m.id).glob("*.py")):
            if m.id not in graded or not _is_solved(source):
                shutil.copy2(source, target / source.name)
    (dest / STUB_HASHES).write_text(json.dumps(stub_hashes(course, chosen), indent=1) + "\n", encoding="utf-8")


def _copy_built_datasets(chosen: list[Milestone], dest: Path) -> None:
    """Datasets that are built (minutes of training), copied from this machine: setup.sh cannot build them
    without the references the bundle withholds."""
    from llmfs import data

    for name in dict.fromkeys(d for m in chosen for d in m.datasets):
        ds = data.dataset(name)
        if ds.build:
            folder = data.fetch(name)
            shutil.copytree(folder, dest / ds.folder, ignore=shutil.ignore_patterns("*.lock"))


def memory_mb(chosen: list[Milestone]) -> int:
    """The container memory a bundle needs: the largest grading cap plus the grader beside it."""
    return max(m.memory_mb for m in chosen) + MEMORY_HEADROOM_MB


def _readme(course: Course, chosen: list[Milestone], visibility: str) -> str:
    ids = " ".join(m.id for m in chosen)
    minutes = sum(m.time_limit_s for m in chosen) / 60
    return f"""# Gradescope autograder: {course.title}, milestone(s) {ids}

Made by `llmfs autograder {ids} --visibility {visibility}`. Upload this zip as the assignment's autograder
("Zip file upload"), then set, under the assignment's autograder settings:

- **Memory: at least {memory_mb(chosen) / 1024:.1f} GB.** The grader caps each milestone's tests at
  {max(m.memory_mb for m in chosen)} MB and runs beside them; at Gradescope's default of 768 MB the reference of
  milestone 05 scores 28/100.
- **CPU: 2 or more**, and a timeout of at least {minutes + 5:.0f} minutes (the milestones' limits add up to
  {minutes:.0f} minutes; an untouched stub takes seconds).

Learners submit their repository (GitHub, or a zip of it) or the milestone's files themselves
({", ".join(f"{m.id}: " + ", ".join(f"`{mod}.py`" for mod in m.modules) for m in chosen)}).
Test results are `{visibility}` to learners.
"""


def build(course: Course, milestone_ids: list[str], out: Path, visibility: str = "visible") -> Path:
    """Write the autograder zip to `out` (atomically) and return it."""
    if visibility not in VISIBILITIES:
        raise AutograderError(f"--visibility {visibility!r}: choose one of {', '.join(VISIBILITIES)}")
    if not milestone_ids:
        raise AutograderError("name at least one milestone to grade, e.g. `llmfs autograder 01`")
    chosen = [course.milestone(i) for i in dict.fromkeys(milestone_ids)]
    _check_withheld_references(course, chosen)
    ids = " ".join(m.id for m in chosen)
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        _copy_course(course, chosen, staging / "course")
        (staging / "datasets").mkdir()
        _copy_built_datasets(chosen, staging / "datasets")
        (staging / "README.md").write_text(_readme(course, chosen, visibility), encoding="utf-8")
        (staging / "setup.sh").write_text(SETUP_SH.format(torch=TORCH, index=TORCH_INDEX, milestones=ids))
        (staging / "run_autograder").write_text(RUN_AUTOGRADER.format(visibility=visibility, milestones=ids))
        with replaced_atomically(out) as partial:
            _zip(staging, partial)
    return out


def _zip(folder: Path, target: Path) -> None:
    """Every file of `folder` at the zip's root (Gradescope looks for setup.sh there), scripts executable."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible bytes
            mode = 0o755 if name in ("setup.sh", "run_autograder") else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


# ------------------------------------------------------------------------- inside the Gradescope image


def bake_data(milestone_ids: list[str], into: Path) -> None:
    """Fetch the milestones' downloaded datasets (setup.sh) and keep a copy in `into`, which grading reads."""
    from llmfs import data

    course = load_course()
    for name in dict.fromkeys(d for i in milestone_ids for d in course.milestone(i).datasets):
        ds = data.dataset(name)
        if ds.build:
            continue  # shipped in the zip
        found = data.fetch(name, progress=False)
        for f in ds.files:
            source, target = found / f.name, into / f.path
            if not data.is_valid(target, f):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        print(f"dataset {name}: {into / ds.folder}")


def place_submission(course: Course, submission: Path, dest: Path, chosen: list[Milestone]) -> Path:
    """Copy the submission into `dest` and return its implementation root: a repository as it is, files
    uploaded one by one into the NN/ folder of the graded milestone that has a module of that name."""
    from llmfs.classroom import Submission, SubmissionError, unpack

    root = unpack(Submission("submission", submission, "folder"), dest / "files")
    if any((root / m.id).is_dir() for m in chosen):
        return root
    placed = dest / "placed"
    for m in chosen:
        (placed / m.id).mkdir(parents=True)
    for path in sorted(root.glob("*.py")):
        owners = [m for m in chosen if path.stem in m.modules]
        if len(owners) > 1:
            raise SubmissionError(f"{path.name} belongs to milestones {' and '.join(m.id for m in owners)}: "
                                  "submit the repository, or folders named by milestone (01/, 02/)")
        if owners:
            shutil.copyfile(path, placed / owners[0].id / path.name)
    return placed


def _set_visibility(results: dict, visibility: str) -> dict:
    results["visibility"] = visibility
    for test in results["tests"]:
        test["visibility"] = visibility
    return results


def _failure(message: str, infrastructure: bool, details: str = "") -> dict:
    """A results.json without a grade: the learner's upload cannot be graded, or the grader broke."""
    return {"score": 0.0, "output": message, "output_format": "text", "visibility": "visible",
            "stdout_visibility": "hidden", "tests": [],
            "extra_data": {"infrastructure_error": infrastructure, "details": details[-4000:]}}


def run(root: Path, milestone_ids: list[str], visibility: str) -> dict:
    """Grade root/submission and write root/results/results.json; returns what was written."""
    from llmfs.classroom import SubmissionError
    from llmfs.grader import grade
    from llmfs.report import gradescope

    started = time.monotonic()
    try:
        course = load_course()
        chosen = [course.milestone(i) for i in milestone_ids]
        with tempfile.TemporaryDirectory(prefix="llmfs-autograder-") as tmp:
            impl = place_submission(course, root / "submission", Path(tmp), chosen)
            results = grade(course, impl, milestone_ids)
            payload = _set_visibility(gradescope(results, time.monotonic() - started), visibility)
    except SubmissionError as e:
        payload = _failure(f"This submission cannot be graded: {e}", infrastructure=False)
    except Exception as e:  # the grader's own failure: never the learner's
        payload = _failure(f"The autograder itself failed ({type(e).__name__}: {e}). This is not your fault: tell "
                           "your instructor, who can regrade it.", infrastructure=True, details=traceback.format_exc())
    atomic_write_text(root / "results" / "results.json", json.dumps(payload, indent=2) + "\n")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfs.autograder", description="Gradescope's side of a bundle")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="grade ROOT/submission into ROOT/results/results.json")
    r.add_argument("--root", type=Path, default=Path("/autograder"))
    r.add_argument("--visibility", choices=VISIBILITIES, default="visible")
    r.add_argument("milestones", nargs="+")
    b = sub.add_parser("bake-data", help="fetch the milestones' datasets into a folder (setup.sh)")
    b.add_argument("--into", type=Path, required=True)
    b.add_argument("milestones", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "run":
        payload = run(args.root, args.milestones, args.visibility)
        print(payload["output"])
    else:
        bake_data(args.milestones, args.into)
    return 0


if __name__ == "__main__":
    sys.exit(main())
