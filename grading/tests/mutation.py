"""The mutation suite's machinery: plant one realistic learner mistake in a copy of the reference, grade it with the
hidden tests of its task, and report the points it lost and the message it got.

The mutants themselves are in grading/tests/mutants/mNN.py (one list per milestone; they quote the reference, so they
live beside the hidden tests and never ship to learners). `test_mutants.py` asserts on them in CI (`-m slow`);
this file, run as a script, prints the mutation score of each milestone (the table in docs/RESULTS.md):

    python grading/tests/mutation.py [-m 01 -m 02 ...] [-k WORDS ...] [--public] [--jobs N] [--json FILE]
                                   [--targets docs/mutation/score.json]

A milestone's mutants run in one process that imports torch (and transformers) once and forks a child per mutant,
so a mutant costs its tests, not a fresh interpreter. Each child runs
`pytest tests/NN -m "TASK and not benchmark" [-k SELECT] --impl-root COPY` with the milestone's per-test limits
(CPU-seconds, as `llmfs grade`).

A full run (about 45 minutes on 2 cores with --public) grades each mutant with every hidden test of its task and
records, in its --json file, the tests each one failed. `--targets FILE` grades each mutant with only the tests FILE
recorded for it (CI does this with docs/mutation/score.json, the last full run, so that the suite fits its time): a
mutant FILE does not know gets the full task, and a recorded test that no longer exists is an error that asks for
a new full run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HARMS = ("output", "robustness", "speed")
FULL_RUN = "python grading/tests/mutation.py --public --json docs/mutation/score.json"
TASK_SECTION = re.compile(r"^# (task\d\d_\d+):", re.MULTILINE)
SERIOUS_SHARE = 0.25  # a mistake that changes outputs loses at least this share of its task's points ...
REBALANCED = ("01", "02", "03", "04", "05")  # ... in the milestones whose points issue 16 rebalanced for it


@dataclass(frozen=True)
class Mutant:
    """One mistake: `original` (a fragment that occurs once in solutions/NN/MODULE.py) becomes `mutated`; tuples
    change several fragments together. `expected` must appear in the failing tests' output. `harm` says what the
    mistake breaks: "output" (a model's outputs, a tokenizer's ids, a training run's result: must lose at least a
    quarter of its task's points), "robustness" (an argument check, an atomic write: must lose its own test's
    points) or "speed" (right answers, slowly: must fail its benchmark). `select` narrows the task's tests with -k
    (for tasks whose tests are slow); `task` overrides the task found from the anchor's `# taskNN_k:` section."""

    milestone: str
    module: str
    what: str
    original: str | tuple[str, ...]
    mutated: str | tuple[str, ...]
    expected: str
    harm: str = "output"
    select: str = ""
    task: str = ""

    @property
    def id(self) -> str:
        return f"{self.milestone} {self.what}"


@dataclass
class Outcome:
    """What grading one mutant gave: the task's points, the points lost in it, the failing tests and the output."""

    mutant: str
    task: str
    harm: str
    task_points: float
    lost: float
    failed: list[str] = field(default_factory=list)
    output: str = ""
    seconds: float = 0.0
    error: str = ""
    public_failed: int | None = None  # with --public: how many public tests (milestones/NN) the mutant fails

    @property
    def named(self) -> bool:
        return self.error == "" and self._expected in self.output

    _expected: str = ""

    def verdict(self) -> str:
        """'' when the mutant is caught as the suite requires, else what is wrong."""
        if self.error:
            return self.error
        if not self.failed:
            return "no hidden test of its task failed"
        if not self.named:
            return f"no failing message contains {self._expected!r}"
        if (self.harm == "output" and self.mutant[:2] in REBALANCED
                and self.lost < SERIOUS_SHARE * self.task_points - 1e-9):
            return (f"it changes outputs but loses only {self.lost:g} of {self.task:s}'s {self.task_points:g} points "
                    f"(needs {SERIOUS_SHARE * self.task_points:g})")
        return ""


def load_mutants(milestone: str) -> list[Mutant]:
    here = Path(__file__).parent
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    module = importlib.import_module(f"mutants.m{milestone}")
    return [Mutant(milestone, *m) if isinstance(m, tuple) else m for m in module.MUTANTS]


