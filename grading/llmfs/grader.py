"""Grade an implementation root: each milestone's hidden tests in their own limited subprocess.

For every milestone, `pytest tests/NN --impl-root ROOT` runs in a child process that has
- a wall-clock limit (course.toml `time_limit_s`); the child's whole process group is killed past it,
- an address-space cap (`memory_mb`), so a 30 GB allocation fails inside the child, not the machine,
- a per-test limit (`test_timeout_s`) in CPU-seconds of the grading process (llmfs.pytest_plugin's --cpu-timeout),
  so one infinite loop costs one test and other work on the machine cannot push a correct test over it; a
  wall-clock limit of WALL_PER_CPU_S times as many seconds (pytest-timeout) catches a test that waits forever.
The child streams one JSON line per event (see llmfs.pytest_plugin); whatever it finished before being
killed still counts. Nothing a learner's code does can stop the grader from reporting every milestone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from llmfs import data, guard
from llmfs.course import SOLUTION_BEGIN, Course, Milestone
from llmfs.loader import DEPS_ROOT_ENV, ROOT_ENV
from llmfs.untouched import StubMessages, listed_tests, untouched

NOT_STARTED, PARTIAL, COMPLETE, ERROR, TIMEOUT = "not started", "partial", "complete", "error", "timeout"
TAMPERED = "tampered"  # the results channel or the test machinery was interfered with (see llmfs.guard)
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
    cpu: float = 0.0  # CPU-seconds the test used (its setup, call and teardown), what test_timeout_s limits

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
    network: str = ""  # "isolated" (own network namespace) or "audit" (the fallback), see llmfs.jail
    hidden: bool = False  # whether the Walls' folders were hidden from the code under test
    output_bytes: int = 0  # everything the child printed (only the last LOG_TAIL bytes are kept)
    public: bool = False  # graded on the public tests (a learner's repository has no hidden tests)

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


class _EventStream:
    """The child's results file, read as it grows: each complete line is parsed once. A line still being
    written (or cut off when the child was killed) is left for the next read, or dropped at the end.
    Lines must be signed with `key` (see llmfs.guard); any other line is counted in `forged` and ignored."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self.key = key
        self.offset = 0
        self.events: list[dict] = []
        self.forged = 0
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
                event = guard.verify(self.key, json.loads(line))
            except (json.JSONDecodeError, AttributeError):
                event = None
            if event is None or event.get("seq") != len(self.events) + 1:
                self.forged += 1  # written by someone without the key, or replayed out of order
                continue
            self.events.append(event)
            if event["event"] == "collected":
                self.collected = len(event["tests"])
            elif event["event"] == "result":
                self.finished += 1
        return self.events


WALL_PER_CPU_S = 3  # a test's wall-clock backstop, per CPU-second of its limit (a busy machine slows it 1.5-2x)
PLUGINS = ("llmfs.pytest_plugin", "pytest_timeout", "pytest_benchmark.plugin", "_hypothesis_pytestplugin")
JOB_ENV = "LLMFS_GRADE_JOB"
# -P: the current folder is not put on sys.path (only for pytest itself: a learner's script run by a test, such
# as `python milestones/02/train.py`, still imports its neighbours).
SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ()
# Variables that would let a submission run code before the tests or change pytest's configuration.
SCRUBBED_ENV = ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONINSPECT", "PYTHONBREAKPOINT",
                "PYTHONEXECUTABLE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_THEME", "LD_PRELOAD",
                "LD_LIBRARY_PATH", "LLMFS_DEPS_ROOT", guard.KEY_FD_ENV)


@dataclass(frozen=True)
class Walls:
    """Folders the code under test must not see (`hide`), the folders inside them it needs (`keep`), folders it
    may read but not change (`read_only`), and where the results file goes (`scratch`: inside a kept folder, so
    other submissions cannot reach it)."""

    hide: tuple[Path, ...] = ()
    keep: tuple[Path, ...] = ()
    read_only: tuple[Path, ...] = ()
    scratch: Path | None = None
    threads: int | None = None  # CPU threads per grading process (OMP/MKL/torch), so parallel jobs share cores


def _pytest_command(course: Course, tests: Path, root: Path, results: Path, limits: Limits,
                    walls: Walls, not_started: bool = False) -> list[str]:
    cpu_s = int(limits.time_limit_s * (os.cpu_count() or 1) + 30)  # all cores busy for the whole wall limit
    plugins = [arg for name in PLUGINS for arg in ("-p", name)]
    hiding = [arg for flag, paths in (("--hide", walls.hide), ("--keep", walls.keep), ("--read-only", walls.read_only))
              for p in paths for arg in (flag, str(p))]
    return [
        sys.executable, "-m", "llmfs.jail", "--memory-mb", str(limits.memory_mb), "--cpu-s", str(cpu_s), *hiding,
        "--",
        sys.executable, *SAFE_PATH, "-m", "pytest", str(tests), *plugins,
        "--impl-root", str(root), "--llmfs-results", str(results),
        "--cpu-timeout", str(limits.test_timeout_s), "--timeout", str(WALL_PER_CPU_S * limits.test_timeout_s),
        "--rootdir", str(course.root), "-c", str(course.root / "pyproject.toml"),
        "--noconftest", "--continue-on-collection-errors", "-p", "no:cacheprovider",
        "-q", "--no-header", "-rN", "--color=no", "--capture=no", *(["--llmfs-not-started"] if not_started else []),
    ]


