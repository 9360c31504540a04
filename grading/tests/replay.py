"""A learner writing one function at a time: after each function, exactly its own public tests turn green.

    python grading/tests/replay.py [-m 03 -m 05 ...] [--jobs N]

Every public test carries one `checks("QUALNAME")` marker: the learner function it checks. A milestone's
functions are written in course order: its tasks in manifest order, then its modules in manifest order, then
the source order of each function's first region. Step i writes functions 1..i (their regions from the
solution) and leaves the rest as stubs (`llmfs.stubs.make_stub`): function i's public tests must pass, and
function i+1's must fail on its stub. At the last function of a task, the task's hidden tests must pass too
(all but the slow and benchmark ones, which the reference grade runs) and the next task's fail on stubs, with
"still to write" naming what is left. One process imports torch once and forks a pytest per step (as
mutation.py does), so the 115 steps of the course take minutes, not an hour.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from llmfs import todo

HERE = Path(__file__).resolve().parent
COURSE_ROOT = HERE.parents[1]
SECTION = re.compile(r"^# (task\d\d_\d+):")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


@dataclass(frozen=True)
class Function:
    """A function (or method) the learner writes: one with at least one solution region in its body."""

    qualname: str  # "Tokenizer.encode_word"
    module: str
    task: str
    line: int  # of its first region


@dataclass
class Step:
    function: Function
    passed: list[str] = field(default_factory=list)  # its own public tests that passed
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def region_functions(source: str) -> list[tuple[int, str | None, str | None]]:
    """(line, task, enclosing function) of each solution region, in source order."""
    spans = todo.function_spans(ast.parse(source))
    found, task = [], None
    for number, line in enumerate(source.splitlines(), 1):
        if match := SECTION.match(line):
            task = match.group(1)
        elif line.strip() == BEGIN:
            enclosing = [s for s in spans if s[0] <= number <= s[1]]
            name = max(enclosing)[2] if enclosing else None  # the innermost: the latest start
            found.append((number, task, name))
    return found


def learner_functions(course, milestone) -> list[Function]:
    """The milestone's learner functions in the order a learner writes them."""
    first: dict[str, Function] = {}
    for module in milestone.modules:
        source = (course.solutions / milestone.id / f"{module}.py").read_text()
        for line, task, name in region_functions(source):
            if name and name not in first:
                first[name] = Function(name, module, task or "", line)
    tasks, modules = list(milestone.tasks), list(milestone.modules)
    return sorted(first.values(), key=lambda f: (tasks.index(f.task) if f.task in tasks else len(tasks),
                                                 modules.index(f.module), f.line))


def written(source: str, done: set[str], milestone: str, filename: str) -> str:
    """`source` as a learner has it after writing the functions in `done`: their regions kept, the rest stubs."""
    from llmfs.stubs import make_stub

    owners = {line: name for line, _, name in region_functions(source)}
    kept, unwrapping = [], False
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        if line.strip() == BEGIN and owners.get(number) in done:
            unwrapping = True
            continue
        if line.strip() == END and unwrapping:
            unwrapping = False
            continue
        kept.append(line)
    partial = "".join(kept)
    return make_stub(partial, milestone, filename) if BEGIN in partial else partial


def earlier_milestones(course, milestone) -> list[str]:
    """Every milestone `milestone` builds on, directly or through another (05 -> 02 -> 01)."""
    found: list[str] = []
    todo = list(milestone.builds_on)
    while todo:
        m = todo.pop()
        if m not in found:
            found.append(m)
            todo += course.milestone(m).builds_on
    return found


def learner_root(course, milestone, root: Path, source_of) -> Path:
    """A learner's folder: finished earlier milestones, and this one's modules as `source_of(module, text)`."""
    for earlier in earlier_milestones(course, milestone):
        shutil.copytree(course.solutions / earlier, root / earlier, ignore=shutil.ignore_patterns("__pycache__"))
    (root / milestone.id).mkdir(parents=True)
    for module in milestone.modules:
        text = (course.solutions / milestone.id / f"{module}.py").read_text()
        (root / milestone.id / f"{module}.py").write_text(source_of(module, text))
    return root


@dataclass(frozen=True)
class PublicTest:
    nodeid: str  # "milestones/03/test_bpe.py::test_merge_pair"
    checks: tuple[str, ...]  # the arguments of its checks markers
    tasks: tuple[str, ...]  # its task markers


