"""`llmfs grade-all --shard I/N` and `llmfs merge-grades` (llmfs.shards).

The fast tests merge synthetic records (no grading) and compare every output byte for byte with what one
unsharded folder gets from the same records; the clock is frozen in both, since leaderboard.json, .md and .html
say when they were generated. The slow test grades a small class of milestone 01 for real, unsharded and in two
shards, and compares the learners' points and the merged outputs (timing fields aside).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import pytest

import llmfs.classroom as classroom
import llmfs.leaderboard as leaderboard
from llmfs.classroom import (
    MANIFEST,
    RECORD_VERSION,
    ClassGrader,
    Options,
    content_hash,
    discover,
    record_key,
    shard_manifest,
    shard_of,
)
from llmfs.cli import build_parser
from llmfs.course import Course
from llmfs.shards import MergeError, merge, parse_shard

OUTPUTS = ("leaderboard.json", "leaderboard.md", "leaderboard.html", "grades.csv")
FROZEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------------- helpers


class FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return FROZEN if tz else FROZEN.replace(tzinfo=None)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """leaderboard.json/md/html say when they were made: the same instant for both sides of a comparison."""
    monkeypatch.setattr(leaderboard, "datetime", FrozenClock)


@pytest.fixture
def no_gradebook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip nbgrader (seconds per gradebook) where a test compares the other files only."""
    monkeypatch.setattr(leaderboard, "write_gradebook", lambda course, records, path: path)


def gradebook_rows(path: Path) -> list[tuple]:
    """Every grade of the nbgrader gradebook with its assignment, student, notebook and cell (not the random ids)."""
    query = """
        SELECT assignment.name, submitted_assignment.student_id, notebook.name, base_cell.name, grade.auto_score,
               grade.manual_score, grade.extra_credit, grade.needs_manual_grade, grade_cells.max_score
        FROM grade
        JOIN submitted_notebook ON grade.notebook_id = submitted_notebook.id
        JOIN submitted_assignment ON submitted_notebook.assignment_id = submitted_assignment.id
        JOIN assignment ON submitted_assignment.assignment_id = assignment.id
        JOIN notebook ON submitted_notebook.notebook_id = notebook.id
        JOIN base_cell ON grade.cell_id = base_cell.id
        JOIN grade_cells ON grade.cell_id = grade_cells.id"""
    with closing(sqlite3.connect(path)) as db:
        grades = sorted(db.execute(query).fetchall())
        students = sorted(db.execute("SELECT id, first_name, last_name, email FROM student").fetchall())
    return [*students, *grades]


def assert_same_outputs(expected: Path, actual: Path, gradebook: bool = True) -> None:
    """Every file an unsharded `grade-all` writes, byte for byte (the gradebook by its rows: SQLite pages and
    nbgrader's random ids differ from one build to the next)."""
    for name in OUTPUTS:
        assert (actual / name).read_bytes() == (expected / name).read_bytes(), f"{name} differs from one folder's"
    for folder in ("submissions", "feedback"):
        want = {p.name: p.read_bytes() for p in (expected / folder).glob("*.json")}
        got = {p.name: p.read_bytes() for p in (actual / folder).glob("*.json")}
        assert sorted(got) == sorted(want), f"{folder}/: {sorted(set(want) ^ set(got))} in one run only"
        for name in want:
            assert got[name] == want[name], f"{folder}/{name} differs from the unsharded run's"
    if gradebook:
        assert gradebook_rows(actual / "gradebook.db") == gradebook_rows(expected / "gradebook.db")


def milestone(score: float, status: str, metrics: list[dict] | None = None, max_score: float = 100.0) -> dict:
    return {"score": score, "max_score": max_score, "status": status, "message": "", "passed": 3, "total": 5,
            "seconds": 4.25, "network": "isolated", "hidden": True, "metrics": metrics or [], "output_bytes": 10,
            "log_tail": "..."}


def figure(name: str, value: float, order: str = "asc") -> dict:
    return {"name": name, "value": value, "order": order}


