"""What a grade looks like: a terminal table for people, Gradescope's results.json for machines.

The JSON follows Gradescope's autograder schema (`tests[]` with name, number, score, max_score,
status, output, visibility; `leaderboard[]` with name, value, order), so one file serves Gradescope
and the course's own leaderboards. Per-milestone summaries go in `extra_data`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from llmfs.fsutil import atomic_write_text
from llmfs.grader import COMPLETE, ERROR, NOT_STARTED, PARTIAL, TAMPERED, TIMEOUT, MilestoneResult

STYLE = {COMPLETE: "bold green", PARTIAL: "yellow", NOT_STARTED: "dim", ERROR: "bold red", TIMEOUT: "bold red",
         TAMPERED: "bold magenta"}


def render(results: list[MilestoneResult], root: Path, console: Console, verbose: bool = False) -> None:
    public = any(r.public for r in results)
    title = (f"Public tests of {root} (one point each; the hidden tests that grade you are not in this repository)"
             if public else f"Grades for {root}")
    table = Table(title=title, title_justify="left")
    for column, justify in (("Milestone", "left"), ("Title", "left"), ("Passed", "right"),
                            ("Points", "right"), ("Time", "right"), ("Status", "left")):
        table.add_column(column, justify=justify)
    for r in results:
        table.add_row(r.milestone.id, r.milestone.title, f"{r.passed}/{len(r.tests)}",
                      f"{r.score:g}/{r.max_score:g}", f"{r.seconds:.1f} s", f"[{STYLE[r.status]}]{r.status}")
    total, possible = sum(r.score for r in results), sum(r.max_score for r in results)
    table.add_section()
    table.add_row("", "Total", "", f"{total:g}/{possible:g}", f"{sum(r.seconds for r in results):.1f} s", "")
    console.print(table)
    for r in results:
        if r.message:
            first = r.message.strip().splitlines()
            console.print(f"[{STYLE[r.status]}]{r.milestone.id} {r.status}:[/] {first[0]}", markup=True,
                          highlight=False, soft_wrap=True)
            for line in first[1:6]:
                console.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)
    if verbose:
        console.print(task_table(results))
        for r in results:
            for t in r.tests:
                if t.outcome != "passed":
                    console.print(f"[red]✗[/] {r.milestone.id} {t.name} ({t.max_score:g} pts)", highlight=False)
                    for line in (t.message or t.outcome).strip().splitlines()[:8]:
                        console.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)


def task_table(results: list[MilestoneResult]) -> Table:
    """Points per task (`llmfs grade -v`): where the points of each milestone were won and lost."""
    table = Table(title="Points per task", title_justify="left")
    for column, justify in (("Task", "left"), ("Title", "left"), ("Passed", "right"), ("Points", "right")):
        table.add_column(column, justify=justify)
    for r in results:
        tasks = dict.fromkeys([*r.milestone.tasks, *(t.task or "" for t in r.tests)])
        for task in tasks:
            mine = [t for t in r.tests if (t.task or "") == task]
            if not mine:
                continue
            got, worth = sum(t.score for t in mine), sum(t.max_score for t in mine)
            style = "green" if got == worth else "yellow" if got else "dim"
            table.add_row(task or f"{r.milestone.id} (no task)", r.milestone.tasks.get(task, ""),
                          f"{sum(t.outcome == 'passed' for t in mine)}/{len(mine)}", f"[{style}]{got:g}/{worth:g}")
        table.add_section()
    return table


def _test_output(t) -> str:
    if t.outcome == "passed":
        return ""
    return t.message or t.outcome


def gradescope(results: list[MilestoneResult], seconds: float) -> dict:
    """Gradescope's results.json for `results`."""
    tests = []
    for r in results:
        for i, t in enumerate(r.tests, start=1):
            tests.append({
                "name": f"{r.milestone.id} {r.milestone.title}: {t.name}",
                "number": f"{r.milestone.id}.{i}",
                "score": t.score,
                "max_score": t.max_score,
                "status": "passed" if t.outcome == "passed" else "failed",
                "output": _test_output(t),
                "tags": [tag for tag in (t.task, r.milestone.id) if tag],
                "visibility": "visible",
            })
        if not r.tests:  # nothing collected: one entry carries the milestone's points and the reason
            tests.append({"name": f"{r.milestone.id} {r.milestone.title}", "number": f"{r.milestone.id}.0",
                          "score": 0.0, "max_score": r.max_score, "status": "failed", "output": r.message,
                          "tags": [r.milestone.id], "visibility": "visible"})
    leaderboard = [{"name": f"{r.milestone.id} {m['name']}", "value": m["value"], "order": m["order"]}
                   for r in results for m in r.metrics]
    summary = "\n".join(f"{r.milestone.id} {r.milestone.title}: {r.score:g}/{r.max_score:g} ({r.status})"
                        + (f"\n    {r.message.strip().splitlines()[0]}" if r.message.strip() else "")
                        for r in results)
    return {
        "score": sum(r.score for r in results),
        "execution_time": round(seconds, 3),
        "output": summary,
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "leaderboard": leaderboard,
        "extra_data": {"milestones": [
            {"id": r.milestone.id, "title": r.milestone.title, "status": r.status, "score": r.score,
             "max_score": r.max_score, "passed": r.passed, "total": len(r.tests), "seconds": round(r.seconds, 3),
             "message": r.message, "test_cpu_limit_s": r.milestone.test_timeout_s,
             "most_test_cpu_s": round(max((t.cpu for t in r.tests), default=0.0), 3),
             "most_test_cpu": max(r.tests, key=lambda t: t.cpu).name if r.tests else ""}
            for r in results
        ]},
    }


def write_gradescope(results: list[MilestoneResult], seconds: float, path: Path) -> Path:
    return atomic_write_text(path, json.dumps(gradescope(results, seconds), indent=2) + "\n")




def markdown_summary(results: list[MilestoneResult], root: Path) -> str:
    """The grade as a Markdown table: a GitHub Actions job summary (`--summary "$GITHUB_STEP_SUMMARY"`)."""
    public = any(r.public for r in results)
    lines = [f"## {'Public tests' if public else 'Grades'} for `{root.name}`", "",
             "| Milestone | Title | Passed | Points | Status |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.milestone.id} | {r.milestone.title} | {r.passed}/{len(r.tests)} | "
                     f"{r.score:g}/{r.max_score:g} | {r.status} |")
    total, possible = sum(r.score for r in results), sum(r.max_score for r in results)
    lines += [f"| | **Total** | | **{total:g}/{possible:g}** | |", ""]
    for r in results:
        if r.message.strip():
            first = r.message.strip().splitlines()[0].replace("`", "'")
            lines.append(f"- **{r.milestone.id} {r.status}**: `{first[:300]}`")
    if public:
        lines += ["", "_One point per public test; your grade comes from the hidden tests._"]
    return "\n".join(lines) + "\n"