def all_mutants(milestones: list[str] | None = None) -> list[Mutant]:
    found = sorted(p.stem[1:] for p in (Path(__file__).parent / "mutants").glob("m[0-9][0-9].py"))
    return [m for ms in found if not milestones or ms in milestones for m in load_mutants(ms)]


def task_of(source: str, anchor: str, path: str) -> str:
    """The `# taskNN_k:` section the anchor lies in."""
    at = source.index(anchor)
    sections = [match for match in TASK_SECTION.finditer(source) if match.start() < at]
    if not sections:
        raise ValueError(f"{path}: the anchor {anchor[:60]!r} lies above every `# taskNN_k:` section")
    return sections[-1].group(1)


def plant(mutant: Mutant, solutions: Path, root: Path) -> str:
    """Copy solutions/NN to root/NN with the mistake planted; return the mutant's task."""
    shutil.copytree(solutions / mutant.milestone, root / mutant.milestone,
                    ignore=shutil.ignore_patterns("__pycache__", "results", "*.bin", "*.pt"))
    path = root / mutant.milestone / f"{mutant.module}.py"
    source = path.read_text()
    originals = mutant.original if isinstance(mutant.original, tuple) else (mutant.original,)
    mutated = mutant.mutated if isinstance(mutant.mutated, tuple) else (mutant.mutated,)
    if len(originals) != len(mutated):
        raise ValueError(f"{mutant.id}: {len(originals)} anchors but {len(mutated)} replacements")
    where = f"solutions/{mutant.milestone}/{mutant.module}.py"
    task = mutant.task or task_of(source, originals[0], where)
    for anchor, replacement in zip(originals, mutated, strict=True):
        if source.count(anchor) != 1:
            raise ValueError(f"{mutant.id}: the anchor {anchor!r} occurs {source.count(anchor)} times in {where}")
        source = source.replace(anchor, replacement)
    path.write_text(source)
    return task


def collect_points(course_root: Path, milestone: str, work: Path) -> dict[str, tuple[float, str | None]]:
    """nodeid -> (points, task) for every hidden test of the milestone."""
    results = work / f"collect-{milestone}.jsonl"
    code = fork_pytest([f"tests/{milestone}", "--collect-only", "-q", "--llmfs-results", str(results)],
                        course_root, work / f"collect-{milestone}.log", {}, timeout=300)
    if code not in (0, 5):
        raise RuntimeError(f"collecting tests/{milestone} failed:\n{(work / f'collect-{milestone}.log').read_text()}")
    for line in results.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "collected":
            return {t["nodeid"]: (t["points"], t["task"]) for t in event["tests"]}
    raise RuntimeError(f"no tests collected in tests/{milestone}")


@dataclass
class Running:
    """A mutant being graded: its folder, the runner process doing it, and what the verdict needs."""

    mutant: Mutant
    folder: Path
    task: str
    marks: str
    pid: int
    started: float
    targeted: bool = False


def start(mutant: Mutant, course_root: Path, solutions: Path, timeout_s: float, work: Path,
          public: bool = False, targets: list[str] | None = None) -> Running:
    """Plant the mutant in a fresh folder and fork a runner that grades it with its task's hidden tests (only the
    `targets` nodeids, when given) and, with `public`, the milestone's public tests, each in a pytest child of its
    own, under the grader's limits."""
    folder = Path(tempfile.mkdtemp(prefix="mutant-", dir=work))
    root = folder / "root"
    task = plant(mutant, solutions, root)
    marks = f"{task} and {'' if mutant.harm == 'speed' else 'not '}benchmark"
    where = targets or [f"tests/{mutant.milestone}"]
    hidden = [*where, "-m", marks, "--impl-root", str(root), "-p", "no:randomly", "-q",
              "--llmfs-results", str(folder / "results.jsonl"), *limit_args(timeout_s)]
    if mutant.select and not targets:
        hidden += ["-k", mutant.select]
    env = {"LLMFS_DEPS_ROOT": str(solutions)}  # as llmfs grade: earlier milestones are the reference's
    wall = max(600.0, 4 * timeout_s)

    def runner() -> None:
        code = fork_pytest(hidden, course_root, folder / "log.txt", env, timeout=wall)
        (folder / "code").write_text(str(code))
        if public:  # the learner's view: does any public test of the milestone catch it?
            fork_pytest([f"milestones/{mutant.milestone}", "--impl-root", str(root), "-p", "no:randomly", "-q",
                          "-m", "not benchmark", "--llmfs-results", str(folder / "public.jsonl"),
                          *limit_args(timeout_s)], course_root, folder / "public.txt", env, timeout=wall)

    return Running(mutant, folder, task, marks, _fork(runner), time.monotonic(), bool(targets))


