"""What a learner still has to write: every stub left in their files, read from the source, grouped by task.

A stub is a function whose body raises the NotImplementedError that `llmfs stubs` writes ("Milestone 03: write
`merge_pair` in ..."). Its task is the `# taskNN_k:` section comment above it, which the stubs keep.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from llmfs.course import Milestone

STUB_PREFIX = "Milestone "
SECTION = re.compile(r"^# (task\d\d_\d+):")


def function_spans(tree: ast.Module) -> list[tuple[int, int, str]]:
    """(first line, last line, qualname) of every function, methods and nested functions included."""
    spans = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                spans.append((child.lineno, child.end_lineno or child.lineno, prefix + child.name))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(tree, "")
    return spans


def _is_stub(node: ast.AST) -> bool:
    """`raise NotImplementedError("Milestone ...")`, the statement a stub's region became."""
    if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
        return False
    name, message = node.exc.func, node.exc.args[0]
    return (isinstance(name, ast.Name) and name.id == "NotImplementedError" and isinstance(message, ast.Constant)
            and isinstance(message.value, str) and message.value.startswith(STUB_PREFIX))


def stub_messages(source: str) -> dict[str, str]:
    """{function: the message its stub raises} for each function with a stub left in `source`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    spans = function_spans(tree)
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if _is_stub(node):
            owners = [s for s in spans if s[0] <= node.lineno <= s[1]]
            found.setdefault(max(owners)[2] if owners else "<module>", node.exc.args[0].value)
    return found


def learner_functions(solution: str) -> list[str]:
    """The functions a learner writes in a solution file: those with a `### BEGIN SOLUTION` region."""
    spans = function_spans(ast.parse(solution))
    found: dict[str, None] = {}
    for number, line in enumerate(solution.splitlines(), 1):
        if line.strip() == "### BEGIN SOLUTION":
            owners = [s for s in spans if s[0] <= number <= s[1]]
            found[max(owners)[2] if owners else "<module>"] = None
    return list(found)


def stubs_in(source: str) -> list[tuple[str | None, int, str]]:
    """(task, line, function) of each function with a stub left in `source`, in source order; [] if it does not
    parse (the import error is reported on its own)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    tasks, current = {}, None
    for number, line in enumerate(source.splitlines(), 1):
        if match := SECTION.match(line):
            current = match.group(1)
        tasks[number] = current
    spans = function_spans(tree)
    found: dict[str, tuple[str | None, int, str]] = {}
    for node in ast.walk(tree):
        if _is_stub(node):
            owners = [s for s in spans if s[0] <= node.lineno <= s[1]]
            name = max(owners)[2] if owners else "<module>"
            found.setdefault(name, (tasks.get(node.lineno), node.lineno, name))
    return sorted(found.values(), key=lambda stub: stub[1])


def stubs_left(root: Path, milestone: Milestone) -> list[tuple[str, str, list[str]]]:
    """[(task, file, [function, ...]), ...]: every stub left in the milestone's files under `root`, in the order a
    learner writes them (tasks as the manifest lists them, then modules, then lines)."""
    order = list(milestone.tasks)
    rows: list[tuple[int, int, str, str, list[str]]] = []
    for position, module in enumerate(milestone.modules):
        path = root / milestone.id / f"{module}.py"
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        by_task: dict[str, list[str]] = {}
        for task, _, name in stubs_in(source):
            by_task.setdefault(task or "", []).append(name)
        for task, names in by_task.items():
            rank = order.index(task) if task in order else len(order)
            rows.append((rank, position, task, path.name, names))
    return [(task, file, names) for _, _, task, file, names in sorted(rows, key=lambda row: row[:2])]


def describe(root: Path, milestone: Milestone) -> list[str]:
    """The lines of pytest's "still to write" section for one milestone."""
    lines = []
    for task, file, names in stubs_left(root, milestone):
        lines.append(f"{task or 'milestone ' + milestone.id:<9} {milestone.id}/{file}: {', '.join(names)}")
    return lines
