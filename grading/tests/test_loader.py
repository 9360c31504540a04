"""The one loader: errors that name file and line, isolation between roots, and cross-milestone dependencies."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmfs.loader import DEPS_ROOT_ENV, ROOT_ENV, ImplementationError, implementation, load_module


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_a_syntax_error_names_file_and_line(tmp_path):
    write(tmp_path, "01/model.py", "x = 1\n\ndef f(:\n    pass\n")
    with pytest.raises(ImplementationError, match=r"01/model.py, line 3: SyntaxError"):
        load_module(tmp_path, "01", "model")


def test_an_exception_at_import_names_the_line(tmp_path):
    write(tmp_path, "01/model.py", "import math\nvalue = math.sqrt(-1)\n")
    with pytest.raises(ImplementationError, match=r"model.py, line 2: importing it raised ValueError"):
        load_module(tmp_path, "01", "model")


def test_missing_files_and_names_are_reported(tmp_path):
    with pytest.raises(ImplementationError, match=r"01/absent.py is missing"):
        load_module(tmp_path, "01", "absent")
    write(tmp_path, "01/model.py", "class Model:\n    def forward(self):\n        pass\n")
    with pytest.raises(ImplementationError, match=r"`Model.generate`, `train` are missing"):
        load_module(tmp_path, "01", "model", api=["Model", "Model.forward", "Model.generate", "train"])


def test_roots_do_not_share_modules_and_relative_imports_work(tmp_path):
    for root, value in (("a", 1), ("b", 2)):
        write(tmp_path / root, "02/parts.py", f"VALUE = {value}\n")
        write(tmp_path / root, "02/model.py", "from .parts import VALUE\n")
    a = load_module(tmp_path / "a", "02", "model")
    b = load_module(tmp_path / "b", "02", "model")
    assert (a.VALUE, b.VALUE) == (1, 2)
    assert load_module(tmp_path / "a", "02", "model") is a  # loaded once per root


def test_dependencies_come_from_the_callers_root_unless_the_grader_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv(DEPS_ROOT_ENV, raising=False)
    for root in ("learner", "reference"):
        write(tmp_path / root, "01/base.py", f"WHO = {root!r}\n")
        write(tmp_path / root, "02/user.py", "from llmfs.loader import dependency\nbase = dependency('01', 'base')\n")
    assert load_module(tmp_path / "learner", "02", "user").base.WHO == "learner"
    monkeypatch.setenv(DEPS_ROOT_ENV, str(tmp_path / "reference"))
    write(tmp_path / "learner2", "02/user.py", "from llmfs.loader import dependency\nbase = dependency('01', 'base')\n")
    assert load_module(tmp_path / "learner2", "02", "user").base.WHO == "reference"


def test_implementation_follows_the_chosen_root(course, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    assert Path(implementation("01", "bigram").__file__) == course.solutions / "01" / "bigram.py"
    monkeypatch.setenv(ROOT_ENV, str(course.milestones_dir))
    stub = implementation("01", "bigram")
    assert Path(stub.__file__) == course.milestones_dir / "01" / "bigram.py"
    with pytest.raises(NotImplementedError, match="write `CharTokenizer.__init__`"):
        stub.CharTokenizer("abc")
