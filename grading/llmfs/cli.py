"""`llmfs`: the course's command line.

    llmfs grade [ROOT] [--milestone 01 ...] [--reference] [--json FILE] [--summary FILE]
    llmfs grade-all SUBMISSIONS [--milestone 01 ...] [--jobs N] [--out DIR] [--force] [--pseudonyms] [--shard I/N]
    llmfs merge-grades SHARD_OUT... --out DIR [--pseudonyms]
    llmfs autograder NN... [--out autograder.zip] [--visibility visible|after_due_date|after_published|hidden]
    llmfs release OUT [--upto NN]
    llmfs stubs [--check] [--milestone 01 ...]
    llmfs data list | fetch NAME ... | path NAME

Exit codes: 0 whenever the command did its job (a grade of 0 points included); 1 when `stubs --check`
finds stale stubs; 2 when the command itself could not run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from llmfs import __version__
from llmfs.course import CourseError, load_course

EXIT_OK, EXIT_STALE, EXIT_ERROR = 0, 1, 2


def _limits(args: argparse.Namespace) -> dict[str, float]:
    """The --time-limit/--test-timeout/--memory-mb overrides that were given."""
    return {k: v for k, v in (("time_limit_s", args.time_limit), ("test_timeout_s", args.test_timeout),
                              ("memory_mb", args.memory_mb)) if v is not None}


def _grade(args: argparse.Namespace, console: Console) -> int:
    from llmfs.grader import grade
    from llmfs.report import markdown_summary, render, write_gradescope

    course = load_course()
    if args.reference and args.root:
        raise CourseError("give either ROOT or --reference, not both")
    root = course.solutions if args.reference else Path(args.root or course.milestones_dir)
    limits = _limits(args)
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:

        def progress(m):
            if not console.is_terminal:  # CI logs: one plain line per milestone
                console.print(f"grading {m.id} {m.title} ...", highlight=False)
            task = bar.add_task(f"grading {m.id} {m.title}", total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        results = grade(course, root, args.milestone, limits, progress)
    render(results, root, console, verbose=args.verbose)
    if args.json:
        path = write_gradescope(results, time.monotonic() - started, Path(args.json))
        console.print(f"wrote {path}", highlight=False)
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as f:  # GitHub's job summary file is appended to
            f.write(markdown_summary(results, root))
    return EXIT_OK


def _autograder(args: argparse.Namespace, console: Console) -> int:
    from llmfs.autograder import build, memory_mb

    course = load_course()
    path = build(course, args.milestones, Path(args.out), args.visibility)
    needed = memory_mb([course.milestone(i) for i in args.milestones]) / 1024
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): upload it as the Gradescope assignment's "
                  f"autograder and give it at least {needed:.1f} GB of memory (its README.md says why)",
                  highlight=False, soft_wrap=True)
    return EXIT_OK


def _release(args: argparse.Namespace, console: Console) -> int:
    from llmfs.release import release

    files = release(load_course(), Path(args.out), args.upto)
    console.print(f"wrote {len(files)} files to {args.out}: a learner repository without solutions/ or hidden "
                  f"tests{f', milestones up to {args.upto}' if args.upto else ''}", highlight=False)
    return EXIT_OK


def _grade_all(args: argparse.Namespace, console: Console) -> int:
    from llmfs.classroom import ClassGrader, Options

    course = load_course()
    limits = _limits(args)
    options = Options(milestones=args.milestone, jobs=args.jobs, force=args.force, limits=limits or None,
                      pseudonyms=args.pseudonyms, shard=args.shard)
    share = f" of shard {args.shard[0]}/{args.shard[1]}" if args.shard else ""
    grader = ClassGrader(course, Path(args.submissions), Path(args.out), options)
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
        task = bar.add_task("grading submissions", total=None)

        def on_start(total: int, cached: int) -> None:
            bar.update(task, total=total, completed=cached)
            console.print(f"{total} submissions{share} in {args.submissions}: {cached} unchanged since the last run, "
                          f"{total - cached} to grade with {args.jobs} job(s)", highlight=False, soft_wrap=True)

        def on_done(record: dict) -> None:
            bar.advance(task)
            total = sum(s["score"] for s in record["milestones"].values())
            problems = [f"{mid} {s['status']}" for mid, s in record["milestones"].items()
                        if s["status"] not in ("complete", "partial", "not started")]
            console.print(f"  {record['name']}: {total:g} points in {record['seconds']:.0f} s"
                          + (f" ({record['error'] or ', '.join(problems)})" if record["error"] or problems else ""),
                          highlight=False, markup=False, soft_wrap=True)

        records = grader.run(on_start, on_done)
    _summary(records, console)
    graded = [r for r in records if not r.get("cached")]
    per = (time.monotonic() - started) / len(graded) if graded else 0.0
    if args.shard:
        console.print(f"wrote the records of {len(records)} learners{share} to {args.out}/ ({per:.1f} s per graded "
                      f"submission, wall clock); no leaderboard, CSV or gradebook for a share of the class: "
                      f"`llmfs merge-grades` makes them from all {args.shard[1]} shard folders",
                      highlight=False, soft_wrap=True)
        return EXIT_OK
    console.print(f"wrote {Path(args.out) / 'leaderboard.html'} and the rest of {args.out}/ "
                  f"({len(records)} learners; {per:.1f} s per graded submission, wall clock)",
                  highlight=False, soft_wrap=True)
    return EXIT_OK


def _merge_grades(args: argparse.Namespace, console: Console) -> int:
    from llmfs.shards import merge

    records = merge(load_course(), [Path(f) for f in args.shards], Path(args.out), args.pseudonyms)
    _summary(records, console)
    console.print(f"wrote {Path(args.out) / 'leaderboard.html'} and the rest of {args.out}/ ({len(records)} learners "
                  f"from {len(args.shards)} shard folders)", highlight=False, soft_wrap=True)
    return EXIT_OK


def _summary(records: list[dict], console: Console) -> None:
    """Errors, timeouts and tampering at the end, so nothing scrolls away unnoticed."""
    problems = [(r["name"], mid, s["status"], s["message"]) for r in records for mid, s in r["milestones"].items()
                if s["status"] in ("error", "timeout", "tampered")]
    if not problems:
        console.print("no errors, timeouts or tampering", highlight=False, soft_wrap=True)
        return
    console.print(f"[bold]{len(problems)} problem(s):[/]", highlight=False, soft_wrap=True)
    for name, mid, status, message in problems:
        first = (message.strip().splitlines() or [""])[0][:200]
        console.print(f"  {name} {mid} {status}: {first}", highlight=False, markup=False, soft_wrap=True)


def _stubs(args: argparse.Namespace, console: Console) -> int:
    from llmfs.fsutil import atomic_write_text, display_path
    from llmfs.stubs import plan

    course = load_course()
    milestones = [course.milestone(i) for i in args.milestone] if args.milestone else None
    files = plan(course, milestones)
    stale = [f for f in files if not f.up_to_date]
    if args.check:
        for f in stale:
            console.print(f"stale: {display_path(f.stub)} differs from what `llmfs stubs` makes of "
                          f"{display_path(f.solution)}", highlight=False)
        if stale:
            console.print("run `llmfs stubs` and commit milestones/", highlight=False)
            return EXIT_STALE
        console.print(f"{len(files)} stub files up to date", highlight=False)
        return EXIT_OK
    for f in stale:
        atomic_write_text(f.stub, f.content)
        console.print(f"wrote {display_path(f.stub)}", highlight=False)
    console.print(f"{len(files)} stub files, {len(stale)} rewritten", highlight=False)
    return EXIT_OK


def _data(args: argparse.Namespace, console: Console) -> int:
    from llmfs.data import fetch, locate, registry

    if args.data_command == "list":
        for name, ds in sorted(registry().items()):
            where = locate(name)
            missing = "not built yet" if ds.build else "not downloaded"
            console.print(f"[bold]{name}[/]  {ds.description}\n    {'found at ' + str(where) if where else missing}",
                          highlight=False)
    elif args.data_command == "fetch":
        for name in args.names:
            console.print(f"{name}: {fetch(name)}", highlight=False)
    elif args.data_command == "path":
        where = locate(args.name)
        if where is None:
            console.print(f"{args.name} is not available locally; run `llmfs data fetch {args.name}`")
            return EXIT_ERROR
        print(where)
    elif args.data_command == "mix":
        from llmfs.data.corpora import build_mixed_corpus

        path = build_mixed_corpus(args.out, int(args.mb * 1e6))
        console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)
    return EXIT_OK


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _shard(text: str) -> tuple[int, int]:
    from llmfs.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmfs", description="Build an LLM from Scratch: grade, grade-all, "
                                     "autograder, release, stubs, data.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="run the hidden tests of each milestone against an implementation")
    g.add_argument("root", nargs="?", help="implementation root to grade (default: ./milestones)")
    g.add_argument("--milestone", "-m", action="append", metavar="NN", help="grade only these milestones")
    g.add_argument("--reference", action="store_true", help="grade the reference solutions/")
    g.add_argument("--json", metavar="FILE", help="write Gradescope's results.json schema to FILE")
    g.add_argument("--summary", metavar="FILE", help="append a Markdown table to FILE ($GITHUB_STEP_SUMMARY)")
    g.add_argument("--verbose", "-v", action="store_true",
                   help="points per task, and every failed test with its message")
    g.add_argument("--time-limit", type=_positive(float), metavar="S", help="override each milestone's wall limit")
    g.add_argument("--test-timeout", type=_positive(float), metavar="S", help="override the per-test CPU-seconds")
    g.add_argument("--memory-mb", type=_positive(int), metavar="MB", help="override the memory cap")
    g.set_defaults(run=_grade)

    ga = sub.add_parser("grade-all", help="grade a folder of submissions: leaderboards, CSV, nbgrader gradebook")
    ga.add_argument("submissions", metavar="SUBMISSIONS",
                    help="a folder of learner repositories: folders, bare git repositories, .bundle or .zip files")
    ga.add_argument("--milestone", "-m", action="append", metavar="NN", help="grade only these milestones")
    ga.add_argument("--jobs", "-j", type=_positive(int), default=1, help="submissions graded at once (default 1)")
    ga.add_argument("--out", "-o", default="grades", metavar="DIR", help="output folder (default ./grades)")
    ga.add_argument("--force", action="store_true", help="regrade submissions that have not changed")
    ga.add_argument("--pseudonyms", action="store_true", help="name learners by a salted hash in public files")
    ga.add_argument("--time-limit", type=_positive(float), metavar="S", help="override each milestone's wall limit")
    ga.add_argument("--test-timeout", type=_positive(float), metavar="S", help="override the per-test CPU-seconds")
    ga.add_argument("--memory-mb", type=_positive(int), metavar="MB", help="override the memory cap")
    ga.add_argument("--shard", type=_shard, metavar="I/N",
                    help="grade only share I of N of the class (by a hash of each name); `merge-grades` publishes")
    ga.set_defaults(run=_grade_all)

    mg = sub.add_parser("merge-grades", help="merge the folders of `grade-all --shard I/N` runs: leaderboards, CSV, "
                                             "nbgrader gradebook")
    mg.add_argument("shards", nargs="+", metavar="SHARD_OUT", help="the --out folders of every shard")
    mg.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (keep it between runs)")
    mg.add_argument("--pseudonyms", action="store_true", help="name learners by a salted hash in public files")
    mg.set_defaults(run=_merge_grades)

    a = sub.add_parser("autograder", help="write a Gradescope autograder zip that grades these milestones")
    a.add_argument("milestones", nargs="+", metavar="NN", help="the milestones it grades")
    a.add_argument("--out", "-o", default="autograder.zip", metavar="ZIP", help="(default ./autograder.zip)")
    a.add_argument("--visibility", default="visible",
                   choices=("visible", "after_due_date", "after_published", "hidden"),
                   help="when learners see the test results (Gradescope's visibility; default visible)")
    a.set_defaults(run=_autograder)

    r = sub.add_parser("release", help="write the learner repository: no solutions/, no hidden tests")
    r.add_argument("out", metavar="OUT", help="a new (or empty) folder")
    r.add_argument("--upto", metavar="NN", help="release milestones up to NN (default: all)")
    r.set_defaults(run=_release)

    s = sub.add_parser("stubs", help="regenerate milestones/ from solutions/ (nbgrader ClearSolutions)")
    s.add_argument("--check", action="store_true", help="only report stubs that differ; exit 1 if any")
    s.add_argument("--milestone", "-m", action="append", metavar="NN")
    s.set_defaults(run=_stubs)

    d = sub.add_parser("data", help="the dataset registry: list, fetch, path, mix")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dsub.add_parser("list", help="every dataset and where it is")
    f = dsub.add_parser("fetch", help="find or download datasets, verifying their sha256")
    f.add_argument("names", nargs="+", metavar="NAME")
    p = dsub.add_parser("path", help="print the local folder of a dataset")
    p.add_argument("name", metavar="NAME")
    mix = dsub.add_parser("mix", help="build a large text file from the local datasets (for tokenizer training)")
    mix.add_argument("out", metavar="FILE")
    mix.add_argument("--mb", type=_positive(float), default=100.0, help="size in MB (default 100)")
    d.set_defaults(run=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=False, soft_wrap=False)
    from llmfs.data import DataError
    from llmfs.grader import GraderError
    from llmfs.stubs import StubError

    try:
        return args.run(args, console)
    except (CourseError, GraderError, StubError, DataError) as e:
        Console(stderr=True).print(f"[bold red]llmfs {args.command}:[/] {e}", highlight=False)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
