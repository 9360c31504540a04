"""`llmfs grade-all` on a class of 21 submissions (grading/tests/class_faults.py): reference copies, stubs and one
submission per fault. The run is SIGKILLed halfway and resumed; every fault must end with its right points and
leave the others untouched. Milestone 01 only, with short limits, two jobs.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from llmfs.course import Course

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("class_faults", HERE / "class_faults.py")
faults = importlib.util.module_from_spec(_spec)
sys.modules["class_faults"] = faults  # dataclasses look their module up
_spec.loader.exec_module(faults)

LIMITS = ("--test-timeout", "20", "--time-limit", "150")
KILL_AFTER = 8  # records on disk when the first run is killed


class Listener(threading.Thread):
    """A server on the grading machine's loopback that records every byte a submission manages to send."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    self.received += conn.recv(1024)


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def _jails() -> set[int]:
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        if "llmfs.jail" in (p.info["cmdline"] or []):
            found.add(p.pid)
    return found


def _run_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("llmfs-grade-all-*"))


def _course_copy(course: Course, dest: Path) -> Path:
    """The instructor's course in a temporary folder, so an attack that escaped could only break the copy."""
    dest.mkdir()
    for name in ("course.toml", "pyproject.toml"):
        shutil.copy2(course.root / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "results", "*.pt")
    for name in ("solutions", "milestones"):
        shutil.copytree(course.root / name, dest / name, ignore=ignore)
    (dest / "tests").mkdir()
    for entry in course.hidden_tests.iterdir():
        if entry.is_dir() and entry.name[:2].isdigit():
            shutil.copytree(entry, dest / "tests" / entry.name, ignore=ignore)
    return dest


class ClassRun:
    def __init__(self, root: Path, course_root: Path, submissions: Path, out: Path, listener: Listener) -> None:
        self.root, self.course_root, self.submissions, self.out, self.listener = (
            root, course_root, submissions, out, listener)
        self.runs: list[subprocess.CompletedProcess | None] = []
        self.killed_with = 0
        self.orphans_alive_after_kill: list[int] = []
        self.seconds: list[float] = []

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llmfs.cli", "grade-all", str(self.submissions), "-m", "01", "--jobs", "2",
                "--out", str(self.out), *LIMITS]

    def records(self) -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in (self.out / "submissions").glob("*.json")}