# One entry per learner: (entry in SUBMISSIONS, milestone 01, milestone 02, error). The leaderboard's figure columns
# come in the order the records first show them, and grade-all lists records by entry name: here every learner
# with figures brings a new one, so a merge listing the learners in another order would change the files.
CLASS = (
    ("ada", milestone(100, "complete"), milestone(100, "complete"), ""),
    ("bob.zip", milestone(0, "error"), milestone(0, "error"), "bob.zip is not a readable zip file: truncated"),
    ("cy.git", milestone(60, "partial"), milestone(0, "not started", [figure("mem MB", 12.0)]), ""),
    ("dee", milestone(100, "complete", [figure("train s", 2.5)]), milestone(40, "timeout"), ""),
    ("eve.bundle", milestone(0, "tampered"), milestone(0, "not started"), ""),
    ("fay", milestone(100, "complete"), milestone(100, "complete", [figure("loss", 1.1)]), ""),
    ("gus", milestone(0, "not started"), milestone(0, "not started"), ""),
    ("hal|pipe", milestone(60, "partial", [figure("train s", 9.0)]),
     milestone(100, "complete", [figure("loss", 1.2), figure("tok/s", 900.0, "desc")]), ""),
    ("ivy", milestone(100, "complete", [figure("accuracy", 0.5, "desc")]), milestone(0, "not started"), ""),
)
FINGERPRINT = "f" * 64


def make_class(root: Path) -> list[dict]:
    """The records of CLASS, in the order `grade-all` lists them (discover() on a folder of such entries)."""
    entries = root / "entries"
    entries.mkdir(parents=True)
    for entry, *_ in CLASS:
        if entry.endswith((".zip", ".bundle")):
            (entries / entry).touch()
        else:
            (entries / entry).mkdir()
        if entry.endswith(".git"):  # a bare repository
            (entries / entry / "HEAD").touch()
            (entries / entry / "objects").mkdir()
    by_entry = {entry: rest for entry, *rest in CLASS}
    records = []
    for i, s in enumerate(discover(entries)):
        m01, m02, error = by_entry[s.path.name]
        gradescope = None if error else {"score": m01["score"] + m02["score"], "tests": [], "learner": s.name}
        records.append({"version": RECORD_VERSION, "name": s.name, "source": s.path.name, "kind": s.kind,
                        "key": f"{i:064x}", "graded_at": f"2025-01-01T00:{i:02d}:00+00:00", "cached": False,
                        "error": error, "gradescope": gradescope, "milestones": {"01": m01, "02": m02},
                        "seconds": 10.0 + i})
    return records


def write_records(out: Path, records: list[dict]) -> None:
    """What ClassGrader writes for each record (submissions/NAME.json, feedback/NAME.json)."""
    for r in records:
        (out / "submissions").mkdir(parents=True, exist_ok=True)
        (out / "submissions" / f"{r['name']}.json").write_text(json.dumps(r, indent=1))
        if r["gradescope"]:
            (out / "feedback").mkdir(exist_ok=True)
            (out / "feedback" / f"{r['name']}.json").write_text(json.dumps(r["gradescope"], indent=2))


def write_shards(root: Path, records: list[dict], count: int, options: Options | None = None,
                 fingerprint: str = FINGERPRINT) -> list[Path]:
    """The folders `grade-all --shard I/count` would leave: each shard's records and its shard.json."""
    options = options or Options(milestones=["01", "02"])
    folders = []
    for index in range(1, count + 1):
        folder = root / f"shard-{index}"
        mine = [r for r in records if shard_of(r["name"], count) == index]
        write_records(folder, mine)
        (folder / "submissions").mkdir(parents=True, exist_ok=True)
        manifest = shard_manifest((index, count), fingerprint, options, {r["name"]: r["key"] for r in mine})
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
        folders.append(folder)
    return folders


@pytest.fixture
def records(tmp_path: Path) -> list[dict]:
    return make_class(tmp_path / "class")


def unsharded(course: Course, records: list[dict], out: Path, pseudonyms: bool = False) -> Path:
    """What `grade-all` writes for these records in one folder."""
    write_records(out, records)
    leaderboard.write_all(course, records, out, pseudonyms, gradebook=True)
    return out


