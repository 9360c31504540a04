"""The class's results, written for people and for tools (every file atomically):

    leaderboard.json   the data: one row per learner (rank, points per milestone, total, figures, status)
    leaderboard.md     the same as a Markdown table (a README, a CI job summary)
    leaderboard.html   a static page; click a column header to sort (no server, no external files)
    grades.csv         nbgrader's export columns, one row per learner and milestone
    gradebook.db       an nbgrader gradebook (SQLite): one assignment per milestone ("milestone01"), each with
                       one notebook "hidden_tests" whose grade cell "points" holds the milestone's points, so
                       `nbgrader export --db sqlite:///OUT/gradebook.db` and nbgrader's own tools read it.
                       Updated in place, never rebuilt: each run adds missing assignments, students and
                       submissions and sets auto scores (and the cell's max_score); what the instructor set with
                       nbgrader's tools survives (names, emails, due dates, manual scores, extra credit,
                       comments, students and assignments not in the run)

Ranks: by total points, highest first; equal totals share a rank (1, 1, 3). Figures (BPE training speed,
validation loss, ...) come from the tests' `leaderboard` fixture; each says whether lower or higher is better.
With `pseudonyms=True` the public files (json, md, html) name learners by a salted hash; csv and gradebook
keep the real names for the instructor.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import secrets
import shutil
import sqlite3
import sys
import warnings
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from llmfs.course import Course
from llmfs.fsutil import atomic_write_text, replaced_atomically

if TYPE_CHECKING:
    from nbgrader.api import Grade, Gradebook

NBGRADER_COLUMNS = ("assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                    "raw_score", "late_submission_penalty", "score", "max_score")
NOTEBOOK, GRADE_CELL = "hidden_tests", "points"
PROBLEMS = ("error", "timeout", "tampered")


def assignment_name(milestone_id: str) -> str:
    return f"milestone{milestone_id}"


def pseudonym(name: str, salt: str) -> str:
    return "learner-" + hashlib.sha256(f"{salt}:{name}".encode()).hexdigest()[:8]


def _salt(out: Path) -> str:
    path = out / ".pseudonym-salt"
    if not path.is_file():
        atomic_write_text(path, secrets.token_hex(16))
    return path.read_text().strip()


def _status(statuses: dict[str, str]) -> str:
    """"complete", or what is not, grouped: "not started: 03, 04, 05; timeout: 02"."""
    grouped: dict[str, list[str]] = {}
    for mid, status in statuses.items():
        if status != "complete":
            grouped.setdefault(status, []).append(mid)
    return "; ".join(f"{status}: {', '.join(mids)}" for status, mids in grouped.items()) or "complete"


def _as_of(records: list[dict]) -> str:
    """When the newest record was graded: the same records give the same files (a merge of shards included)."""
    times = [r["graded_at"] for r in records if r.get("graded_at")]
    newest = max(times, key=datetime.fromisoformat) if times else datetime.now(timezone.utc).isoformat()
    return datetime.fromisoformat(newest).isoformat(timespec="seconds")


def table(course: Course, records: list[dict], salt: str | None = None) -> dict:
    """The leaderboard's data (what leaderboard.json holds)."""
    milestone_ids = [m.id for m in course.milestones if any(m.id in r["milestones"] for r in records)]
    metrics: dict[str, str] = {}
    rows = []
    for r in records:
        figures = {}
        for mid, summary in r["milestones"].items():
            for metric in summary.get("metrics", []):
                name = f"{mid} {metric['name']}"
                metrics.setdefault(name, metric["order"])
                figures[name] = metric["value"]
        statuses = {mid: s["status"] for mid, s in r["milestones"].items()}
        rows.append({
            "learner": pseudonym(r["name"], salt) if salt else r["name"],
            "total": sum(s["score"] for s in r["milestones"].values()),
            "max_total": sum(s["max_score"] for s in r["milestones"].values()),
            "milestones": {mid: {"score": s["score"], "max_score": s["max_score"], "status": s["status"]}
                           for mid, s in r["milestones"].items()},
            "metrics": figures,
            "status": r["error"] or _status(statuses),
            "problem": bool(r["error"]) or any(st in PROBLEMS for st in statuses.values()),
            "seconds": r.get("seconds", 0.0),
            "graded_at": r.get("graded_at", ""),
        })
    rows.sort(key=lambda row: (-row["total"], row["learner"]))
    for i, row in enumerate(rows):
        row["rank"] = rows[i - 1]["rank"] if i and row["total"] == rows[i - 1]["total"] else i + 1
    return {
        "course": course.title,
        "generated_at": _as_of(records),
        "milestones": [{"id": m.id, "title": m.title, "points": m.points} for m in course.milestones
                       if m.id in milestone_ids],
        "metrics": [{"name": name, "order": order} for name, order in metrics.items()],
        "rows": rows,
    }


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def markdown(data: dict) -> str:
    head = ["Rank", "Learner", *[f"{m['id']} ({m['points']:g})" for m in data["milestones"]], "Total",
            *[f"{m['name']} ({'lower' if m['order'] == 'asc' else 'higher'} is better)" for m in data["metrics"]],
            "Status"]
    lines = [f"# {data['course']}: leaderboard", "", f"Grades as of {data['generated_at']} (the newest grading).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in data["rows"]:
        cells = [str(row["rank"]), row["learner"].replace("|", "\\|"),
                 *[f"{row['milestones'][m['id']]['score']:g}" if m["id"] in row["milestones"] else ""
                   for m in data["milestones"]],
                 f"{row['total']:g}/{row['max_total']:g}",
                 *[_figure(row["metrics"].get(m["name"])) for m in data["metrics"]],
                 row["status"].replace("|", "\\|").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


HTML_SCRIPT = """
document.querySelectorAll('th').forEach((th, column) => th.addEventListener('click', () => {
  const body = document.querySelector('#leaderboard tbody');
  const rows = Array.from(body.rows);
  const ascending = th.dataset.sorted !== 'asc';
  document.querySelectorAll('th').forEach(h => { delete h.dataset.sorted; h.removeAttribute('aria-sort'); });
  th.dataset.sorted = ascending ? 'asc' : 'desc';
  th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  const key = row => {
    const cell = row.cells[column];
    const raw = cell.dataset.value ?? cell.textContent;
    return th.dataset.type === 'number' ? (raw === '' ? NaN : parseFloat(raw)) : raw.toLowerCase();
  };
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y);  // blanks last
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
  });
  rows.forEach(row => body.appendChild(row));
}));
"""

HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; }
th, td { padding: .35rem .7rem; border-bottom: 1px solid #ddd; text-align: right; }
th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; user-select: none; }
th[data-sorted=asc]::after { content: " ▲"; } th[data-sorted=desc]::after { content: " ▼"; }
td.text, th.text { text-align: left; }
td:last-child { max-width: 28rem; }
td:nth-child(2) { white-space: nowrap; }
th { font-size: .85rem; }
tr.problem td { background: #fff4f4; }
"""


def page(data: dict) -> str:
    """The static HTML page: every value escaped (learner names come from file names)."""
    esc = html.escape
    headers = [("Rank", "number", "text"), ("Learner", "text", "text")]
    headers += [(f"{m['id']} {m['title']} ({m['points']:g})", "number", "") for m in data["milestones"]]
    headers += [("Total", "number", "")]
    headers += [(f"{m['name']} ({'lower' if m['order'] == 'asc' else 'higher'} is better)", "number", "")
                for m in data["metrics"]]
    headers += [("Status", "text", "text")]
    head = "".join(f'<th data-type="{kind}" class="{cls}" scope="col">{esc(title)}</th>'
                   for title, kind, cls in headers)
    body = []
    for row in data["rows"]:
        cells = [f'<td data-value="{row["rank"]}" class="text">{row["rank"]}</td>',
                 f'<td class="text">{esc(row["learner"])}</td>']
        for m in data["milestones"]:
            score = row["milestones"].get(m["id"], {}).get("score")
            cells.append(f'<td data-value="{"" if score is None else score}">{"" if score is None else f"{score:g}"}'
                         "</td>")
        cells.append(f'<td data-value="{row["total"]}">{row["total"]:g}/{row["max_total"]:g}</td>')
        for m in data["metrics"]:
            value = row["metrics"].get(m["name"])
            cells.append(f'<td data-value="{"" if value is None else value}">{_figure(value)}</td>')
        cells.append(f'<td class="text">{esc(row["status"])}</td>')
        problem = ' class="problem"' if row["problem"] else ""
        body.append(f"<tr{problem}>{''.join(cells)}</tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(data['course'])}: leaderboard</title>
<style>{HTML_STYLE}</style></head>
<body><h1>{esc(data['course'])}: leaderboard</h1>
<p>{len(data['rows'])} learners; grades as of {esc(data['generated_at'])}. Click a column to sort.</p>
<table id="leaderboard"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<script>{HTML_SCRIPT}</script></body></html>
"""


def nbgrader_rows(course: Course, records: list[dict]) -> list[dict]:
    rows = []
    for m in course.milestones:
        for r in sorted(records, key=lambda r: r["name"]):
            if m.id in r["milestones"]:
                s = r["milestones"][m.id]
                rows.append({"assignment": assignment_name(m.id), "duedate": "", "timestamp": r.get("graded_at", ""),
                             "student_id": r["name"], "last_name": "", "first_name": "", "email": "",
                             "raw_score": s["score"], "late_submission_penalty": 0.0, "score": s["score"],
                             "max_score": s["max_score"]})
    return rows


def grades_csv(course: Course, records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=NBGRADER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(nbgrader_rows(course, records))
    return buffer.getvalue()


def write_gradebook(course: Course, records: list[dict], path: Path) -> Path:
    """Update the nbgrader gradebook at `path` in place (created when missing), atomically.

    The update runs on a copy in the same folder, renamed over `path` only once it is complete; a failure
    leaves `path` as it was. Only this run's assignments, students, submissions and auto scores are added or
    changed: what an instructor set with nbgrader's tools (names, emails, due dates, manual scores, extra
    credit, comments, other students and assignments) is kept.
    """
    bin_dir = str(Path(sys.executable).parent)  # nbgrader runs `alembic` from PATH
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from nbgrader.api import Gradebook

    with replaced_atomically(path) as tmp:
        if path.is_file():
            _copy_database(path, tmp)
        with warnings.catch_warnings(), Gradebook(f"sqlite:///{tmp}") as gb:
            warnings.simplefilter("ignore")  # SQLAlchemy's autoflush notes from inside nbgrader
            _skip_fsyncs(gb)
            _upsert(gb, course, records)
        _fsync(tmp)
    return path


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite database `source` (SQLite's backup, not a byte copy), with its mode."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    shutil.copymode(source, target)


def _skip_fsyncs(gb: Gradebook) -> None:
    """No journal file and no fsync at each of nbgrader's many commits (one per new submission) on the temporary
    copy: a crash discards the copy anyway, and write_gradebook syncs the finished file once before the rename.
    (A first write for 200 learners x 8 milestones: about 10 s instead of 25-40 s on a busy machine.)"""
    from sqlalchemy import event

    def pragmas(connection: sqlite3.Connection, _record: object) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA journal_mode=MEMORY")  # rollbacks still work, from memory
        cursor.close()

    event.listen(gb.engine, "connect", pragmas)
    gb.engine.dispose()  # the connection nbgrader opened in Gradebook() predates the listener


def _fsync(path: Path) -> None:
    """Flush the file at `path` to disk."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _upsert(gb: Gradebook, course: Course, records: list[dict]) -> None:
    """Add what `records` need to the gradebook `gb` and set their auto scores; change nothing else."""
    milestones = [m for m in course.milestones if any(m.id in r["milestones"] for r in records)]
    for m in milestones:
        _upsert_assignment(gb, assignment_name(m.id), m.points)
    known = {student.id for student in gb.students}
    for r in records:
        if r["name"] not in known:
            gb.add_student(r["name"])  # names and email stay unset: nbgrader's tools fill them in
    grades = _grades(gb)
    for r in records:
        for m in milestones:
            if m.id in r["milestones"]:
                key = (assignment_name(m.id), r["name"])
                grade = grades.get(key) or _new_grade(gb, *key)
                grade.auto_score = r["milestones"][m.id]["score"]  # manual score and extra credit untouched
    gb.db.commit()


def _upsert_assignment(gb: Gradebook, assignment: str, points: float) -> None:
    """The assignment, its notebook and its grade cell, created when missing; the cell's max_score kept current.
    An existing assignment keeps its due date (no keyword touches it)."""
    gb.update_or_create_assignment(assignment)
    gb.update_or_create_notebook(NOTEBOOK, assignment)
    gb.update_or_create_grade_cell(GRADE_CELL, NOTEBOOK, assignment, max_score=points, cell_type="code")


def _grades(gb: Gradebook) -> dict[tuple[str, str], Grade]:
    """The existing grades of the milestones' grade cell by (assignment, student id), in one query."""
    from nbgrader.api import Assignment, Grade, GradeCell, Notebook, SubmittedAssignment, SubmittedNotebook

    rows = (gb.db.query(Grade, Assignment.name, SubmittedAssignment.student_id)
            .join(GradeCell, GradeCell.id == Grade.cell_id)
            .join(SubmittedNotebook, SubmittedNotebook.id == Grade.notebook_id)
            .join(Notebook, Notebook.id == SubmittedNotebook.notebook_id)
            .join(SubmittedAssignment, SubmittedAssignment.id == SubmittedNotebook.assignment_id)
            .join(Assignment, Assignment.id == SubmittedAssignment.assignment_id)
            .filter(GradeCell.name == GRADE_CELL, Notebook.name == NOTEBOOK))
    return {(assignment, student): grade for grade, assignment, student in rows}


def _new_grade(gb: Gradebook, assignment: str, student: str) -> Grade:
    """The grade of a submission created now (nbgrader mirrors the assignment's cells into it)."""
    gb.update_or_create_submission(assignment, student)
    return gb.find_grade(GRADE_CELL, NOTEBOOK, assignment, student)


def write_all(course: Course, records: list[dict], out: Path, pseudonyms: bool = False,
              gradebook: bool = True) -> list[Path]:
    """Every output for `records` in `out`; the gradebook (a few seconds) only when `gradebook`."""
    data = table(course, records, _salt(out) if pseudonyms else None)
    written = [
        atomic_write_text(out / "leaderboard.json", json.dumps(data, indent=2) + "\n"),
        atomic_write_text(out / "leaderboard.md", markdown(data)),
        atomic_write_text(out / "leaderboard.html", page(data)),
        atomic_write_text(out / "grades.csv", grades_csv(course, records)),
    ]
    if gradebook:
        written.append(write_gradebook(course, records, out / "gradebook.db"))
    return written
