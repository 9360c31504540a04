"""The code a learner reads is ruff-clean, in files of one concern, with tasks in one block each and plots that
leave a notebook alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

SECTION = re.compile(r"^# (task\d\d_\d+):")
PYPLOT = re.compile(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot|\bplt\.")


def test_ruff_is_clean(course):
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=course.root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


MAX_LINES = 400  # a solution file holds one concern; nanoGPT's model.py is ~330 lines
MAX_DOCSTRING = 10  # a docstring teaches in a few lines; the milestone README holds the detail


def _solution_files(course):
    return sorted(course.solutions.glob("*/*.py"))


def test_no_solution_file_is_longer_than_a_learner_reads_at_once(course):
    long = {str(p.relative_to(course.root)): n for p in _solution_files(course)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern (≤ {MAX_LINES} lines each): {long}"


def test_each_task_is_one_block_that_never_cuts_a_class(course):
    """One `# taskNN_k:` section per task in a file, and no section comment inside a class body."""
    problems = []
    for path in _solution_files(course):
        source = path.read_text()
        classes = [(n.lineno, n.end_lineno, n.name) for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)]
        seen = []
        for number, line in enumerate(source.splitlines(), 1):
            if match := SECTION.match(line):
                task = match.group(1)
                if task in seen:
                    problems.append(f"{path.relative_to(course.root)}:{number}: a second {task} section")
                seen.append(task)
                problems += [f"{path.relative_to(course.root)}:{number}: the {task} section cuts class {name}"
                             for first, last, name in classes if first < number <= last]
    assert not problems, "\n".join(problems)


def test_docstrings_of_learner_functions_teach_in_a_few_lines(course):
    long = []
    for path in _solution_files(course):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "### BEGIN SOLUTION" in \
                    ast.get_source_segment(source, node):
                doc = ast.get_docstring(node, clean=True) or ""
                if len(doc.splitlines()) > MAX_DOCSTRING:
                    long.append(f"{path.relative_to(course.root)}:{node.lineno} {node.name}: "
                                f"{len(doc.splitlines())} lines")
    assert not long, f"docstrings over {MAX_DOCSTRING} lines (move the detail to the README):\n" + "\n".join(long)


def test_plots_leave_a_notebooks_backend_alone(course):
    """matplotlib's object API (Figure) only: `matplotlib.use` or pyplot's global state would switch a learner's
    notebook to another backend, or keep figures alive in it."""
    found = [f"{p.relative_to(course.root)}:{n}: {line.strip()}"
             for folder in (course.solutions, course.milestones_dir, course.root / "grading" / "llmfs")
             for p in sorted(folder.rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if PYPLOT.search(line)]
    assert not found, "\n".join(found)