def public_tests(course, milestone) -> list[PublicTest]:
    """The milestone's public test functions and their markers, read from the test files' decorators."""
    found = []
    for path in sorted((course.milestones_dir / milestone.id).glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                marks = [(ast.unparse(d.func if isinstance(d, ast.Call) else d), d) for d in node.decorator_list]
                checks = tuple(d.args[0].value for name, d in marks if name.endswith("mark.checks")
                               and isinstance(d, ast.Call) and d.args and isinstance(d.args[0], ast.Constant))
                tasks = tuple(name.rsplit(".", 1)[1] for name, _ in marks if re.search(r"mark\.task\d\d_\d+$", name))
                found.append(PublicTest(f"{path.relative_to(course.root)}::{node.name}", checks, tasks))
    return found


def public_checks(course, milestone) -> tuple[dict[str, list[str]], list[str]]:
    """Node ids of the public tests per checked function, and the problems found: a public test without exactly
    one `checks` marker, naming no learner function, or marked with another task than its function's."""
    task_of = {f.qualname: f.task for f in learner_functions(course, milestone)}
    checks: dict[str, list[str]] = {}
    problems = []
    for test in public_tests(course, milestone):
        if len(test.checks) != 1:
            problems.append(f"{test.nodeid}: {len(test.checks)} checks markers (one names the function it checks)")
        elif test.checks[0] not in task_of:
            problems.append(f"{test.nodeid}: checks({test.checks[0]!r}) names no function the learner writes")
        elif test.tasks != (task_of[test.checks[0]],):
            problems.append(f"{test.nodeid}: marked {list(test.tasks)}, but {test.checks[0]} is in "
                            f"{task_of[test.checks[0]]}")
        else:
            checks.setdefault(test.checks[0], []).append(test.nodeid)
    problems += [f"{milestone.id}: {name} has no public test of its own" for name in task_of if name not in checks]
    return checks, problems


def _outcomes(results: Path, task: str | None = None, following: str | None = None) -> dict:
    """The result event of each test function (parametrized cases folded into their function: worst wins); with
    `task`, also the hidden test functions of `task` and `following` that ran, as lists under "hidden:TASK"."""
    found: dict = {}
    if not results.exists():
        return found
    events = [json.loads(line) for line in results.read_text().splitlines()]
    for event in events:
        if event.get("event") == "result":
            key = event["nodeid"].split("[")[0]
            if key not in found or event["outcome"] != "passed":
                found[key] = event
    if task:
        task_of = {t["nodeid"].split("[")[0]: t["task"] for e in events if e["event"] == "collected"
                   for t in e["tests"] if t["nodeid"].startswith("tests/")}
        found["hidden:task"], found["hidden:next"] = task, following  # a task may have only slow hidden tests
        for t in (task, following):
            found["hidden:" + str(t)] = sorted(n for n, of in task_of.items() if of == t and n in found)
    return found


def check_step(step: Step, mine: list[str], following: list[str], outcomes: dict[str, dict], log: str) -> None:
    """Function i's tests passed, function i+1's failed on a stub; at a task's end, the same for the hidden tests
    of this task and the next (`hidden:TASK` entries in `outcomes`, see _outcomes)."""
    name = step.function.qualname
    task, following_task = outcomes.pop("hidden:task", None), outcomes.pop("hidden:next", None)
    if task:
        mine = [*mine, *outcomes.pop("hidden:" + task, [])]
        if following_task:
            following = [*following, *outcomes.pop("hidden:" + following_task, [])]
            if "still to write" not in log:
                step.problems.append(f"{name}: pytest did not end with the list of functions still to write")
    for nodeid in mine:
        event = outcomes.get(nodeid)
        if event and event["outcome"] == "passed":
            step.passed.append(nodeid)
        else:
            why = f"{event['outcome']}: {event.get('message', '')[:300]}" if event else f"no result\n{log[-1500:]}"
            step.problems.append(f"{nodeid} should pass once {name} is written ({why})")
    for nodeid in following:
        event = outcomes.get(nodeid)
        if not event or event["outcome"] != "failed" or event.get("kind") != "stub":
            got = f"{event['outcome']} ({event.get('kind')})" if event else "no result"
            step.problems.append(f"{nodeid} should fail on its stub while only {name} and earlier are written: {got}")


def replay(milestone_id: str, jobs: int = 0, progress=print) -> tuple[list[Step], list[str]]:
    """Replay a milestone one function at a time; (its steps, the problems of its public tests' markers)."""
    sys.path.insert(0, str(HERE))

    from llmfs.course import load_course

    course = load_course(COURSE_ROOT)
    milestone = course.milestone(milestone_id)
    functions = learner_functions(course, milestone)
    checks, problems = public_checks(course, milestone)
    import numpy  # noqa: F401 - imported before forking, so each child starts warm
    import torch  # noqa: F401

    if milestone_id >= "05":
        import transformers  # noqa: F401
    jobs = jobs or os.cpu_count() or 1
    steps = [Step(f) for f in functions]
    with tempfile.TemporaryDirectory(prefix=f"replay-{milestone_id}-") as tmp:
        running: dict[int, tuple[int, Path, list[str], list[str]]] = {}
        waiting = list(range(len(functions)))
        while waiting or running:
            while waiting and len(running) < jobs:
                i = waiting.pop(0)
                pid, folder, mine, following = _start(course, milestone, functions, i, checks, Path(tmp))
                running[pid] = (i, folder, mine, following)
            pid, _ = os.wait()
            if pid not in running:
                continue
            i, folder, mine, following = running.pop(pid)
            log = (folder / "log.txt").read_text(errors="replace") if (folder / "log.txt").exists() else ""
            task, following_task = _task_end(functions, i)
            outcomes = _outcomes(folder / "results.jsonl", task, following_task)
            check_step(steps[i], mine, following, outcomes, log)
            progress(f"{milestone_id} {i + 1:>2}/{len(functions)} {functions[i].qualname}: "
                     f"{'ok' if steps[i].ok else 'FAILED'}")
            shutil.rmtree(folder, ignore_errors=True)
    return steps, problems


def _task_end(functions: list[Function], i: int) -> tuple[str | None, str | None]:
    """(the task, the next task) when function i is the last of its task, else (None, None)."""
    if i + 1 < len(functions) and functions[i + 1].task == functions[i].task:
        return None, None
    return functions[i].task, functions[i + 1].task if i + 1 < len(functions) else None


def _start(course, milestone, functions, i, checks, tmp: Path):
    """Fork the pytest of step i; (its pid, its folder, function i's tests, function i+1's tests)."""
    from mutation import _fork, fork_pytest

    done = {f.qualname for f in functions[: i + 1]}
    folder = tmp / f"step{i:03d}"
    root = learner_root(course, milestone, folder / "root",
                        lambda module, text: written(text, done, milestone.id, f"{module}.py"))
    mine = checks.get(functions[i].qualname, [])
    following = checks.get(functions[i + 1].qualname, []) if i + 1 < len(functions) else []
    task, following_task = _task_end(functions, i)
    hidden = []
    if task:  # the task's hidden tests too, and the next task's (which must fail on stubs)
        tasks = f"({task} or {following_task})" if following_task else task
        hidden = [f"tests/{milestone.id}", "-m", f"{tasks} and not benchmark and not slow"]
    args = [*mine, *following, *hidden, "--impl-root", str(root), "--llmfs-results", str(folder / "results.jsonl"),
            "-p", "no:randomly", "-p", "no:cacheprovider", "-q", "--timeout", "300"]
    env = {"LLMFS_ROOT": str(root)}

    def run() -> None:
        fork_pytest(args, course.root, folder / "log.txt", env, timeout=900) if mine or following or hidden else None

    return _fork(run), folder, mine, following


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--milestone", action="append", help="milestone id (repeatable; default: all)")
    parser.add_argument("--jobs", type=int, default=0, help="steps at a time (default: one per core)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(COURSE_ROOT))
    from llmfs.course import load_course

    ids = args.milestone or [m.id for m in load_course(COURSE_ROOT).milestones]
    failed = 0
    for milestone_id in ids:
        steps, problems = replay(milestone_id, args.jobs)
        for problem in problems + [p for s in steps for p in s.problems]:
            print(f"  {problem}")
            failed += 1
    print("every function's public tests pass once it is written" if not failed else f"{failed} problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
