"""Grade an implementation root: each milestone's hidden tests in their own limited subprocess.

For every milestone, `pytest tests/NN --impl-root ROOT` runs in a child process that has
- a wall-clock limit (course.toml `time_limit_s`); the child's whole process group is killed past it,
- an address-space cap (`memory_mb`), so a 30 GB allocation fails inside the child, not the machine,
- a per-test limit (`test_timeout_s`, through pytest-timeout), so one infinite loop costs one test.
The child streams one JSON line per event (see llmfs.pytest_plugin); whatever it finished before being
killed still counts. Nothing a learner's code does can stop the grader from reporting every milestone.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmfs import data
from llmfs.course import Course, Milestone
from llmfs.loader import DEPS_ROOT_ENV, ROOT_ENV

NOT_STARTED, PARTIAL, COMPLETE, ERROR, TIMEOUT = "not started", "partial", "complete", "error", "timeout"
LOG_TAIL = 8000


class GraderError(Exception):
    """The grader itself cannot run (bad arguments, missing tests): not the learner's fault."""


@dataclass
class TestResult:
    nodeid: str
    name: str
    task: str | None
    max_score: float
    outcome: str = "not run"  # passed / failed / skipped / not run
    kind: str | None = None  # stub / import / timeout / memory / None
    message: str = ""
    duration: float = 0.0

    @property
    def score(self) -> float:
        return self.max_score if self.outcome == "passed" else 0.0


@dataclass
class MilestoneResult:
    milestone: Milestone
    status: str
    tests: list[TestResult] = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""  # the one line a learner should read first
    metrics: list[dict] = field(default_factory=list)
    log: str = ""  # the tail of pytest's own output

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tests)

    @property
    def max_score(self) -> float:
        return sum(t.max_score for t in self.tests) if self.tests else self.milestone.points

    @property
    def passed(self) -> int:
        return sum(t.outcome == "passed" for t in self.tests)


@dataclass(frozen=True)
class Limits:
    time_limit_s: float
    test_timeout_s: float
    memory_mb: int

    @classmethod
    def of(cls, m: Milestone, time_limit_s: float | None = None, test_timeout_s: float | None = None,
           memory_mb: int | None = None) -> Limits:
        return cls(time_limit_s or m.time_limit_s, test_timeout_s or m.test_timeout_s, memory_mb or m.memory_mb)


def _limit_child(memory_mb: int):
    def preexec() -> None:  # runs in the child between fork and exec
        cap = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return preexec


class _EventStream:
    """The child's results file, read as it grows: each complete line is parsed once. A line still being
    written (or cut off when the child was killed) is left for the next read, or dropped at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[dict] = []
        self.finished = 0  # tests with a result
        self.collected: int | None = None  # tests collected, once known

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.events
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        for line in chunk[:complete].splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # not ours: the code under test shares the child process
                continue
            self.events.append(event)
            if event["event"] == "collected":
                self.collected = len(event["tests"])
            elif event["event"] == "result":
                self.finished += 1
        return self.events


def _pytest_command(course: Course, m: Milestone, root: Path, results: Path, limits: Limits) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(course.hidden_tests / m.id),
        "--impl-root", str(root), "--llmfs-results", str(results),
        "--timeout", str(limits.test_timeout_s),
        "--rootdir", str(course.root), "-c", str(course.root / "pyproject.toml"),
        "--noconftest", "--continue-on-collection-errors", "-p", "no:cacheprovider",
        "-q", "--no-header", "-rN", "--color=no",
    ]


def _child_env(course: Course, root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({ROOT_ENV: str(root), "LLMFS_COURSE": str(course.root), "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1"})
    # Later milestones use earlier ones through llmfs.loader.dependency(): grade them against the
    # reference, so a learner's bug in 05 costs points in 05 only.
    if course.solutions.is_dir():
        env[DEPS_ROOT_ENV] = str(course.solutions)
    else:
        env.pop(DEPS_ROOT_ENV, None)
    return env


def _wait(child: subprocess.Popen, limit_s: float, stream: _EventStream, on_progress) -> bool:
    """Wait for `child` at most `limit_s` seconds, reporting progress; True when the limit was hit."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            child.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            return False
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                return True
            if on_progress:
                stream.read()
                on_progress(stream.finished, stream.collected)


def grade_milestone(course: Course, m: Milestone, root: Path, limits: Limits | None = None,
                    on_progress: Callable[[int, int | None], None] | None = None) -> MilestoneResult:
    """Run milestone `m`'s hidden tests against `root` and score them; `on_progress(done, total)` is
    called about twice a second while they run."""
    limits = limits or Limits.of(m)
    if not (course.hidden_tests / m.id).is_dir():
        raise GraderError(f"no hidden tests for milestone {m.id} in {course.hidden_tests / m.id}")
    with tempfile.TemporaryDirectory(prefix=f"llmfs-grade-{m.id}-") as tmp:
        results, log_path = Path(tmp) / "results.jsonl", Path(tmp) / "pytest.log"
        stream = _EventStream(results)
        started = time.monotonic()
        with open(log_path, "wb") as log:
            child = subprocess.Popen(
                _pytest_command(course, m, root, results, limits), cwd=course.root, env=_child_env(course, root),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_limit_child(limits.memory_mb),
            )
            try:
                timed_out = _wait(child, limits.time_limit_s, stream, on_progress)
            finally:
                _kill_group(child)
        seconds = time.monotonic() - started
        log_tail = log_path.read_bytes()[-LOG_TAIL:].decode("utf-8", errors="replace")
        if child.returncode == 4 and not timed_out:  # pytest's usage error: our command line is wrong
            raise GraderError(f"pytest refused the grader's command line:\n{log_tail}")
        return _score(m, stream.read(), child.returncode, timed_out, limits, seconds, log_tail)