# ------------------------------------------------------------------------------------------ sharding


def test_shard_is_parsed_strictly() -> None:
    assert parse_shard("1/2") == (1, 2) and parse_shard("20/20") == (20, 20) and parse_shard("1/1") == (1, 1)
    for bad in ("0/2", "3/2", "1/0", "2", "1/2/3", "a/b", "-1/2", "1 / 2x", ""):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert build_parser().parse_args(["grade-all", "subs", "--shard", "2/3"]).shard == (2, 3)
    assert build_parser().parse_args(["grade-all", "subs"]).shard is None


@pytest.mark.parametrize("bad", ["0/2", "3/2", "two/3", "1"])
def test_a_bad_shard_is_an_argparse_error(bad: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["grade-all", "subs", "--shard", bad])
    assert exit_.value.code == 2
    assert "--shard" in capsys.readouterr().err


def test_every_learner_is_in_exactly_one_shard_and_stays_there() -> None:
    names = [f"learner-{i:04d}" for i in range(1000)]
    for count in (1, 2, 3, 20):
        shards = {name: [i for i in range(1, count + 1) if shard_of(name, count) == i] for name in names}
        assert all(len(found) == 1 for found in shards.values()), f"a learner in none or several of {count} shards"
        sizes = [sum(1 for found in shards.values() if found == [i]) for i in range(1, count + 1)]
        assert min(sizes) >= 0.6 * len(names) / count, sizes  # balanced enough: no shard gets far more
    before = {name: shard_of(name, 4) for name in names}
    after = {name: shard_of(name, 4) for name in ["newcomer", *names[::-1]]}
    assert all(after[name] == shard for name, shard in before.items()), "a new learner moved the others"


def test_a_shard_grades_only_its_learners_and_publishes_nothing(course: Course, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """All records cached (keys computed as grade-all computes them), so nothing is graded: what a sharded run
    picks, reuses and writes. (The grader's fingerprint is fixed: others may be editing the grading code.)"""
    submissions = tmp_path / "submissions"
    names = ["ada", "bob", "cy", "dee", "eve", "fay"]
    for name in names:
        (submissions / name / "01").mkdir(parents=True)
        (submissions / name / "01" / "bigram.py").write_text(f"# {name}\n")
    options = Options(milestones=["01"], limits={"test_timeout_s": 20.0})
    fingerprint = FINGERPRINT
    monkeypatch.setattr(classroom, "course_fingerprint", lambda root: fingerprint)
    records = [{"version": RECORD_VERSION, "name": s.name, "source": s.path.name, "kind": s.kind,
                "key": record_key(content_hash(s), fingerprint, options), "graded_at": "2025-01-01T00:00:00+00:00",
                "cached": False, "error": "", "gradescope": None, "milestones": {"01": milestone(7, "partial")},
                "seconds": 1.0} for s in discover(submissions)]
    picked = set()
    for index in (1, 2):
        out = tmp_path / f"shard-{index}"
        write_records(out, records)  # the whole class's records: a shard must still take only its own
        sharded = Options(milestones=options.milestones, limits=options.limits, shard=(index, 2))
        starts: list[tuple[int, int]] = []
        got = ClassGrader(course, submissions, out, sharded).run(on_start=lambda *a, seen=starts: seen.append(a))
        mine = sorted(n for n in names if shard_of(n, 2) == index)
        assert sorted(r["name"] for r in got) == mine and all(r["cached"] for r in got)
        assert starts == [(len(mine), len(mine))], "the shard regraded cached records"
        manifest = json.loads((out / MANIFEST).read_text())
        assert manifest["shard"] == [index, 2] and manifest["fingerprint"] == fingerprint
        assert manifest["learners"] == {r["name"]: r["key"] for r in records if r["name"] in mine}
        assert not [name for name in (*OUTPUTS, "gradebook.db") if (out / name).exists()], "a shard published"
        picked |= set(mine)
    assert picked == set(names)


# ------------------------------------------------------------------------------------------- merging


def test_merged_outputs_are_byte_identical_to_one_folder(course: Course, records: list[dict], tmp_path: Path,
                                                         frozen: None) -> None:
    expected = unsharded(course, records, tmp_path / "one")
    shards = write_shards(tmp_path, records, 2)
    assert all(list((s / "submissions").glob("*.json")) for s in shards), "a shard without learners tests little"
    merged = merge(course, shards, tmp_path / "merged")
    assert [r["name"] for r in merged] == [r["name"] for r in records]
    assert_same_outputs(expected, tmp_path / "merged")


@pytest.mark.parametrize("count", [1, 3, 5])
def test_any_number_of_shards_merges_to_the_same_files(course: Course, records: list[dict], tmp_path: Path,
                                                       frozen: None, no_gradebook: None, count: int) -> None:
    expected = unsharded(course, records, tmp_path / "one")
    shards = write_shards(tmp_path, records, count)
    merge(course, shards[::-1], tmp_path / "merged")  # in any order
    assert_same_outputs(expected, tmp_path / "merged", gradebook=False)


def test_merged_pseudonyms_are_byte_identical_and_keep_the_salt(course: Course, records: list[dict], tmp_path: Path,
                                                                frozen: None, no_gradebook: None) -> None:
    expected = unsharded(course, records, tmp_path / "one", pseudonyms=True)
    salt = (expected / ".pseudonym-salt").read_text()
    shards = write_shards(tmp_path, records, 2)
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / ".pseudonym-salt").write_text(salt)  # the merge folder's own salt, kept run to run
    merge(course, shards, tmp_path / "merged", pseudonyms=True)
    assert_same_outputs(expected, tmp_path / "merged", gradebook=False)
    board = json.loads((tmp_path / "merged" / "leaderboard.json").read_text())
    assert all(row["learner"].startswith("learner-") for row in board["rows"])
    assert "ada" in (tmp_path / "merged" / "grades.csv").read_text(), "the instructor's CSV keeps real names"


