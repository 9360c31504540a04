"""Generate the learner's milestones/ from solutions/ with nbgrader's ClearSolutions.

Each solution file goes through nbgrader's own preprocessor as a one-cell notebook, so the semantics
are nbgrader's: every region between the BEGIN/END SOLUTION marker lines (markers included) becomes
the code stub, indented like the BEGIN line. Our code stub is nbgrader's default with one change: the
`NotImplementedError` carries a message that names the milestone, the file and the function to write.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from llmfs.course import SOLUTION_BEGIN, Course, Milestone

PLACEHOLDER = "LLMFS_STUB_MESSAGE"
CODE_STUB = f"# YOUR CODE HERE\nraise NotImplementedError({PLACEHOLDER})"


class StubError(Exception):
    """A solution file cannot be turned into a stub (unbalanced markers, a region outside a function)."""


def clear_solutions(source: str, code_stub: str = CODE_STUB) -> str:
    """Run nbgrader's ClearSolutions on `source` as the only cell of a Python notebook.

    A file without regions (a helper the learner only reads, such as 04's results.py) is copied unchanged;
    nbgrader would replace the whole cell with one stub.
    """
    if SOLUTION_BEGIN not in source:
        return source
    try:
        import nbformat
        from nbgrader.preprocessors import ClearSolutions
    except ImportError as e:
        raise StubError(f"making stubs needs nbgrader, the instructor's extra: pip install -e \".[instructor]\" "
                        f"({e})") from None
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False,
                                 "grade_id": "solution", "schema_version": 3}
    nb.cells.append(cell)
    try:
        nb, _ = ClearSolutions(code_stub={"python": code_stub}).preprocess(nb, {})
    except RuntimeError as e:  # nbgrader's words for nested or unclosed regions
        raise StubError(str(e)) from None
    return nb.cells[0].source


def _enclosing_functions(tree: ast.AST) -> dict[int, str]:
    """Line number of each placeholder -> qualified name of the function it sits in."""
    found: dict[int, str] = {}

    def visit(node: ast.AST, scope: tuple[str, ...], in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, (*scope, child.name), True)
            elif isinstance(child, ast.ClassDef):
                visit(child, (*scope, child.name), in_function)
            else:
                if isinstance(child, ast.Name) and child.id == PLACEHOLDER:
                    found[child.lineno] = ".".join(scope) if in_function else ""
                visit(child, scope, in_function)

    visit(tree, (), False)
    return found


def stub_message(milestone: str, filename: str, function: str) -> str:
    return (f"Milestone {milestone}: write `{function}` in milestones/{milestone}/{filename} "
            f"(see milestones/{milestone}/README.md)")


def make_stub(source: str, milestone: str, filename: str) -> str:
    """The learner's version of one solution file."""
    cleared = clear_solutions(source)
    try:
        tree = ast.parse(cleared)
    except SyntaxError as e:
        raise StubError(f"{filename}: the stub does not parse (line {e.lineno}: {e.msg}); "
                        "a solution region must hold whole statements") from None
    lines = cleared.split("\n")
    for lineno, function in _enclosing_functions(tree).items():
        if not function:
            raise StubError(f"{filename}, line {lineno}: a solution region outside a function would make "
                            "the stub raise on import; put it inside a function body")
        message = stub_message(milestone, filename, function)
        lines[lineno - 1] = lines[lineno - 1].replace(PLACEHOLDER, repr(message))
    return "\n".join(lines)


@dataclass(frozen=True)
class StubFile:
    solution: Path
    stub: Path
    content: str

    @property
    def up_to_date(self) -> bool:
        return self.stub.is_file() and self.stub.read_text(encoding="utf-8") == self.content


def plan(course: Course, milestones: list[Milestone] | None = None) -> list[StubFile]:
    """Every stub file `llmfs stubs` would write, with its content."""
    files = []
    for m in milestones or course.milestones:
        for module in m.modules:
            solution = course.solutions / m.id / f"{module}.py"
            if not solution.is_file():
                raise StubError(f"course.toml lists {module} for milestone {m.id}, but {solution} is missing")
            content = make_stub(solution.read_text(encoding="utf-8"), m.id, f"{module}.py")
            files.append(StubFile(solution, course.milestones_dir / m.id / f"{module}.py", content))
    return files
