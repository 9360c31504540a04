"""The course's pytest plugin (registered through the `pytest11` entry point).

- registers the markers: `points(n)`, `checks(name)`, one task marker per step from course.toml, `slow`, `benchmark`;
- `--impl-root ROOT` (or LLMFS_ROOT) chooses the implementation the tests load (see llmfs.loader);
- turns a stub's NotImplementedError, and a learner file that cannot be imported, into one line that
  names the file and function to fix, and lists every stub still to write at the end, by task (llmfs.todo);
- `--llmfs-results FILE` streams one JSON line per event (collected tests with their points, each
  start, each result, leaderboard metrics) so `llmfs grade` keeps every finished result even when the
  process is killed for time or memory halfway through. Under `llmfs grade` each line is signed and the
  test machinery is watched for tampering (see llmfs.guard);
- `--cpu-timeout S` fails a test that uses more than S CPU-seconds (every thread of the process, its setup, call
  and teardown together): a limit that other work on the machine cannot move, unlike a wall clock. The result
  event carries each test's CPU time (`cpu`);
- hides the CI variables (`CI`, `BUILD_NUMBER`) from the test session: with them pytest explains a failing
  `assert got == expected` on two lists with a full `difflib` diff of their pretty-printed forms, which is
  quadratic: 240 CPU-seconds for 04's 100,000-id lists, so a learner's wrong id became a timeout on GitHub
  Classroom and in CI but a one-line message on a laptop. A grade must not depend on where it runs;
- under `llmfs grade` without a private network namespace (LLMFS_NETWORK=audit, see llmfs.jail), an audit
  hook refuses connections to addresses outside the loopback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from llmfs import guard
from llmfs.course import CourseError, find_course_root, load_course
from llmfs.jail import HIDDEN_ENV, NETWORK_ENV
from llmfs.loader import ROOT_ENV, ImplementationError

STUB_PREFIX = "Milestone "
MAX_MESSAGE = 4000
CI_VARIABLES = ("CI", "BUILD_NUMBER")  # the variables pytest's running_on_ci() reads (_pytest/compat.py)


class _State:
    """Per-session bookkeeping: the results stream and what the learner still has to write."""

    def __init__(self, results: str | None, key: bytes | None = None) -> None:
        self.stream = open(results, "a", buffering=1, encoding="utf-8") if results else None  # noqa: SIM115
        self.signer = guard.Signer(key) if key else None
        self.watch: guard.Watch | None = None
        self.tampered: list[str] = []
        self.phases: dict[str, list[pytest.TestReport]] = {}
        self.todo: dict[str, None] = {}  # ordered set of stub messages
        self.stub_folders: dict[Path, None] = {}  # ordered set of ROOT/NN folders whose stubs were hit
        self.stub_messages: dict[str, Any] = {}  # milestone -> its llmfs.untouched.StubMessages
        self.broken: dict[str, None] = {}  # ordered set of import errors
        self.cpu_limit: float | None = None  # --cpu-timeout
        self.cpu_used: dict[str, float] = {}  # nodeid -> CPU-seconds its phases used so far

    def emit(self, event: str, **fields: Any) -> None:
        if self.stream:
            record = {"event": event, **fields}
            self.stream.write((self.signer.sign(record) if self.signer else json.dumps(record)) + "\n")


# Hooks such as pytest_runtest_logreport get no config, so the session's state lives here.
_state = _State(None)


def _points(item: pytest.Item) -> float:
    """The test's `points(n)`; a public test (no marker) counts one point when a learner grades their own repo."""
    marker = item.get_closest_marker("points")
    return float(marker.args[0]) if marker and marker.args else 1.0


def _task(item: pytest.Item) -> str | None:
    tasks = [m.name for m in item.iter_markers() if m.name.startswith("task")]
    return tasks[0] if tasks else None