def test_the_salt_comes_from_the_merge_folder_else_the_shards(course: Course, records: list[dict], tmp_path: Path,
                                                              no_gradebook: None) -> None:
    shards = write_shards(tmp_path, records, 2)
    (shards[1] / ".pseudonym-salt").write_text("from-a-shard\n")
    merge(course, shards, tmp_path / "a", pseudonyms=True)
    assert (tmp_path / "a" / ".pseudonym-salt").read_text().strip() == "from-a-shard"
    board = json.loads((tmp_path / "a" / "leaderboard.json").read_text())
    assert {row["learner"] for row in board["rows"]} == {leaderboard.pseudonym(r["name"], "from-a-shard")
                                                         for r in records}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".pseudonym-salt").write_text("the-merge-folder's")
    merge(course, shards, tmp_path / "b", pseudonyms=True)
    assert (tmp_path / "b" / ".pseudonym-salt").read_text() == "the-merge-folder's"
    (shards[0] / ".pseudonym-salt").write_text("another")
    with pytest.raises(MergeError, match=r"different pseudonym salts") as e:
        merge(course, shards, tmp_path / "c", pseudonyms=True)
    assert str(shards[0]) in str(e.value) and str(shards[1]) in str(e.value)
    for f in shards:
        (f / ".pseudonym-salt").unlink()
    merge(course, shards, tmp_path / "d", pseudonyms=True)
    assert len((tmp_path / "d" / ".pseudonym-salt").read_text().strip()) == 32, "no salt was made"
    merge(course, shards, tmp_path / "e")
    assert not (tmp_path / "e" / ".pseudonym-salt").exists()


def test_plain_folders_merge_and_agreeing_duplicates_count_once(course: Course, records: list[dict], tmp_path: Path,
                                                                frozen: None, no_gradebook: None) -> None:
    """Folders without shard.json (plain `grade-all` outputs) merge as they are."""
    expected = unsharded(course, records, tmp_path / "one")
    write_records(tmp_path / "x", records[:5])
    write_records(tmp_path / "y", records[3:])  # two learners in both, with the same records
    merge(course, [tmp_path / "y", tmp_path / "x"], tmp_path / "merged")
    assert_same_outputs(expected, tmp_path / "merged", gradebook=False)


