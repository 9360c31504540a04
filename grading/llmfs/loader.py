"""The one loader: every test gets the code under test from here.

An *implementation root* is any folder laid out like solutions/: `ROOT/NN/module.py`. Which root is
graded is chosen once, by `pytest --impl-root ROOT` or the environment variable LLMFS_ROOT:

    solutions/    the reference (default for the hidden tests in tests/NN/)
    milestones/   the learner's workspace (default for the public tests in milestones/NN/)
    anything else with the same layout (a submission)

Folder names such as `01` are not Python identifiers, so each (root, milestone) pair becomes a synthetic
package, `llmfs_impl_<hash>.m01`. Modules inside a milestone can import each other relatively
(`from .attention import Head`), and two roots never share a module in sys.modules.

Later milestones reuse earlier ones through `dependency("05", "gpt2")`. When `llmfs grade` grades a
learner it sets LLMFS_DEPS_ROOT to the reference solutions, so a bug in the learner's 05 cannot fail
their 07. Without it (a learner's own runs), dependencies come from the same root as the caller.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import traceback
import types
from collections.abc import Iterable
from pathlib import Path

from llmfs.course import load_course
from llmfs.fsutil import display_path

ROOT_ENV = "LLMFS_ROOT"
DEPS_ROOT_ENV = "LLMFS_DEPS_ROOT"


class ImplementationError(Exception):
    """The code under test cannot be loaded. The message names the file (and line) to fix."""


def _package_name(root: Path, milestone: str) -> str:
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    return f"llmfs_impl_{digest}.m{milestone}"


def _ensure_package(root: Path, milestone: str) -> str:
    """Register the synthetic package for ROOT/milestone and return its dotted name."""
    name = _package_name(root, milestone)
    top_name = name.split(".")[0]
    if top_name not in sys.modules:
        top = types.ModuleType(top_name, f"implementation root {root}")
        top.__path__ = []
        sys.modules[top_name] = top
    if name not in sys.modules:
        package = types.ModuleType(name, f"milestone {milestone} of {root}")
        package.__path__ = [str(root / milestone)]
        package.__package__ = name
        sys.modules[name] = package
    return name


def _line_in(error: BaseException, path: Path) -> int | None:
    """The last line of `path` in the traceback of `error`: where the learner's file went wrong."""
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return lines[-1] if lines else None


def _check_api(module: types.ModuleType, names: Iterable[str], path: Path) -> None:
    missing = []
    for dotted in names:
        obj: object = module
        for part in dotted.split("."):
            if not hasattr(obj, part):
                missing.append(dotted)
                break
            obj = getattr(obj, part)
    if missing:
        listed = ", ".join(f"`{m}`" for m in missing)
        raise ImplementationError(
            f"{display_path(path)}: {listed} {'is' if len(missing) == 1 else 'are'} missing. The tests need "
            "every name the stub defines; restore the definition (keep its name and signature)."
        )


def load_module(root: str | os.PathLike[str], milestone: str, module: str,
                api: Iterable[str] = ()) -> types.ModuleType:
    """Import `ROOT/milestone/module.py` and check it defines every name in `api`.

    Raises ImplementationError, with file and line, when the file is missing, does not compile, raises
    while importing, or lacks a name the tests need.
    """
    root = Path(root).resolve()
    path = root / milestone / f"{module}.py"
    if not path.is_file():
        raise ImplementationError(f"{display_path(path)} is missing: milestone {milestone} needs `{module}.py`")
    name = f"{_ensure_package(root, milestone)}.{module}"
    if name in sys.modules:
        return sys.modules[name]
    source = path.read_text(encoding="utf-8", errors="replace")
    try:
        compile(source, str(path), "exec")
    except SyntaxError as e:
        raise ImplementationError(f"{display_path(path)}, line {e.lineno}: SyntaxError: {e.msg}") from None
    try:
        loaded = importlib.import_module(name)
    except Exception as e:  # anything the learner's module-level code raises, MemoryError included
        sys.modules.pop(name, None)
        line = _line_in(e, path)
        where = f"{display_path(path)}, line {line}" if line else display_path(path)
        raise ImplementationError(f"{where}: importing it raised {type(e).__name__}: {e}") from e
    _check_api(loaded, api, path)
    return loaded


def implementation_root(default: str | os.PathLike[str] | None = None) -> Path:
    """The root under test: $LLMFS_ROOT (set by `--impl-root`), else `default`, else solutions/."""
    if chosen := os.environ.get(ROOT_ENV):
        return Path(chosen).resolve()
    if default is not None:
        return Path(default).resolve()
    return load_course().solutions


def implementation(milestone: str, module: str,
                   default_root: str | os.PathLike[str] | None = None) -> types.ModuleType:
    """The module under test, with the milestone's declared API checked (see course.toml)."""
    api = load_course().milestone(milestone).api.get(module, ())
    return load_module(implementation_root(default_root), milestone, module, api)


def dependency(milestone: str, module: str) -> types.ModuleType:
    """An earlier milestone's module, for code in a later milestone (07 uses 05's GPT-2).

    Comes from $LLMFS_DEPS_ROOT when set (the grader points it at the reference solutions) and the file is
    there, else from the root under grading when the reference is withheld (an autograder bundle that grades
    both milestones), else from the implementation root the calling file lives in.
    """
    if (chosen := os.environ.get(DEPS_ROOT_ENV)) and (Path(chosen) / milestone / f"{module}.py").is_file():
        root = Path(chosen)
    elif chosen and (graded := os.environ.get(ROOT_ENV)):  # a reference withheld (an autograder bundle)
        root = Path(graded)
    else:
        caller = sys._getframe(1).f_code.co_filename  # the file that asked; cheaper than inspect.stack()
        root = Path(caller).resolve().parents[1]
    api = load_course().milestone(milestone).api.get(module, ())
    return load_module(root, milestone, module, api)