def _child_env(course: Course, root: Path, job: str, key_fd: int, threads: int | None = None) -> dict[str, str]:
    """The grading process's environment: nothing that runs code before the tests (no PYTHONPATH from the
    caller, no user site, no auto-loaded pytest plugins)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update({ROOT_ENV: str(root), "LLMFS_COURSE": str(course.root), "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1",
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", JOB_ENV: job, guard.KEY_FD_ENV: str(key_fd)})
    if threads:
        env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    if course.package_path:  # a private copy of the grading code (llmfs grade-all) comes before the installed one
        env["PYTHONPATH"] = str(course.package_path)
    # Later milestones use earlier ones through llmfs.loader.dependency(): grade them against the
    # reference, so a learner's bug in 05 costs points in 05 only.
    if course.solutions.is_dir():
        env[DEPS_ROOT_ENV] = str(course.solutions)
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


class _Tail(threading.Thread):
    """Drains the child's output pipe, keeping only the last `size` bytes: 100 MB of prints cost nothing."""

    def __init__(self, fd: int, size: int = LOG_TAIL) -> None:
        super().__init__(daemon=True)
        self.fd, self.size = fd, size
        self.data = bytearray()
        self.total = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            readable, _, _ = select.select([self.fd], [], [], 0.2)
            if not readable:
                if self.stop.is_set():
                    return
                continue
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return
            self.total += len(chunk)
            self.data += chunk
            if len(self.data) > 2 * self.size:
                del self.data[: len(self.data) - self.size]

    def text(self) -> str:
        tail = bytes(self.data[-self.size:]).decode("utf-8", errors="replace")
        return (f"[... {self.total - self.size:,} earlier bytes of output dropped ...]\n" + tail
                if self.total > self.size else tail)


def grade_milestone(course: Course, m: Milestone, root: Path, limits: Limits | None = None,
                    on_progress: Callable[[int, int | None], None] | None = None,
                    walls: Walls = Walls(), not_started: bool = False) -> MilestoneResult:
    """Run milestone `m`'s hidden tests against `root` and score them; `on_progress(done, total)` is
    called about twice a second while they run. `not_started` (untouched stubs) fails every test on its stub
    before its fixtures run (no torchrun, no model built)."""
    limits = limits or Limits.of(m)
    tests = tests_folder(course, m)
    if not tests.is_dir():
        raise GraderError(f"no hidden tests for milestone {m.id} in {course.hidden_tests / m.id}")
    key, job = secrets.token_bytes(32), secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix=f"llmfs-grade-{m.id}-", dir=walls.scratch) as tmp:
        results = Path(tmp) / f"{secrets.token_hex(8)}.jsonl"
        stream = _EventStream(results, key)
        key_read, key_write = os.pipe()
        out_read, out_write = os.pipe()
        os.write(key_write, key.hex().encode())
        os.close(key_write)
        started = time.monotonic()
        tail = _Tail(out_read)
        tail.start()
        try:
            child = subprocess.Popen(
                _pytest_command(course, tests, root, results, limits, walls, not_started), cwd=course.root,
                env=_child_env(course, root, job, key_read, walls.threads), stdin=subprocess.DEVNULL, stdout=out_write,
                stderr=out_write, start_new_session=True, pass_fds=(key_read,),
            )
        finally:
            os.close(key_read)
            os.close(out_write)
        try:
            timed_out = _wait(child, limits.time_limit_s, stream, on_progress)
        finally:
            _kill_group(child)
            _kill_job(job)
            tail.stop.set()
            tail.join(timeout=5)
            os.close(out_read)
        seconds = time.monotonic() - started
        log_tail = tail.text()
        if child.returncode == 4 and not timed_out:  # pytest's usage error: our command line is wrong
            raise GraderError(f"pytest refused the grader's command line:\n{log_tail}")
        result = _score(m, stream, child.returncode, timed_out, limits, seconds, log_tail)
        result.output_bytes = tail.total
        result.public = tests != course.hidden_tests / m.id
        return result


def tests_folder(course: Course, m: Milestone) -> Path:
    """tests/NN, or in a learner's repository (released without hidden tests) the public milestones/NN."""
    hidden = course.hidden_tests / m.id
    return hidden if hidden.is_dir() or course.solutions.is_dir() else course.milestones_dir / m.id