def test_the_merge_cli(llmfs, course: Course, records: list[dict], tmp_path: Path, frozen: None) -> None:
    expected = unsharded(course, records, tmp_path / "one")
    shards = write_shards(tmp_path, records, 2)
    proc = llmfs("merge-grades", *map(str, shards), "--out", str(tmp_path / "merged"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(records)} learners from 2 shard folders" in proc.stdout
    assert "bob" in proc.stdout.split("problem(s):")[-1], "the end-of-run summary lacks the errors"
    for name in OUTPUTS:  # another process, another clock: the files say when the newest record was graded
        assert (tmp_path / "merged" / name).read_bytes() == (expected / name).read_bytes(), f"{name} differs"
    assert gradebook_rows(tmp_path / "merged" / "gradebook.db") == gradebook_rows(expected / "gradebook.db")

    missing = llmfs("merge-grades", str(shards[0]), "--out", str(tmp_path / "partial"))
    assert missing.returncode == 2 and "shard(s) 2/2 missing" in missing.stdout + missing.stderr
    assert not (tmp_path / "partial" / "leaderboard.json").exists()
    usage = llmfs("merge-grades", str(shards[0]))
    assert usage.returncode == 2 and "--out" in usage.stderr


# ------------------------------------------------------------------------------------ refusing to merge


def _refused(course: Course, folders: list[Path], out: Path, *, naming: tuple[Path, ...] = (), match: str) -> None:
    with pytest.raises(MergeError, match=match) as e:
        merge(course, folders, out)
    for folder in naming:
        assert str(folder.resolve()) in str(e.value), f"the message does not name {folder}: {e.value}"
    assert not (out / "leaderboard.json").exists(), "a refused merge wrote outputs"


def test_a_folder_without_records_is_named(course: Course, records: list[dict], tmp_path: Path) -> None:
    shards = write_shards(tmp_path, records, 2)
    (tmp_path / "typo").mkdir()
    _refused(course, [shards[0], tmp_path / "typo"], tmp_path / "m", naming=(tmp_path / "typo",),
             match="has no submissions/ folder")
    _refused(course, [*shards, tmp_path / "nowhere"], tmp_path / "m", naming=(tmp_path / "nowhere",),
             match="has no submissions/ folder")
    _refused(course, [shards[0], shards[1]], shards[1], naming=(shards[1],), match="is one of the shard folders")


def test_missing_duplicated_or_mismatched_shards(course: Course, records: list[dict], tmp_path: Path) -> None:
    two = write_shards(tmp_path / "two", records, 2)
    three = write_shards(tmp_path / "three", records, 3)
    _refused(course, [two[1]], tmp_path / "m", match=r"shard\(s\) 1/2 missing")
    _refused(course, [two[0], three[1]], tmp_path / "m", naming=(two[0], three[1]), match="split the class differently")
    copy = tmp_path / "copy-of-1"
    shutil.copytree(two[0], copy)
    _refused(course, [two[0], copy, two[1]], tmp_path / "m", naming=(two[0], copy), match="shard 1/2 given twice")
    write_records(tmp_path / "plain", records)
    _refused(course, [*two, tmp_path / "plain"], tmp_path / "m", naming=(tmp_path / "plain",),
             match=f"has no {MANIFEST}")


@pytest.mark.parametrize(("change", "what"), [
    (lambda m: {**m, "fingerprint": "0" * 64}, "grader fingerprint"),
    (lambda m: {**m, "milestones": ["01"]}, "milestones"),
    (lambda m: {**m, "limits": {"test_timeout_s": 20.0}}, "limits"),
])
def test_shards_graded_differently_are_refused(course: Course, records: list[dict], tmp_path: Path,
                                               change: Callable[[dict], dict], what: str) -> None:
    shards = write_shards(tmp_path, records, 2)
    manifest = json.loads((shards[1] / MANIFEST).read_text())
    (shards[1] / MANIFEST).write_text(json.dumps(change(manifest)))
    _refused(course, shards, tmp_path / "m", naming=tuple(shards), match=f"graded with different {what}")


def test_an_unfinished_shard_is_refused(course: Course, records: list[dict], tmp_path: Path) -> None:
    shards = write_shards(tmp_path, records, 2)
    victim = next(p for p in sorted((shards[1] / "submissions").glob("*.json")))
    stale = json.loads(victim.read_text())
    victim.write_text(json.dumps({**stale, "key": "1" * 64}, indent=1))  # graded before the submission changed
    _refused(course, shards, tmp_path / "m", naming=(shards[1],), match=f"incomplete: the record of {victim.stem} ")
    victim.unlink()  # killed before grading it
    _refused(course, shards, tmp_path / "m", naming=(shards[1],), match=f"incomplete: {victim.stem} has no record")


def test_records_that_disagree_are_refused(course: Course, records: list[dict], tmp_path: Path) -> None:
    write_records(tmp_path / "x", records[:5])
    changed = [{**r, "milestones": {**r["milestones"], "01": milestone(1, "partial")}} for r in records[4:]]
    write_records(tmp_path / "y", changed)
    _refused(course, [tmp_path / "x", tmp_path / "y"], tmp_path / "m", naming=(tmp_path / "x", tmp_path / "y"),
             match=f"{records[4]['name']} is graded in both")
    write_records(tmp_path / "z", [{**r, "milestones": {"01": r["milestones"]["01"]}} for r in records[5:]])
    _refused(course, [tmp_path / "x", tmp_path / "z"], tmp_path / "m", naming=(tmp_path / "z",),
             match="graded on milestones 01 but")
    write_records(tmp_path / "old", [{**r, "version": RECORD_VERSION + 1} for r in records[5:]])
    _refused(course, [tmp_path / "x", tmp_path / "old"], tmp_path / "m", naming=(tmp_path / "old",),
             match="record of version")


# --------------------------------------------------------------------------------- graded for real (slow)

HERE = Path(__file__).parent
LIMITS = ("-m", "01", "--test-timeout", "20", "--time-limit", "150")
TIME_FIELDS = ("seconds", "graded_at")  # and leaderboard.json's generated_at


def _faults():
    spec = importlib.util.spec_from_file_location("class_faults", HERE / "class_faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("class_faults", module)
    spec.loader.exec_module(module)
    return module


def small_class(course: Course, dest: Path) -> Path:
    """Five learners of milestone 01: two reference copies (one zipped), two stubs, one with a stubbed function;
    named so that each of two shards gets some."""
    faults = _faults()
    reference = (course.solutions / faults.MILESTONE / faults.MODULE).read_text(encoding="utf-8")
    stubs = (course.milestones_dir / faults.MILESTONE / faults.MODULE).read_text(encoding="utf-8")
    codes = {"ref-a": reference, "ref-b": reference, "stubs-c": stubs, "stubs-d": stubs,
             "partial-e": faults.stub_function(reference, "estimate_loss")}
    submissions = dest / "submissions"
    for name, code in codes.items():
        faults._write_repo(submissions / name, code)
    with zipfile.ZipFile(submissions / "ref-b.zip", "w") as z:  # one zip, as learners upload them
        for path in sorted((submissions / "ref-b").rglob("*")):
            z.write(path, path.relative_to(submissions))
    shutil.rmtree(submissions / "ref-b")
    assert {shard_of(name, 2) for name in codes} == {1, 2}, "the class must span both shards"
    return submissions


def frozen_course(course: Course, dest: Path) -> dict[str, str]:
    """A copy of the course and of the `llmfs` package, and the environment that runs `llmfs` on them: the
    grader's fingerprint (records' keys) covers the grading code, which must not change between the runs."""
    import llmfs
    import llmfs.data

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "*.pt", ".pytest_cache")
    root = dest / "course"
    root.mkdir(parents=True)
    for name in ("course.toml", "pyproject.toml"):
        shutil.copy2(course.root / name, root / name)
    for name in ("solutions", "milestones"):
        shutil.copytree(course.root / name, root / name, ignore=ignore)
    for entry in course.hidden_tests.iterdir():
        if entry.is_dir() and entry.name[:2].isdigit():
            shutil.copytree(entry, root / "tests" / entry.name, ignore=ignore)
    package = dest / "python" / "llmfs"
    shutil.copytree(Path(llmfs.__file__).parent, package, ignore=ignore)
    llmfs.data.copy_registry(package)  # an editable install reads the course's data/registry.toml
    return {"LLMFS_COURSE": str(root), "PYTHONPATH": str(package.parent)}


def _board(out: Path) -> dict:
    """leaderboard.json without what differs between two gradings of the same code: when, how long, and the
    measured figures' values (a speed-up), whose names stay."""
    board = json.loads((out / "leaderboard.json").read_text())
    rows = [{**{k: v for k, v in row.items() if k not in TIME_FIELDS}, "metrics": sorted(row["metrics"])}
            for row in board["rows"]]
    return {**board, "generated_at": "", "rows": rows}


def _csv(out: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "timestamp"}
            for row in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))]


