"""`llmfs stubs`: milestones/ is generated from solutions/ with nbgrader's ClearSolutions semantics."""

from __future__ import annotations

import ast
import re
import shutil

import nbformat
import pytest
from nbgrader.preprocessors import ClearSolutions

from llmfs.loader import load_module
from llmfs.stubs import StubError, make_stub, plan

SOURCE = '''import math


def area(r: float) -> float:
    """The area of a circle."""
    ### BEGIN SOLUTION
    return math.pi * r * r
    ### END SOLUTION


class Shape:
    def scale(self, k):
        if k < 0:
            raise ValueError("k < 0")
        ### BEGIN SOLUTION
        for _ in range(3):
            k *= 2
        return k
        ### END SOLUTION
'''


def nbgrader_default(source: str) -> str:
    """What stock nbgrader (default configuration) makes of `source` as a solution cell."""
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernel})
    cell = nbformat.v4.new_code_cell(source, metadata={"nbgrader": {"solution": True, "grade": False,
                                                                    "grade_id": "a", "schema_version": 3}})
    nb.cells.append(cell)
    nb, _ = ClearSolutions().preprocess(nb, {})
    return nb.cells[0].source


def without_messages(stub: str) -> str:
    return re.sub(r"raise NotImplementedError\('[^']*'\)", "raise NotImplementedError()", stub)


def test_committed_milestones_match_the_generated_stubs(course):
    """The instructor repository's invariant (learners' copies are theirs to change)."""
    stale = [str(f.stub.relative_to(course.root)) for f in plan(course) if not f.up_to_date]
    assert not stale, f"run `llmfs stubs` and commit: {stale}"


@pytest.mark.parametrize("source_of", ["toy", "milestone"])
def test_stubs_are_nbgrader_output_plus_a_message(course, source_of):
    source = SOURCE if source_of == "toy" else (course.solutions / "01" / "bigram.py").read_text()
    stub = make_stub(source, "01", "bigram.py")
    assert without_messages(stub) == nbgrader_default(source)
    assert "### BEGIN SOLUTION" not in stub and "END SOLUTION" not in stub


def test_each_stub_names_milestone_file_and_function(tmp_path):
    (tmp_path / "01").mkdir()
    (tmp_path / "01" / "shapes.py").write_text(make_stub(SOURCE, "01", "shapes.py"))
    shapes = load_module(tmp_path, "01", "shapes")
    with pytest.raises(NotImplementedError, match=r"Milestone 01: write `area` in milestones/01/shapes.py"):
        shapes.area(1.0)
    with pytest.raises(ValueError):  # code outside the solution region is kept and still runs
        shapes.Shape().scale(-1)
    with pytest.raises(NotImplementedError, match=r"write `Shape.scale` in milestones/01/shapes.py"):
        shapes.Shape().scale(1)


def test_stubs_keep_every_signature_and_docstring(course):
    source = (course.solutions / "01" / "bigram.py").read_text()

    def signatures(text: str) -> list[tuple[str, str, str | None]]:
        defs = [n for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        return [(n.name, ast.unparse(n.args) if isinstance(n, ast.FunctionDef) else "", ast.get_docstring(n))
                for n in defs]

    assert signatures(make_stub(source, "01", "bigram.py")) == signatures(source)


@pytest.mark.parametrize("bad,words", [
    ("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n", "outside a function"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "no end solution"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n", "nested"),
])
def test_malformed_solutions_are_refused(bad, words):
    with pytest.raises(StubError, match=words):
        make_stub(bad, "01", "broken.py")


def test_stubs_check_fails_on_an_edited_stub_and_stubs_repairs_it(course, llmfs, tmp_path):
    copy = tmp_path / "course"
    copy.mkdir()
    for name in ("course.toml", "pyproject.toml"):
        shutil.copy(course.root / name, copy / name)
    shutil.copytree(course.solutions, copy / "solutions")
    shutil.copytree(course.milestones_dir, copy / "milestones")
    assert llmfs("stubs", "--check", cwd=copy).returncode == 0
    stub = copy / "milestones" / "01" / "bigram.py"
    stub.write_text(stub.read_text().replace("# YOUR CODE HERE", "# my answer", 1))
    check = llmfs("stubs", "--check", cwd=copy)
    assert check.returncode == 1 and "milestones/01/bigram.py" in check.stdout
    assert llmfs("stubs", cwd=copy).returncode == 0
    assert llmfs("stubs", "--check", cwd=copy).returncode == 0
