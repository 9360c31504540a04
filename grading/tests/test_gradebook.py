"""`write_gradebook` updates OUT/gradebook.db in place: what an instructor set with nbgrader's own tools (the
`nbgrader db` commands, formgrader's Python API) survives the next `llmfs grade-all`, and a crash mid-update
leaves the old gradebook as it was. Synthetic records, no grading (most of the time is nbgrader starting up)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from llmfs import leaderboard
from llmfs.course import Course
from llmfs.leaderboard import GRADE_CELL, NOTEBOOK, assignment_name, write_gradebook

NBGRADER = Path(sys.executable).parent / "nbgrader"
DUEDATE = "2030-01-15 17:00:00"


@pytest.fixture(scope="module")
def empty_gradebook(course: Course, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gradebook as write_gradebook creates it with no learners (once: nbgrader runs alembic to create one)."""
    db = write_gradebook(course, [], tmp_path_factory.mktemp("empty") / "gradebook.db")
    assert db.is_file()
    return db


@pytest.fixture
def db(empty_gradebook: Path, tmp_path: Path) -> Path:
    """OUT/gradebook.db in the test's own folder: a fresh copy of the empty gradebook."""
    db = tmp_path / "out" / "gradebook.db"
    db.parent.mkdir()
    shutil.copyfile(empty_gradebook, db)
    return db


def record(name: str, scores: dict[str, float], max_score: float = 100.0) -> dict:
    """A learner's record in the shape `llmfs grade-all` keeps (what write_gradebook reads)."""
    return {"name": name, "graded_at": "2024-05-01T12:00:00+00:00", "error": "",
            "milestones": {mid: {"score": score, "max_score": max_score, "status": "complete"}
                           for mid, score in scores.items()}}


def nbgrader(db: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """nbgrader's own command line on the gradebook `db`, which must succeed."""
    env = {**os.environ, "PATH": f"{NBGRADER.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(NBGRADER), *args, f"--db=sqlite:///{db}"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def export(db: Path, tmp_path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """`nbgrader export` of the gradebook: its CSV rows by (assignment, student id)."""
    out = tmp_path / "export.csv"
    nbgrader(db, "export", f"--to={out}", cwd=tmp_path)
    with open(out, newline="") as f:
        return {(row["assignment"], row["student_id"]): row for row in csv.DictReader(f)}


def instructor_edits(db: Path, tmp_path: Path) -> None:
    """What an instructor does between two runs with nbgrader's tools: names and email, a due date, a student who
    is not in the class run (CLI); a manual score, extra credit and a comment, as formgrader does (Python API).
    nbgrader keeps comments on solution cells, so the instructor adds one ("feedback") to the notebook first."""
    nbgrader(db, "db", "student", "add", "ada", "--first-name=Ada", "--last-name=Lovelace",
             "--email=ada@example.org", cwd=tmp_path)
    nbgrader(db, "db", "assignment", "add", "milestone01", f"--duedate={DUEDATE}", cwd=tmp_path)
    nbgrader(db, "db", "student", "add", "grace", "--first-name=Grace", "--last-name=Hopper", cwd=tmp_path)
    from nbgrader.api import Comment, Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        grade = gb.find_grade(GRADE_CELL, NOTEBOOK, "milestone01", "bob")
        grade.manual_score, grade.extra_credit, grade.needs_manual_grade = 55.0, 2.0, False
        feedback = gb.add_solution_cell("feedback", NOTEBOOK, "milestone01")
        notebook = gb.find_submission_notebook(NOTEBOOK, "milestone01", "bob")
        gb.db.add(Comment(cell_id=feedback.id, notebook=notebook, manual_comment="Check the merge order."))
        gb.db.commit()


def test_a_second_run_keeps_what_the_instructor_set(course: Course, db: Path, tmp_path: Path) -> None:
    write_gradebook(course, [record("ada", {"01": 80.0, "02": 60.0}), record("bob", {"01": 40.0})], db)
    instructor_edits(db, tmp_path)

    write_gradebook(course, [record("ada", {"01": 90.0, "02": 70.0}), record("bob", {"01": 45.0}),
                             record("cyd", {"01": 30.0})], db)

    rows = export(db, tmp_path)
    ada, bob = rows["milestone01", "ada"], rows["milestone01", "bob"]
    assert (ada["first_name"], ada["last_name"], ada["email"]) == ("Ada", "Lovelace", "ada@example.org"), (
        f"ada's names and email were lost: {ada}")
    assert ada["duedate"].startswith("2030-01-15 17:00:00"), f"milestone01's due date was lost: {ada}"
    assert ("milestone01", "grace") in rows, f"grace, who is not in the class run, was dropped: {sorted(rows)}"
    assert rows["milestone01", "grace"]["first_name"] == "Grace", rows["milestone01", "grace"]
    assert float(ada["score"]) == 90.0 and float(rows["milestone02", "ada"]["score"]) == 70.0, (
        f"ada's auto scores are not the new ones: {ada}, {rows['milestone02', 'ada']}")
    assert float(bob["score"]) == 57.0, f"bob's manual score 55 + extra credit 2 (which override auto) were lost: {bob}"
    assert float(rows["milestone01", "cyd"]["score"]) == 30.0, f"the new learner cyd is missing: {sorted(rows)}"
    assert float(ada["max_score"]) == course.milestone("01").points

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        grade = gb.find_grade(GRADE_CELL, NOTEBOOK, "milestone01", "bob")
        assert (grade.auto_score, grade.manual_score, grade.extra_credit) == (45.0, 55.0, 2.0), (
            f"bob's grade lost the instructor's scores: auto {grade.auto_score}, manual {grade.manual_score}, "
            f"extra credit {grade.extra_credit}")
        comment = gb.find_comment("feedback", NOTEBOOK, "milestone01", "bob").manual_comment
        assert comment == "Check the merge order.", f"bob's comment was lost: {comment!r}"


def test_max_score_follows_the_course(course: Course, db: Path) -> None:
    """A milestone whose points the course changed gets the new max_score."""
    write_gradebook(course, [record("ada", {"01": 80.0})], db)
    changed = replace(course, milestones=tuple(replace(m, points=50.0) if m.id == "01" else m
                                               for m in course.milestones))
    write_gradebook(changed, [record("ada", {"01": 40.0}, max_score=50.0)], db)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        assert gb.find_grade_cell(GRADE_CELL, NOTEBOOK, assignment_name("01")).max_score == 50.0
        assert gb.find_grade(GRADE_CELL, NOTEBOOK, assignment_name("01"), "ada").score == 40.0


def test_a_crash_mid_update_leaves_the_old_gradebook(course: Course, db: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_gradebook(course, [record("ada", {"01": 80.0})], db)
    before = db.read_bytes()

    def crash(*args: object) -> None:
        raise RuntimeError("killed mid-update")

    monkeypatch.setattr(leaderboard, "_new_grade", crash)
    with pytest.raises(RuntimeError, match="killed mid-update"):
        write_gradebook(course, [record("ada", {"01": 90.0}), record("bob", {"01": 40.0})], db)
    assert db.read_bytes() == before, "the crash changed the gradebook"
    assert [p.name for p in db.parent.iterdir()] == ["gradebook.db"], "the crash left a temporary file"