@pytest.fixture(scope="module")
def graded(course: Course, tmp_path_factory: pytest.TempPathFactory) -> ClassRun:
    root = tmp_path_factory.mktemp("class")
    course_root = _course_copy(course, root / "course")
    listener = Listener()
    listener.start()
    out = root / "grades"
    submissions = faults.make_class(root, course_root, listener.port, out)
    run = ClassRun(root, course_root, submissions, out, listener)
    run.tests_digest = _digest(course_root / "tests")
    run.victim_digest = _digest(submissions / "ref-folder")
    env = {**os.environ, "LLMFS_COURSE": str(course_root)}
    before = _jails()
    runs_before = _run_folders()

    # 1. Killed halfway: SIGKILL to the grader alone, as a crash or an out-of-memory kill would do.
    started = time.monotonic()
    first = subprocess.Popen(run.command(), cwd=course_root, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    while len(run.records()) < KILL_AFTER and first.poll() is None and time.monotonic() - started < 600:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    run.seconds.append(time.monotonic() - started)
    run.killed_with = len(run.records())
    deadline = time.monotonic() + 10
    while (_jails() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    run.jails_after_kill = _jails() - before

    # 2. Resumed: the finished records are reused, the rest graded.
    started = time.monotonic()
    run.runs.append(subprocess.run(run.command(), cwd=course_root, env=env, capture_output=True, text=True,
                                   timeout=900))
    run.seconds.append(time.monotonic() - started)
    # 3. Nothing changed: nothing is regraded.
    started = time.monotonic()
    run.runs.append(subprocess.run(run.command(), cwd=course_root, env=env, capture_output=True, text=True,
                                   timeout=300))
    run.seconds.append(time.monotonic() - started)
    run.leftover_folders = _run_folders() - runs_before
    listener.done.set()
    return run


def _milestone(run: ClassRun, name: str) -> dict:
    return run.records()[name]["milestones"]["01"]


def _tests(run: ClassRun, name: str) -> list[dict]:
    return run.records()[name]["gradescope"]["tests"]


def test_the_killed_run_resumes_and_completes(graded: ClassRun) -> None:
    resumed, unchanged = graded.runs
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert KILL_AFTER <= graded.killed_with < len(faults.FAULTS), "the first run was not killed halfway"
    assert f"{graded.killed_with} unchanged since the last run" in resumed.stdout, resumed.stdout[-2000:]
    assert not graded.jails_after_kill, "grading processes outlived the killed grader"
    assert unchanged.returncode == 0, unchanged.stderr[-2000:]
    assert f"{len(faults.FAULTS)} unchanged since the last run, 0 to grade" in unchanged.stdout
    assert sorted(graded.records()) == sorted(f.name for f in faults.FAULTS)
    assert not list(Path(graded.root).glob("grades/**/.*.tmp")), "a temporary file was left behind"
    assert not graded.leftover_folders, "the killed run's working folder was not cleaned up"


def test_reference_copies_get_full_points_in_every_format(graded: ClassRun) -> None:
    for name in ("ref-folder", "ref-zip"):
        m = _milestone(graded, name)
        assert (m["score"], m["status"]) == (100, "complete"), (name, m["message"], m["log_tail"][-1500:])


def test_stubs_get_nothing_and_are_not_started(graded: ClassRun) -> None:
    for name in ("stubs-folder", "stubs-git", "stubs-bundle", "own-tests", "prints-100mb", "execs-the-reference"):
        m = _milestone(graded, name)
        assert (m["score"], m["status"]) == (0, "not started"), (name, m["message"])


def test_partial_loses_exactly_the_stubbed_function(graded: ClassRun) -> None:
    m = _milestone(graded, "partial")
    failed = [t for t in _tests(graded, "partial") if t["status"] == "failed"]
    assert m["status"] == "partial" and 0 < m["score"] < 100
    assert failed and all("write `estimate_loss`" in t["output"] for t in failed), failed


def test_own_tests_conftest_sitecustomize_and_pth_have_no_effect(graded: ClassRun) -> None:
    m = _milestone(graded, "own-tests")
    assert m["total"] == _milestone(graded, "ref-folder")["total"], "the grader collected the learner's tests"
    assert "pwned" not in m["log_tail"]


@pytest.mark.parametrize("name", ["fake-results", "patches-pytest", "patches-plugin"])
def test_tampering_scores_nothing_and_is_flagged(graded: ClassRun, name: str) -> None:
    m = _milestone(graded, name)
    assert m["score"] == 0, f"{name} scored {m['score']}: {m['message']}"
    assert m["status"] == "tampered", (m["status"], m["message"])


def test_editing_the_hidden_tests_fails_or_is_flagged(graded: ClassRun) -> None:
    """With a mount namespace the grader's copy is read-only and the edit fails (a stub is still a stub);
    without one the edit lands in this submission's private copy, is seen afterwards, and flagged."""
    m = _milestone(graded, "edits-hidden-tests")
    assert m["score"] == 0, m["message"]
    assert (m["status"], m["hidden"]) in (("not started", True), ("tampered", False)), (m["status"], m["message"])


def test_tampering_never_reaches_the_instructor_or_the_others(graded: ClassRun) -> None:
    assert _digest(graded.course_root / "tests") == graded.tests_digest, "the instructor's hidden tests changed"
    assert _digest(graded.submissions / "ref-folder") == graded.victim_digest, "another submission was changed"
    assert _milestone(graded, "edits-hidden-tests")["hidden"], "the jail did not hide the other folders"
    board = json.loads((graded.out / "leaderboard.json").read_text())
    assert len(board["rows"]) == len(faults.FAULTS)


def test_os_exit_mid_test_keeps_only_the_tests_before_it(graded: ClassRun) -> None:
    m = _milestone(graded, "exits-mid-test")
    tests = _tests(graded, "exits-mid-test")
    interrupted = next(i for i, t in enumerate(tests) if "interrupted while running this test" in t["output"])
    assert m["status"] == "error" and "exited with code 0" in m["message"], m["message"]
    assert all(t["status"] == "passed" for t in tests[:interrupted])
    assert all(t["score"] == 0 for t in tests[interrupted:])
    assert m["score"] == sum(t["max_score"] for t in tests[:interrupted]) > 0


def test_an_infinite_loop_costs_only_the_tests_that_reach_it(graded: ClassRun) -> None:
    m = _milestone(graded, "infinite-loop")
    failed = [t for t in _tests(graded, "infinite-loop") if t["status"] == "failed"]
    assert m["status"] == "timeout" and 0 < m["score"] < 100, m["message"]
    assert failed and all("Timeout" in t["output"] or "time limit" in t["output"] for t in failed), failed


def test_30_gb_allocation_fails_inside_the_submission(graded: ClassRun) -> None:
    m = _milestone(graded, "allocates-30gb")
    failed = [t for t in _tests(graded, "allocates-30gb") if t["status"] == "failed"]
    assert m["status"] == "error" and "ran out of memory" in m["message"], m["message"]
    assert 0 < m["score"] < 100 and all("MemoryError" in t["output"] for t in failed), failed


def test_orphaned_processes_are_killed(graded: ClassRun) -> None:
    pid_file = graded.root / "probes" / "orphan.pid"
    assert pid_file.is_file(), "the orphan fault never ran"
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _milestone(graded, "orphan-process")["score"] == 0


def test_100_mb_of_output_is_drained_and_cut(graded: ClassRun) -> None:
    m = _milestone(graded, "prints-100mb")
    assert m["output_bytes"] >= 100 * 2**20 and len(m["log_tail"]) <= 2000


def test_no_network_reaches_the_grading_machine(graded: ClassRun) -> None:
    m = _milestone(graded, "opens-socket")
    assert m["network"] == "isolated", "no network namespace here: the audit-hook fallback was used"
    assert graded.listener.received == b"" and graded.listener.connections == 0


def test_broken_submissions_are_errors_of_their_own(graded: ClassRun) -> None:
    syntax = _milestone(graded, "syntax-error")
    assert syntax["status"] == "error" and "SyntaxError" in syntax["message"] and "line" in syntax["message"]
    assert _milestone(graded, "empty")["status"] == "error"
    corrupt = graded.records()["corrupt"]
    assert corrupt["milestones"]["01"]["score"] == 0 and "not a readable zip file" in corrupt["error"]


def test_outputs_are_complete_and_agree(graded: ClassRun) -> None:
    records = graded.records()
    board = json.loads((graded.out / "leaderboard.json").read_text())
    by_name = {row["learner"]: row for row in board["rows"]}
    assert set(by_name) == set(records)
    for name, record in records.items():
        assert by_name[name]["total"] == record["milestones"]["01"]["score"]
    ranks = [row["rank"] for row in board["rows"]]
    assert ranks[0] == 1 and ranks == sorted(ranks)
    with open(graded.out / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["student_id"]: float(r["score"]) for r in rows} == {n: r["milestones"]["01"]["score"]
                                                                  for n, r in records.items()}
    md = (graded.out / "leaderboard.md").read_text()
    assert all(f"| {name} |" in md for name in records)
    summary = graded.runs[0].stdout
    for name in ("infinite-loop", "allocates-30gb", "corrupt", "fake-results"):
        assert name in summary.split("problem(s):")[-1], f"{name} missing from the end-of-run summary"


def test_nbgrader_reads_the_gradebook_back(graded: ClassRun, tmp_path: Path) -> None:
    """`nbgrader export` (nbgrader's own command) turns the gradebook into its CSV; the scores match."""
    exported = tmp_path / "export.csv"
    nbgrader = Path(sys.executable).parent / "nbgrader"
    env = {**os.environ, "PATH": f"{nbgrader.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(nbgrader), "export", f"--db=sqlite:///{graded.out / 'gradebook.db'}",
                           f"--to={exported}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(exported, newline="") as f:
        rows = list(csv.DictReader(f))
    records = graded.records()
    assert {(r["assignment"], r["student_id"]): float(r["score"]) for r in rows} == {
        ("milestone01", n): r["milestones"]["01"]["score"] for n, r in records.items()}
    assert all(float(r["max_score"]) == 100 for r in rows)