def _checks(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("checks")
    return str(marker.args[0]) if marker and marker.args else None


def _title(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    first = doc.strip().splitlines()[0] if doc and doc.strip() else item.name
    if isinstance(item, pytest.Function) and hasattr(item, "callspec"):
        first += f" [{item.callspec.id}]"
    return first


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # `pytest milestones/03 -k encode_word` selects the tests that check that function
        if name := _checks(item):
            item.extra_keyword_matches.update({name, name.rsplit(".", 1)[-1]})
    _state.emit("collected", tests=[
        {"nodeid": it.nodeid, "name": _title(it), "points": _points(it), "task": _task(it), "checks": _checks(it)}
        for it in items
    ])


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmfs", "Build an LLM from Scratch")
    group.addoption("--impl-root", default=None, metavar="ROOT",
                    help="implementation root to test: solutions/, milestones/ or a submission (env LLMFS_ROOT)")
    group.addoption("--cpu-timeout", type=float, default=None, metavar="S",
                    help="fail a test that uses more than S CPU-seconds (all threads; setup, call and teardown)")
    group.addoption("--llmfs-results", default=None, metavar="FILE",
                    help="append one JSON line per test event to FILE (used by `llmfs grade`)")
    group.addoption("--llmfs-not-started", action="store_true",
                    help="the files under test are untouched stubs: fail each test on its stub before its fixtures")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): points this test is worth when graded")
    config.addinivalue_line("markers", "checks(name): the one learner function a public test checks, e.g. "
                            "checks(\"Tokenizer.encode_word\")")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "benchmark: compares the speed of two implementations in one run")
    try:
        tasks = load_course(find_course_root(config.rootpath)).task_markers()
    except CourseError:
        tasks = {}
    for task, title in tasks.items():
        config.addinivalue_line("markers", f"{task}: {title}")
    for name in CI_VARIABLES:  # the same explanations, and the same CPU time, on every machine (see above)
        os.environ.pop(name, None)
    if root := config.getoption("impl_root"):
        os.environ[ROOT_ENV] = str(Path(config.invocation_params.dir, root).resolve())
    global _state
    _state = _State(config.getoption("llmfs_results"), guard.read_key_from_parent())
    if limit := config.getoption("cpu_timeout"):
        if limit <= 0:
            raise pytest.UsageError(f"--cpu-timeout must be positive, got {limit:g}")
        _state.cpu_limit = limit
        signal.signal(signal.SIGPROF, _out_of_cpu_time)
    if os.environ.get(NETWORK_ENV) == "audit":
        sys.addaudithook(_refuse_remote_connections)
    if os.environ.get(NETWORK_ENV):
        _state.emit("sandbox", network=os.environ[NETWORK_ENV], hidden=os.environ.get(HIDDEN_ENV) == "1")


def _out_of_cpu_time(signum: int, frame: object) -> None:
    """SIGPROF from the CPU-time timer armed around each test phase. It fires again every CPU-second, so code that
    swallows the failure (`except BaseException`) cannot run on."""
    signal.setitimer(signal.ITIMER_PROF, 1.0)
    pytest.fail(f"Timeout: this test used more than {_state.cpu_limit:g} CPU-seconds, the limit for one test "
                f"(course.toml test_timeout_s); look for a loop that does not end or work done far too often",
                pytrace=False)


def _metered(item: pytest.Item):
    """Hook wrapper body: count the phase's CPU time, and arm the timer with what is left of the test's limit."""
    used = _state.cpu_used.setdefault(item.nodeid, 0.0)
    if _state.cpu_limit:
        signal.setitimer(signal.ITIMER_PROF, max(_state.cpu_limit - used, 0.001))
    start = time.process_time()
    try:
        yield
    finally:
        if _state.cpu_limit:
            signal.setitimer(signal.ITIMER_PROF, 0)
        _state.cpu_used[item.nodeid] = used + time.process_time() - start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Metered; under --llmfs-not-started (`llmfs grade` on untouched stubs) each test fails at once on the stub
    of the function it needs, before any fixture runs: no model built, no torchrun started."""
    if item.config.getoption("llmfs_not_started"):
        raise NotImplementedError(_stub_for(item))
    yield from _metered(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    yield from _metered(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield from _metered(item)


def _refuse_remote_connections(event: str, args: tuple) -> None:
    """Audit hook (the no-namespace fallback): connecting or sending to a non-loopback address fails."""
    if event not in ("socket.connect", "socket.sendto"):  # connect_ex raises socket.connect too
        return
    address = args[1]
    host = address[0] if isinstance(address, tuple) and address else None
    if not isinstance(host, str):
        return  # a Unix socket: local by construction
    try:
        local = host == "localhost" or ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        local = False
    if not local:
        raise PermissionError(f"network access is disabled while grading (tried to reach {host})")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Hidden tests are imported, learner code is not (fixtures load it): record what must not change."""
    if not _state.signer:
        return
    course = load_course()
    tests_dir = str(course.hidden_tests)
    modules = [m for m in list(sys.modules.values())
               if str(getattr(m, "__file__", None) or "").startswith(tests_dir)]
    items = {item.nodeid: item for item in session.items}
    _state.watch = guard.Watch(items, modules, course, lambda: session.config.pluginmanager.get_plugins())