def _kill_group(child: subprocess.Popen) -> None:
    """Kill the child and everything it started (tests may spawn processes), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _kill_job(job: str) -> None:
    """Kill every process still carrying this grading job's token in its environment: children that left the
    process group (setsid, double fork) to outlive the grader."""
    marker = f"{JOB_ENV}={job}".encode()
    for proc in psutil.process_iter():
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    proc.kill()
        except (OSError, psutil.Error):
            continue


def _score(m: Milestone, stream: _EventStream, returncode: int, timed_out: bool, limits: Limits,
           seconds: float, log: str) -> MilestoneResult:
    events = stream.read()
    result = MilestoneResult(m, status=ERROR, seconds=seconds, log=log)
    sandbox = next((e for e in events if e["event"] == "sandbox"), {})
    result.network, result.hidden = sandbox.get("network", ""), sandbox.get("hidden", False)
    tampered = next((e["changes"] for e in events if e["event"] == "tamper"), [])
    if stream.forged:
        tampered = [f"{stream.forged} line(s) in the results file were not written by the grader", *tampered]
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
            t.cpu = e.get("cpu", 0.0)
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
    if tampered:
        result.status, result.message = TAMPERED, "tampering detected: " + "; ".join(tampered[:5])
    return result


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)


def _status(result: MilestoneResult, timed_out: bool, unfinished: list[TestResult], returncode: int,
            collect_errors: list[dict]) -> tuple[str, str]:
    order = {task: i for i, task in enumerate(result.milestone.tasks)}  # "write X next" follows the tasks
    failed = sorted((t for t in result.tests if t.outcome == "failed"), key=lambda t: order.get(t.task, len(order)))
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


def fetch_datasets(milestones: list[Milestone], built: bool = False) -> None:
    """Fetch every dataset the milestones declare, here in the parent and before any test runs: a missing
    dataset is the grading machine's problem, so it must not cost a learner points or test time. `built=False`
    fetches the downloaded ones, `built=True` the built ones (minutes of training: milestone 08's pair)."""
    for name in dict.fromkeys(d for m in milestones for d in m.datasets):
        try:
            if bool(data.dataset(name).build) != built:
                continue
            data.fetch(name)
        except data.DataError as e:
            raise GraderError(f"cannot grade without dataset {name!r}: {e}") from e


def _without_own_solution(walls: Walls, course: Course, m: Milestone) -> Walls:
    """When anything is hidden at all (`llmfs grade-all`), also hide the reference files of the milestone being
    graded (those with solution regions): its tests need earlier milestones' references and its read-only
    modules, never its own solutions, and a submission must not read and exec them."""
    own = course.solutions / m.id
    if not walls.hide or not own.is_dir():
        return walls
    solved = [p for p in sorted(own.glob("*.py")) if SOLUTION_BEGIN in p.read_text(encoding="utf-8")]
    return dataclasses.replace(walls, hide=(*walls.hide, *solved))


def grade(course: Course, root: Path, milestone_ids: list[str] | None = None,
          limits: dict[str, float] | None = None,
          progress: Callable[[Milestone], Callable[[int, int | None], None] | None] | None = None,
          walls: Walls = Walls(), fetch: bool = True) -> list[MilestoneResult]:
    """Grade `root` milestone by milestone. `progress(milestone)` is called before each one and may return
    an `on_progress(done, total)` callback for that milestone's tests."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise GraderError(f"implementation root {root} does not exist")
    chosen = [course.milestone(i) for i in milestone_ids] if milestone_ids else list(course.milestones)
    if fetch:  # everything that downloads, before any test; built datasets just before their milestone
        fetch_datasets(chosen)
    results = []
    for m in chosen:
        fresh = untouched(course, m, root)
        if fetch and not fresh:  # untouched stubs fail without it (08's pair: minutes)
            fetch_datasets([m], built=True)
        on_progress = progress(m) if progress else None
        known = not_started(course, m, root) if fresh else None  # a release's untouched stubs: no pytest at all
        results.append(known or grade_milestone(course, m, root, Limits.of(m, **(limits or {})), on_progress,
                                                _without_own_solution(walls, course, m), not_started=fresh))
    return results


def not_started(course: Course, m: Milestone, root: Path) -> MilestoneResult | None:
    """The result of untouched stubs in a learner's release, from the public tests it lists (see llmfs.untouched):
    every test fails on the stub of the function it checks. None where the tests must run to be known."""
    started = time.monotonic()
    listed = listed_tests(course, m)
    if listed is None:
        return None
    stubs = StubMessages(root, m)
    tests = [TestResult(str(t.get("nodeid", "")), str(t.get("name", "")), t.get("task"), float(t.get("points", 1)),
                        "failed", "stub", stubs.of(t.get("task"), t.get("checks")))
             for t in listed]
    message = stubs.of(None, stubs.first)  # the function to write first, in course order (not the first test file's)
    return MilestoneResult(m, NOT_STARTED, tests, time.monotonic() - started, message, public=True)