def _kill_group(child: subprocess.Popen) -> None:
    """Kill the child and everything it started (tests may spawn processes), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _score(m: Milestone, events: list[dict], returncode: int, timed_out: bool, limits: Limits,
           seconds: float, log: str) -> MilestoneResult:
    result = MilestoneResult(m, status=ERROR, seconds=seconds, log=log)
    collected = next((e["tests"] for e in events if e["event"] == "collected"), None)
    if collected is None:
        result.message = "the hidden tests could not be collected:\n" + log[-2000:]
        return result
    tests = {t["nodeid"]: TestResult(t["nodeid"], t["name"], t.get("task"), t["points"]) for t in collected}
    result.tests = list(tests.values())
    last_started = None
    for e in events:
        if e["event"] == "start":
            last_started = e["nodeid"]
        elif e["event"] == "result" and e["nodeid"] in tests:
            t = tests[e["nodeid"]]
            t.outcome, t.kind, t.message, t.duration = e["outcome"], e["kind"], e["message"], e["duration"]
        elif e["event"] == "metric":
            result.metrics.append({k: e[k] for k in ("name", "value", "order")})
    unfinished = [t for t in result.tests if t.outcome == "not run"]
    if timed_out:
        why = f"not run: milestone {m.id} hit its time limit of {limits.time_limit_s:g} s"
    elif returncode < 0:
        why = f"not run: the test process was killed by signal {_signal_name(-returncode)}"
    else:
        why = f"not run: the test process exited with code {returncode} before reaching it"
    for t in unfinished:
        t.message = why
    if last_started in tests and tests[last_started].outcome == "not run":
        tests[last_started].message = why.replace("not run", "interrupted while running this test")
    broken = [e for e in events if e["event"] == "collect_error"]
    result.status, result.message = _status(result, timed_out, unfinished, returncode, broken)
    return result


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)


def _status(result: MilestoneResult, timed_out: bool, unfinished: list[TestResult], returncode: int,
            collect_errors: list[dict]) -> tuple[str, str]:
    failed = [t for t in result.tests if t.outcome == "failed"]
    if collect_errors:  # the hidden tests' fault, not the learner's; the tests that did run still count
        first = collect_errors[0]
        return ERROR, (f"hidden test file {first['nodeid']} could not be collected (tell your instructor):\n"
                       + first["message"][-1500:])
    if timed_out:
        return TIMEOUT, next((t.message for t in result.tests if t.message.startswith("interrupted")),
                             unfinished[0].message if unfinished else "time limit reached")
    if imports := [t for t in failed if t.kind == "import"]:
        return ERROR, imports[0].message
    if unfinished:
        crashed = next((t for t in unfinished if t.message.startswith("interrupted")), unfinished[0])
        return ERROR, f"{crashed.name}: {crashed.message}"
    if returncode not in (0, 1):
        return ERROR, f"pytest exited with code {returncode}"
    # A resource fault inside one function costs the tests that call it; the status says it happened.
    if slow := [t for t in failed if t.kind == "timeout"]:
        return TIMEOUT, f"{len(slow)} test(s) hit the per-test time limit, first: {slow[0].name}"
    if hungry := [t for t in failed if t.kind == "memory"]:
        return ERROR, (f"{len(hungry)} test(s) ran out of memory (the cap is {result.milestone.memory_mb} MB), "
                       f"first: {hungry[0].name}")
    if not failed:
        return COMPLETE, ""
    if result.passed == 0 and all(t.kind == "stub" for t in failed):
        return NOT_STARTED, failed[0].message.removeprefix("NotImplementedError: ")
    first = failed[0]
    return PARTIAL, f"{first.name}: {first.message.splitlines()[0] if first.message else 'failed'}"


def fetch_datasets(milestones: list[Milestone]) -> None:
    """Fetch every dataset the milestones declare, here in the parent and before any test runs: a missing
    dataset is the grading machine's problem, so it must not cost a learner points or test time."""
    for name in dict.fromkeys(d for m in milestones for d in m.datasets):
        try:
            data.fetch(name)
        except data.DataError as e:
            raise GraderError(f"cannot grade without dataset {name!r}: {e}") from e


def grade(course: Course, root: Path, milestone_ids: list[str] | None = None,
          limits: dict[str, float] | None = None,
          progress: Callable[[Milestone], Callable[[int, int | None], None] | None] | None = None,
          ) -> list[MilestoneResult]:
    """Grade `root` milestone by milestone. `progress(milestone)` is called before each one and may return
    an `on_progress(done, total)` callback for that milestone's tests."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise GraderError(f"implementation root {root} does not exist")
    chosen = [course.milestone(i) for i in milestone_ids] if milestone_ids else list(course.milestones)
    fetch_datasets(chosen)
    results = []
    for m in chosen:
        on_progress = progress(m) if progress else None
        results.append(grade_milestone(course, m, root, Limits.of(m, **(limits or {})), on_progress))
    return results