def _tampering() -> list[str]:
    if _state.watch and not _state.tampered and (changes := _state.watch.changes()):
        _state.tampered = changes
        _state.emit("tamper", changes=changes[:20])
    return _state.tampered


def _stub_for(item: pytest.Item) -> str:
    from llmfs.loader import implementation_root
    from llmfs.untouched import StubMessages

    course = load_course(find_course_root(item.config.rootpath))
    milestone = next((m for m in course.milestones if m.id in Path(str(item.path)).parts), course.milestones[0])
    if milestone.id not in _state.stub_messages:  # read the learner's files once per milestone, not per test
        _state.stub_messages[milestone.id] = StubMessages(implementation_root(), milestone)
    return _state.stub_messages[milestone.id].of(_task(item), _checks(item))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _state.emit("collect_error", nodeid=report.nodeid, message=str(report.longrepr)[-MAX_MESSAGE:])


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _state.emit("start", nodeid=nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    report.llmfs_kind = None  # type: ignore[attr-defined]
    excinfo = call.excinfo
    if excinfo is None or not report.failed:
        return
    message = str(excinfo.value)
    if excinfo.errisinstance(NotImplementedError) and message.startswith(STUB_PREFIX):
        report.llmfs_kind = "stub"
        _state.todo[message] = None
        _state.stub_folders[Path(str(excinfo.traceback[-1].path)).parent] = None
        report.longrepr = f"NotImplementedError: {message}"
    elif excinfo.errisinstance(ImplementationError):
        report.llmfs_kind = "import"
        _state.broken[message] = None
        report.longrepr = f"ImplementationError: {message}"
    elif excinfo.typename == "Failed" and message.startswith("Timeout"):
        report.llmfs_kind = "timeout"
    elif excinfo.errisinstance(MemoryError) or "can't allocate memory" in message:
        report.llmfs_kind = "memory"


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text[:MAX_MESSAGE]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    phases = _state.phases.setdefault(report.nodeid, [])
    phases.append(report)
    if report.when != "teardown":
        return
    failed = [r for r in phases if r.failed]
    skipped = any(r.skipped for r in phases)
    outcome = "failed" if failed else "skipped" if skipped else "passed"
    first = failed[0] if failed else None
    kind, message = (getattr(first, "llmfs_kind", None), _message(first)) if first else (None, "")
    if changes := _tampering():
        outcome, kind = "failed", "tampered"
        message = f"the grading machinery was modified while testing: {', '.join(changes[:3])}"
    _state.emit("result", nodeid=report.nodeid, outcome=outcome, duration=sum(r.duration for r in phases),
                cpu=round(_state.cpu_used.pop(report.nodeid, 0.0), 3), kind=kind, message=message)
    del _state.phases[report.nodeid]


@pytest.fixture
def leaderboard(request: pytest.FixtureRequest):
    """`leaderboard(name, value, order="asc")` records a figure for the leaderboards (Gradescope's
    `leaderboard[]`); `order` is "asc" when lower is better."""
    def record(name: str, value: float, order: str = "asc") -> None:
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        _state.emit("metric", nodeid=request.node.nodeid, name=name, value=float(value), order=order)
        request.node.user_properties.append((name, float(value)))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _state.broken:
        terminalreporter.section("cannot import the code under test", sep="=", red=True, bold=True)
        for message in _state.broken:
            terminalreporter.line(f"  {message}")
    if _state.todo:
        terminalreporter.section("still to write", sep="=", yellow=True, bold=True)
        terminalreporter.line("  every stub left, in the order to write them (the first is next):")
        for line in _still_to_write(config) or list(_state.todo):
            terminalreporter.line(f"  {line}")


def _still_to_write(config: pytest.Config) -> list[str]:
    """Every stub left in the learner's files of the milestones whose stubs the tests hit, by task in order."""
    from llmfs import todo

    try:
        course = load_course(find_course_root(config.rootpath))
    except CourseError:
        return []
    ids = {m.id: m for m in course.milestones}
    return [line for folder in _state.stub_folders if folder.name in ids
            for line in todo.describe(folder.parent, ids[folder.name])]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _state.stream:
        _state.stream.close()
