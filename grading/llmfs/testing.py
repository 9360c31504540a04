"""Helpers for test files (public and hidden): how a test gets the code under test."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from types import ModuleType

import pytest

from llmfs.course import load_course
from llmfs.fsutil import display_path
from llmfs.loader import ImplementationError, implementation, implementation_root


def implementation_fixture(milestone: str, module: str,
                           default_root: str | os.PathLike[str] | None = None) -> Callable[[], ModuleType]:
    """A module-scoped fixture that loads `module` of `milestone` through the one loader.

    Loading in a fixture (not at import) means a learner file that does not compile, loops or exhausts
    memory fails each test with one clear line instead of breaking collection. Public tests pass their
    own milestones/ folder as `default_root`; hidden tests default to solutions/.
    """

    @pytest.fixture(scope="module")
    def code_under_test() -> ModuleType:
        try:
            return implementation(milestone, module, default_root)
        except pytest.fail.Exception as e:  # pytest-timeout fired while the module was being imported
            if not str(e).startswith("Timeout"):
                raise
            path = implementation_root(default_root) / milestone / f"{module}.py"
            raise ImplementationError(
                f"{display_path(path)}: importing it did not finish within the per-test time limit; "
                "is there an infinite loop or heavy work at module level?"
            ) from None

    return code_under_test


def thresholds(milestone: str) -> dict[str, float]:
    """The milestone's pass thresholds from course.toml."""
    return load_course().milestone(milestone).thresholds


def raise_if_stub(output: str) -> None:
    """For tests that run a learner's script in a subprocess: if its output shows it stopped at a stub, raise
    that NotImplementedError here, so the test fails the way a stub called in-process does (one line naming
    the function to write, graded as "not started") instead of as an opaque non-zero exit."""
    if stubs := re.findall(r"NotImplementedError: (Milestone \d\d: write .*)", output):
        raise NotImplementedError(stubs[-1])


def race(runs: dict[str, Callable[[], object]], fast: str, slow: str, minimum: float,
         benchmark, attempts: int = 2, min_attempts: int = 1) -> tuple[float, dict[str, object]]:
    """Best CPU time of each run, interleaved, up to `attempts` rounds, on one thread: (time of `slow` / time of
    `fast`, the outputs). CPU time, not wall time: on a busy machine a run of a few milliseconds can lose a whole
    time slice to another process, and the ratio would depend on the load. After `min_attempts` rounds, a later
    round is skipped once the ratio clears `minimum` by 10% (noise only ever adds time; a first round also pays for
    warming up the allocator, so cheap runs ask for two), and also once it is below a third of `minimum`: no noise
    explains that after `min_attempts` rounds, and a slow submission should lose the test's points, not run into its
    time limit.
    `benchmark` is pytest-benchmark's fixture: the race runs once under it, and the times go to its extra_info."""
    import torch

    best = dict.fromkeys(runs, float("inf"))
    outputs: dict[str, object] = {}

    def rounds() -> None:
        for attempt in range(attempts):
            for name in runs if attempt % 2 == 0 else reversed(list(runs)):
                start = time.process_time()
                outputs[name] = runs[name]()
                best[name] = min(best[name], time.process_time() - start)
            ratio = best[slow] / max(best[fast], 1e-9)  # a clock that saw no CPU time is not the learner's fault
            if attempt + 1 >= min_attempts and (ratio < minimum / 3 or ratio >= 1.1 * minimum):
                break

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.pedantic(rounds, rounds=1, iterations=1)
    finally:
        torch.set_num_threads(threads)
    benchmark.extra_info.update({f"{name}_s": seconds for name, seconds in best.items()})
    ratio = best[slow] / max(best[fast], 1e-9)
    benchmark.extra_info["ratio"] = ratio
    return ratio, outputs


def record_threshold(benchmark, key: str, limit: float, figure: float) -> float:
    """Note in the benchmark JSON which course.toml threshold `figure` was checked against, and the margin: how
    far the figure could worsen before failing (figure / limit for a `_min` key, limit / figure for `_max`).
    `python -m llmfs.margins` reads these back over repeated runs."""
    if not key.endswith(("_min", "_max")):
        raise ValueError(f"threshold {key!r}: its name must end in _min or _max")
    margin = figure / limit if key.endswith("_min") else limit / figure
    benchmark.extra_info.update({"threshold": key, "limit": limit, "figure": figure, "margin": margin})
    return margin