def finish(running: Running, tests: dict[str, tuple[float, str | None]], timeout_s: float,
           public: bool = False) -> Outcome:
    """The outcome of a runner that has exited: points lost within the task, failing tests, their messages."""
    mutant, folder, task = running.mutant, running.folder, running.task
    task_points = sum(points for points, t in tests.values() if t == task)
    outcome = Outcome(mutant.id, task, mutant.harm, task_points, 0.0, _expected=mutant.expected,
                      seconds=time.monotonic() - running.started)
    log = folder / "log.txt"
    outcome.output = log.read_text(errors="replace") if log.exists() else ""
    messages = []
    for event in _events(folder / "results.jsonl"):
        if event["event"] == "result" and event["outcome"] == "failed":
            outcome.failed.append(event["nodeid"])
            messages.append(event["message"])
            points, test_task = tests.get(event["nodeid"], (0.0, None))
            outcome.lost += points if test_task == task else 0.0
    outcome.output += "\n" + "\n".join(messages)
    if public:
        outcome.public_failed = sum(e["event"] == "result" and e["outcome"] == "failed"
                                    for e in _events(folder / "public.jsonl"))
    code = int((folder / "code").read_text()) if (folder / "code").exists() else -2
    if code == -1:
        outcome.error = f"the tests did not finish in {max(600.0, 4 * timeout_s):g} s"
    elif code == -2:
        outcome.error = "the mutant's runner died before its tests finished"
    elif code == 4 and running.targeted:
        outcome.error = (f"a test recorded for it in --targets no longer exists ({_first_error(outcome.output)}): "
                         f"rerun the full suite: {FULL_RUN}")
    elif code == 5:
        outcome.error = f"no hidden test selected by -m {running.marks!r}" + (
            f" -k {mutant.select!r}" if mutant.select and not running.targeted else " among its --targets")
    shutil.rmtree(folder, ignore_errors=True)
    return outcome


def _first_error(output: str) -> str:
    return next((line.strip() for line in output.splitlines() if line.startswith("ERROR")), "pytest exit code 4")