@pytest.mark.slow  # about two minutes on 2 cores: five submissions of 01 graded twice
def test_a_class_graded_in_two_shards_matches_one_run(llmfs, course: Course, tmp_path: Path) -> None:
    submissions = small_class(course, tmp_path)
    env = frozen_course(course, tmp_path / "frozen")
    run = functools.partial(llmfs, cwd=Path(env["LLMFS_COURSE"]), env=env, timeout=600)
    where = subprocess.run([sys.executable, "-c", "import llmfs; print(llmfs.__file__)"], env={**os.environ, **env},
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(env["PYTHONPATH"]), f"the copy of llmfs is not the one imported: {where}"
    one, merged = tmp_path / "one", tmp_path / "merged"
    shards = [tmp_path / "shard-1", tmp_path / "shard-2"]
    proc = run("grade-all", str(submissions), *LIMITS, "--jobs", "2", "--out", str(one))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = []
    for index, folder in enumerate(shards, start=1):
        proc = run("grade-all", str(submissions), *LIMITS, "--jobs", "2", "--out", str(folder),
                   "--shard", f"{index}/2")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "`llmfs merge-grades` makes them" in proc.stdout
        assert not (folder / "leaderboard.json").exists() and not (folder / "gradebook.db").exists()
        counts.append(len(list((folder / "submissions").glob("*.json"))))
    assert sum(counts) == 5 and all(counts), counts

    again = run("grade-all", str(submissions), *LIMITS, "--out", str(shards[0]), "--shard", "1/2")
    assert f"{counts[0]} submissions of shard 1/2 in {submissions}: {counts[0]} unchanged" in again.stdout, \
        again.stdout[-2000:]

    proc = run("merge-grades", *map(str, shards), "--out", str(merged))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    want = {p.stem: json.loads(p.read_text()) for p in (one / "submissions").glob("*.json")}
    got = {p.stem: json.loads(p.read_text()) for p in (merged / "submissions").glob("*.json")}
    assert sorted(got) == sorted(want) == ["partial-e", "ref-a", "ref-b", "stubs-c", "stubs-d"]
    for name, record in want.items():
        points = {mid: (m["score"], m["status"], m["passed"], m["total"]) for mid, m in record["milestones"].items()}
        assert points == {mid: (m["score"], m["status"], m["passed"], m["total"])
                          for mid, m in got[name]["milestones"].items()}, name
    assert want["ref-a"]["milestones"]["01"]["score"] == 100 and want["stubs-c"]["milestones"]["01"]["score"] == 0
    assert _board(merged) == _board(one)
    assert _csv(merged) == _csv(one)
    assert gradebook_rows(merged / "gradebook.db") == gradebook_rows(one / "gradebook.db")
    assert sorted(p.name for p in (merged / "feedback").glob("*.json")) == sorted(
        p.name for p in (one / "feedback").glob("*.json"))