def read_targets(path: Path) -> dict[str, list[str]]:
    """mutant id -> the hidden tests it failed, from a full run's --json file (caught mutants only)."""
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--targets {path}: cannot read it ({error}); make it with {FULL_RUN}") from error
    return {r["mutant"]: r["failed"] for r in records if r.get("verdict") == "caught" and r.get("failed")}


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _fork(work) -> int:
    """Run work() in a forked child that then exits; its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    return pid


def limit_args(timeout_s: float) -> list[str]:
    """The per-test limits `llmfs grade` sets: test_timeout_s CPU-seconds, and a wall-clock backstop."""
    from llmfs.grader import WALL_PER_CPU_S

    return ["--cpu-timeout", str(timeout_s), "--timeout", str(WALL_PER_CPU_S * timeout_s)]


def fork_pytest(args: list[str], cwd: Path, log: Path, env: dict[str, str], timeout: float) -> int:
    """Run pytest.main(args) in a forked child (stdout and stderr to `log`); its exit code, or -1 past `timeout`."""
    import signal

    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.setpgid(0, 0)
            os.chdir(cwd)
            os.environ.update(env)
            import pytest

            code = int(pytest.main(args))
        except BaseException as error:  # noqa: BLE001 - the child must exit, whatever happened
            print(f"the mutant's pytest crashed: {error!r}", flush=True)
            code = 3
        os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


def run_milestone(milestone: str, mutants: list[Mutant], course_root: Path, progress=print,
                  public: bool = False, jobs: int = 0, targets: dict[str, list[str]] | None = None) -> list[Outcome]:
    """Grade every mutant of one milestone, `jobs` at a time (default: one per core), speed mutants alone at the
    end (so no benchmark shares the machine with another mutant). This process imports the heavy libraries once,
    then forks a runner per mutant."""
    sys.path.insert(0, str(course_root))
    from llmfs.course import load_course

    course = load_course(course_root)
    spec = next(m for m in course.milestones if m.id == milestone)
    import numpy  # noqa: F401 - imported before forking, so each child starts warm
    import torch  # noqa: F401

    if milestone >= "05":
        import transformers  # noqa: F401
    jobs = jobs or os.cpu_count() or 1
    ordered = [m for m in mutants if m.harm != "speed"] + [m for m in mutants if m.harm == "speed"]
    with tempfile.TemporaryDirectory(prefix=f"mutants-{milestone}-") as tmp:
        work = Path(tmp)
        tests = collect_points(course.root, milestone, work)
        done: dict[str, Outcome] = {}
        running: dict[int, Running] = {}
        waiting = list(ordered)
        while waiting or running:
            alone = waiting and waiting[0].harm == "speed"
            while waiting and len(running) < (1 if alone else jobs) and not (alone and running):
                mutant = waiting.pop(0)
                job = start(mutant, course.root, course.solutions, spec.test_timeout_s, work, public,
                            (targets or {}).get(mutant.id))
                running[job.pid] = job
                alone = bool(waiting) and waiting[0].harm == "speed"
            pid, _ = os.wait()
            if pid not in running:
                continue
            outcome = finish(running.pop(pid), tests, spec.test_timeout_s, public)
            seen = "" if outcome.public_failed is None else f" (fails {outcome.public_failed} public tests)"
            progress(f"{outcome.mutant}: lost {outcome.lost:g}/{outcome.task_points:g} of {outcome.task} in "
                     f"{outcome.seconds:.0f} s  {outcome.verdict() or 'caught'}{seen}")
            done[outcome.mutant] = outcome
    return [done[m.id] for m in mutants]


def table(outcomes: list[Outcome]) -> str:
    """docs/RESULTS.md's table: per milestone, mutants, caught, score, the smallest share an output mutant lost."""
    rows = ["| milestone | mutants | caught | score | least share of its task an output mistake loses |",
            "|---|---|---|---|---|"]
    for milestone in sorted({o.mutant[:2] for o in outcomes}):
        mine = [o for o in outcomes if o.mutant[:2] == milestone]
        caught = sum(not o.verdict() for o in mine)
        shares = [o.lost / o.task_points for o in mine if o.harm == "output" and o.task_points]
        least = f"{min(shares):.0%}" if shares else "-"
        rows.append(f"| {milestone} | {len(mine)} | {caught} | {caught / len(mine):.0%} | {least} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--milestone", action="append", help="only these milestones (repeatable)")
    parser.add_argument("-k", "--only", action="append", default=[],
                        help="only mutants whose description contains this (repeatable: any of them)")
    parser.add_argument("--public", action="store_true", help="also count the public tests each mutant fails")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="write every outcome (the tests it failed; the output's tail if not caught) to FILE")
    parser.add_argument("--jobs", type=int, default=0, help="mutants graded at once (default: one per core)")
    parser.add_argument("--targets", type=Path, metavar="FILE",
                        help="grade each mutant with only the tests a full run's --json FILE says it failed")
    args = parser.parse_args(argv)
    targets = read_targets(args.targets) if args.targets else None
    course_root = Path(__file__).resolve().parents[2]
    mutants = [m for m in all_mutants(args.milestone) if not args.only or any(k in m.what for k in args.only)]
    outcomes: list[Outcome] = []
    for milestone in sorted({m.milestone for m in mutants}):
        outcomes += run_milestone(milestone, [m for m in mutants if m.milestone == milestone], course_root,
                                 public=args.public, jobs=args.jobs, targets=targets)
        if args.json:  # after each milestone, so an interrupted run keeps what it measured
            write_json(outcomes, args.json)
    for outcome in outcomes:
        if outcome.verdict():
            print(f"\nNOT CAUGHT {outcome.mutant}: {outcome.verdict()}\n{outcome.output[-2000:]}")
    print(table(outcomes))
    return 0 if all(not o.verdict() for o in outcomes) else 1


def write_json(outcomes: list[Outcome], path: Path) -> None:
    """Every outcome with its verdict and the hidden tests it failed (the output's tail only where it was not
    caught), written atomically."""
    records = [{**{k: v for k, v in asdict(o).items() if k not in ("_expected", "output", "error")},
                "verdict": o.verdict() or "caught"} | ({"output": o.output[-4000:]} if o.verdict() else {})
               for o in outcomes]
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_text(json.dumps(records, indent=1) + "\n")
    part.replace(path)


if __name__ == "__main__":
    sys.exit(main())
