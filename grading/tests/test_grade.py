"""`llmfs grade`: scores, statuses, limits and the Gradescope results.json, on the real milestone 01 and on
a two-milestone toy course (fast, no torch) for what needs more than one milestone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from llmfs.course import load_course

# Gradescope's autograder results format, as its specification publishes it, written as a JSON Schema.
GRADESCOPE_SCHEMA = json.loads((Path(__file__).parent / "gradescope-results.schema.json").read_text())


COURSE_LIMIT_S = sum(m.time_limit_s for m in load_course().milestones)  # the grader's own wall-clock limits
BUILD_ALLOWANCE_S = 1800  # building 08's pair first, when the default run's background build has not finished


@pytest.mark.slow  # about 7 minutes: the whole course's hidden tests and benchmarks, as a learner's grade runs them
@pytest.mark.timeout(COURSE_LIMIT_S + BUILD_ALLOWANCE_S)
def test_reference_is_complete_with_full_points(course, grade):
    # every milestone of the manifest (about 7 minutes, and 08's pair built if it is not yet)
    graded = grade(course.solutions, timeout=COURSE_LIMIT_S + BUILD_ALLOWANCE_S)
    proc, results = graded.proc, graded.results
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert sorted(graded.milestones) == [m.id for m in course.milestones]
    failed = [f"{t['name']}: {t.get('output', '')[:500]}" for t in results["tests"] if t["status"] != "passed"]
    assert not failed, "hidden tests failing on the reference:\n" + "\n".join(failed)
    for m in course.milestones:
        summary = graded.milestones[m.id]
        assert summary["status"] == "complete", summary
        assert summary["score"] == summary["max_score"] == m.points  # the manifest's points
        tests = [t for t in results["tests"] if any(tag.startswith(f"task{m.id}_") for tag in t["tags"])]
        assert sum(t["score"] for t in tests) == m.points
    assert results["score"] == sum(t["score"] for t in results["tests"]) == sum(m.points for m in course.milestones)
    assert all(t["status"] == "passed" and t["max_score"] > 0 for t in results["tests"])
    assert len({t["number"] for t in results["tests"]}) == len(results["tests"])
    assert {e["name"] for e in results["leaderboard"]} == {
        "01 bigram val loss", "01 count_bigrams speed-up over a Python loop", "02 training step time / torch's",
        "03 training time / tiktoken's educational trainer", "04 training speed-up over 03 (corpus.en, 500)",
        "04 training time / tokenizers' (cs336-bpe, 500)", "04 training time / tokenizers' (tinyshakespeare, 1024)",
        "04 16K vocabulary on 100 MB: seconds", "04 encoding throughput / tiktoken's",
        "05 tiny preset: training tokens/s", "05 tiny preset: validation loss", "05 forward time / Hugging Face's",
        "05 training step time / Hugging Face's", "05 flash attention speed-up at 1,024 tokens",
        "05 ShardLoader time / numpy memmap's", "06 processor chain time / HF's",
        "06 uncached generation tokens/s / HF's (124M)", "07 cached decoding tokens/s / uncached (124M, 256 tokens)",
        "07 prefill tokens/s / HF's (124M, 512 tokens)", "07 bf16 cached decoding tokens/s / HF's (124M)",
        "07 bf16 / fp32 cached tokens/s (124M)", "07 batch 8 / batch 1 tokens/s (124M, bf16)",
        "08 tokens per target pass", "08 greedy speed-up (bf16)", "08 sampled speed-up",
        "08 speed over HF assisted generation"}
    orders = {e["name"]: e["order"] for e in results["leaderboard"]}
    assert orders["04 training speed-up over 03 (corpus.en, 500)"] == orders["05 tiny preset: training tokens/s"] \
        == orders["06 uncached generation tokens/s / HF's (124M)"] \
        == orders["07 cached decoding tokens/s / uncached (124M, 256 tokens)"] \
        == orders["08 greedy speed-up (bf16)"] == orders["08 tokens per target pass"] \
        == orders["01 count_bigrams speed-up over a Python loop"] \
        == orders["05 flash attention speed-up at 1,024 tokens"] == "desc", "higher is better"
    assert orders["05 forward time / Hugging Face's"] == orders["03 training time / tiktoken's educational trainer"] \
        == "asc", "a time ratio is better when lower"
    assert orders["06 processor chain time / HF's"] == "asc", "a time is better when lower"
    rows = [line for line in proc.stdout.splitlines() if "complete" in line]  # the terminal table
    assert all(any(f" {m.id} " in row and f"{m.points:g}/{m.points:g}" in row for row in rows)
               for m in course.milestones), proc.stdout


def test_reference_flag_grades_solutions(llmfs):
    proc = llmfs("grade", "--reference", "--milestone", "01")
    assert proc.returncode == 0 and "complete" in proc.stdout and "100/100" in proc.stdout


def test_stubs_are_not_started_without_traceback_spam(course, grade):
    graded = grade(course.milestones_dir, "--milestone", "01")
    proc, results, summary = graded.proc, graded.results, graded.milestones["01"]
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert summary["status"] == "not started" and summary["score"] == 0
    assert "write `CharTokenizer.__init__` in milestones/01/bigram.py" in summary["message"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert all(t["output"].startswith("NotImplementedError: Milestone 01: write `") for t in results["tests"])


def _break(root: Path, old: str, new: str) -> None:
    path = root / "01" / "bigram.py"
    source = path.read_text()
    assert old in source
    path.write_text(source.replace(old, new, 1))


ANCHOR = "from torch.nn import functional as F\n"


FAULTS = {  # name: (text to replace, replacement, expected status, words the message must contain)
    "syntax error": ("def get_batch(", "def get_batch((", "error", ["bigram.py, line", "SyntaxError"]),
    "module-level infinite loop": (ANCHOR, ANCHOR + "while True:\n    pass\n", "error", ["did not finish"]),
    "30 GB tensor at import": (ANCHOR, ANCHOR + "_hog = torch.ones(30 * 2**30 // 4)\n", "error", ["allocate"]),
    "30 GB bytearray at import": (ANCHOR, ANCHOR + "_hog = bytearray(30 * 2**30)\n", "error", ["MemoryError"]),
    "missing function": ("def count_bigrams(", "def count_bigrams_renamed(", "error", ["`count_bigrams` is missing"]),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_broken_milestone_is_an_error_with_zero_points(copy_of_solutions, grade, fault):
    old, new, status, words = FAULTS[fault]
    root = copy_of_solutions("01")
    _break(root, old, new)
    graded = grade(root, "--milestone", "01", "--test-timeout", "4")
    jsonschema.validate(graded.results, GRADESCOPE_SCHEMA)
    proc, summary = graded.proc, graded.milestones["01"]
    assert (summary["status"], summary["score"]) == (status, 0), summary
    for word in words:
        assert word in summary["message"], summary["message"]
    assert "Traceback" not in proc.stdout


def test_a_loop_inside_one_function_costs_only_its_tests(copy_of_solutions, grade):
    root = copy_of_solutions("01")
    _break(root, "    _check_at_least(\"the number of ids bigram_nll scores\"",
           "    while True:\n        pass\n    _check_at_least(\"the number of ids bigram_nll scores\"")
    graded = grade(root, "--milestone", "01", "--test-timeout", "15")  # roomy, for a busy machine
    results, summary = graded.results, graded.milestones["01"]
    assert summary["status"] == "timeout"
    failed = [t for t in results["tests"] if t["status"] == "failed"]
    assert "01 Character bigram: bigram_nll equals -mean log P over the validation bigrams, and beats uniform by " \
           "far" in [t["name"] for t in failed]
    assert all("Timeout" in t["output"] for t in failed), failed  # only the tests that call bigram_nll lose points:
    assert not {"task01_1", "task01_3"} & {tag for t in failed for tag in t["tags"]}, failed  # no tokenizer or model
    assert summary["score"] == 100 - sum(t["max_score"] for t in failed)


def test_the_wall_clock_limit_kills_the_milestone_and_keeps_finished_results(copy_of_solutions, grade):
    root = copy_of_solutions("01")
    # every test that trains on Shakespeare now sleeps; the ones before it have already been scored
    sleep = "    import time\n    time.sleep(600)\n"
    _break(root, "    model.train()\n    optimizer", sleep + "    model.train()\n    optimizer")
    graded = grade(root, "--milestone", "01", "--time-limit", "25", "--test-timeout", "600")
    results, summary = graded.results, graded.milestones["01"]
    assert summary["status"] == "timeout" and summary["seconds"] < 60
    assert 0 < summary["score"] < 100
    outputs = [t["output"] for t in results["tests"] if t["status"] == "failed"]
    assert any(o.startswith("interrupted while running this test") for o in outputs)
    assert all("time limit of 25 s" in o for o in outputs)


# ---------------------------------------------------------------------------------- a two-milestone toy course

TOY_MANIFEST = """
[course]
title = "toy"
[[milestone]]
id = "01"
title = "Adder"
modules = ["adder"]
points = 10
time_limit_s = 60
test_timeout_s = 10
memory_mb = 2048
[milestone.api]
adder = ["add"]
[milestone.tasks]
task01_1 = "add"
[[milestone]]
id = "02"
title = "Multiplier"
modules = ["multiplier"]
builds_on = ["01"]
points = 6
time_limit_s = 60
test_timeout_s = 10
memory_mb = 2048
[milestone.tasks]
task02_1 = "multiply"
"""

TOY_TEST_01 = """
import pytest
from llmfs.testing import implementation_fixture
adder = implementation_fixture("01", "adder")

@pytest.mark.task01_1
@pytest.mark.points(4)
def test_small(adder):
    assert adder.add(2, 3) == 5

@pytest.mark.task01_1
@pytest.mark.points(6)
def test_negative(adder):
    assert adder.add(-2, -3) == -5
"""

TOY_TEST_02 = """
import pytest
from llmfs.testing import implementation_fixture
multiplier = implementation_fixture("02", "multiplier")

@pytest.mark.task02_1
@pytest.mark.points(3)
def test_first(multiplier):
    assert multiplier.mul(3, 4) == 12

@pytest.mark.task02_1
@pytest.mark.points(3)
def test_second(multiplier):
    assert multiplier.mul(0, 4) == 0
"""

MULTIPLIER = """
from llmfs.loader import dependency
adder = dependency("01", "adder")

def mul(a, b):
    total = 0
    for _ in range(a):
        total = adder.add(total, b)
    return total
"""


@pytest.fixture
def toy_course(tmp_path: Path) -> Path:
    course = tmp_path / "course"
    files = {
        "course.toml": TOY_MANIFEST,
        "pyproject.toml": '[tool.pytest.ini_options]\naddopts = "--strict-markers --import-mode=importlib"\n',
        "solutions/01/adder.py": "def add(a, b):\n    return a + b\n",
        "solutions/02/multiplier.py": MULTIPLIER,
        "tests/01/test_adder.py": TOY_TEST_01,
        "tests/02/test_multiplier.py": TOY_TEST_02,
    }
    for name, text in files.items():
        (course / name).parent.mkdir(parents=True, exist_ok=True)
        (course / name).write_text(textwrap.dedent(text))
    return course


@pytest.fixture
def toy_grade(toy_course, grade, tmp_path):
    """toy_grade({"01/adder.py": source, ...}) grades that learner root in the toy course."""

    def run(submission: dict[str, str]) -> dict[str, dict]:
        root = tmp_path / "learner"
        for name, text in submission.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        graded = grade(root, cwd=toy_course)
        jsonschema.validate(graded.results, GRADESCOPE_SCHEMA)
        return graded.milestones

    return run


def test_an_error_in_one_milestone_does_not_stop_the_next(toy_grade):
    report = toy_grade({"01/adder.py": "def add(a, b)\n    return a + b\n", "02/multiplier.py": MULTIPLIER})
    assert (report["01"]["status"], report["01"]["score"]) == ("error", 0)
    assert "adder.py, line 1: SyntaxError" in report["01"]["message"]
    # 02 reuses 01 through dependency(): graded against the reference 01, the learner's broken 01 costs nothing here
    assert (report["02"]["status"], report["02"]["score"]) == ("complete", 6)


def test_partial_credit_and_a_crash_mid_run(toy_grade):
    crashing = "import os\n\ndef mul(a, b):\n    if b == 4 and a == 0:\n        os._exit(0)\n    return a * b\n"
    report = toy_grade({"01/adder.py": "def add(a, b):\n    return a + abs(b)\n", "02/multiplier.py": crashing})
    assert (report["01"]["status"], report["01"]["score"]) == ("partial", 4)
    assert (report["02"]["status"], report["02"]["score"]) == ("error", 3)  # the first test passed before the crash
    assert "test_second" in report["02"]["message"] or "interrupted" in report["02"]["message"]


def test_a_missing_milestone_folder_is_an_error_not_a_crash(toy_grade):
    report = toy_grade({"01/adder.py": "def add(a, b):\n    return a + b\n"})
    assert report["01"]["status"] == "complete"
    assert (report["02"]["status"], report["02"]["score"]) == ("error", 0)
    assert "multiplier.py is missing" in report["02"]["message"]


def test_the_grader_itself_failing_exits_non_zero(llmfs, tmp_path):
    assert llmfs("grade", str(tmp_path / "nowhere")).returncode == 2
    unknown = llmfs("grade", "--reference", "--milestone", "99")
    assert unknown.returncode == 2 and "no milestone '99'" in unknown.stderr


def test_verbose_lists_each_failed_test_with_its_message(toy_course, grade, tmp_path):
    root = tmp_path / "learner"
    (root / "01").mkdir(parents=True)
    (root / "01" / "adder.py").write_text("def add(a, b):\n    return a + abs(b)\n")
    graded = grade(root, "--milestone", "01", "--verbose", cwd=toy_course)
    assert "✗ 01 test_negative (6 pts)" in graded.proc.stdout
    assert "AssertionError: assert 1 == -5" in graded.proc.stdout
    assert "test_small" not in graded.proc.stdout


@pytest.mark.parametrize("flag,value", [("--time-limit", "-3"), ("--test-timeout", "0"), ("--memory-mb", "lots")])
def test_limits_must_be_positive_numbers(llmfs, flag, value):
    proc = llmfs("grade", flag, value)
    assert proc.returncode == 2 and f"argument {flag}: expected a positive" in proc.stderr


def test_a_hidden_test_file_that_cannot_be_collected_is_reported(toy_course, grade, tmp_path):
    (toy_course / "tests" / "01" / "test_broken.py").write_text("import nonexistent_module\n")
    root = tmp_path / "learner"
    (root / "01").mkdir(parents=True)
    (root / "01" / "adder.py").write_text("def add(a, b):\n    return a + b\n")
    summary = grade(root, "--milestone", "01", cwd=toy_course).milestones["01"]
    assert summary["status"] == "error" and summary["score"] == 10  # the tests that ran still count
    assert "tests/01/test_broken.py could not be collected" in summary["message"]
    assert "nonexistent_module" in summary["message"]


def test_a_dataset_the_grader_cannot_get_stops_it_before_any_test(toy_course, llmfs, tmp_path):
    manifest = toy_course / "course.toml"
    manifest.write_text(manifest.read_text().replace('modules = ["adder"]', 'modules = ["adder"]\ndatasets = ["nope"]'))
    proc = llmfs("grade", "--reference", cwd=toy_course)
    assert proc.returncode == 2
    assert "cannot grade without dataset 'nope'" in proc.stderr and "Grades for" not in proc.stdout


def test_declared_datasets_are_fetched_once_in_the_parent(course, monkeypatch):
    from llmfs import data, grader

    asked = []
    monkeypatch.setattr(data, "fetch", lambda name, **kw: asked.append(name))
    monkeypatch.setattr(grader, "grade_milestone", lambda *a, **kw: None)
    grader.grade(course, course.solutions, ["01", "01"])
    assert asked == ["tinyshakespeare"]


def test_a_built_dataset_is_built_just_before_its_milestone_and_never_for_untouched_stubs(course, monkeypatch):
    """08's pair takes minutes to train: grading untouched stubs never builds it, and otherwise it is built after
    the milestones before 08 have been graded, not before the first one"""
    from llmfs import data, grader

    events = []
    monkeypatch.setattr(data, "fetch", lambda name, **kw: events.append(name))
    monkeypatch.setattr(grader, "grade_milestone", lambda course, m, *a, **kw: events.append(f"graded {m.id}"))
    grader.grade(course, course.milestones_dir, ["07", "08"])
    assert "speculative-pair" not in events, f"untouched stubs made the grader build the pair: {events}"
    events.clear()
    grader.grade(course, course.solutions, ["07", "08"])
    assert events == ["graded 07", "speculative-pair", "graded 08"], events


CPU_TESTS = """
import time

def test_spins():
    while True:
        pass

def test_waits():
    time.sleep(2.5)

def test_spins_in_torch_threads():
    import torch
    a = torch.randn(800, 800)
    while True:
        a @ a
"""


def test_the_per_test_limit_counts_cpu_time_not_waiting(tmp_path):
    """--cpu-timeout: a test that computes past its CPU-seconds fails as a timeout (every thread counts); a test that
    waits longer than that, as a test does on a busy machine, passes."""
    (tmp_path / "test_cpu.py").write_text(CPU_TESTS)
    results = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pytest", "test_cpu.py", "-p", "no:randomly", "--cpu-timeout", "1",
                           "--llmfs-results", str(results), "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    events = {e["nodeid"].split("::")[1]: e for e in map(json.loads, results.read_text().splitlines())
              if e["event"] == "result"}
    assert set(events) == {"test_spins", "test_waits", "test_spins_in_torch_threads"}, proc.stdout
    assert events["test_waits"]["outcome"] == "passed" and events["test_waits"]["cpu"] < 0.5
    for name in ("test_spins", "test_spins_in_torch_threads"):
        assert (events[name]["outcome"], events[name]["kind"]) == ("failed", "timeout"), events[name]
        assert "used more than 1 CPU-seconds" in events[name]["message"]
        # The kernel's profiling timer and process_time() count CPU time a few scheduler ticks apart on a busy machine
        assert 0.9 <= events[name]["cpu"] < 5, events[name]


LIST_TESTS = """
def test_ids():
    ids = list(range(5000))
    assert ids[:2499] + [0] + ids[2500:] == ids, "encode: id 2499 differs"
"""


def test_a_failing_list_comparison_is_explained_the_same_in_ci(tmp_path):
    """With CI set, pytest explains `assert a == b` on lists with a full difflib diff, which is quadratic in their
    length (240 CPU-seconds for 04's id lists, so a wrong id became a timeout). The plugin hides CI from the session:
    the explanation is the short one a laptop gives, and a results line says the same in CI as outside it."""
    (tmp_path / "test_ids.py").write_text(LIST_TESTS)
    messages = {}
    for ci in ("", "true"):
        results = tmp_path / f"results{ci}.jsonl"
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "BUILD_NUMBER")} | ({"CI": ci} if ci else {})
        proc = subprocess.run([sys.executable, "-m", "pytest", "test_ids.py", "-p", "no:randomly", "-q",
                               "-p", "no:cacheprovider", "--llmfs-results", str(results)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert "Full diff" not in proc.stdout, f"CI={ci!r}: pytest printed a full diff:\n{proc.stdout[:2000]}"
        (event,) = [e for e in map(json.loads, results.read_text().splitlines()) if e["event"] == "result"]
        assert event["outcome"] == "failed" and "id 2499 differs" in event["message"], event
        messages[ci] = event["message"]
    assert messages[""] == messages["true"], f"the message depends on CI:\n{messages['']}\n---\n{messages['true']}"


def test_untouched_stubs_fail_each_test_before_its_fixtures_run(course):
    """On untouched stubs every hidden test fails at once on the stub of the function it needs (--llmfs-not-started):
    no model is built and no torchrun started first, so each test costs next to no CPU time. Without the flag,
    05's DDP test spends seconds starting processes before it reaches a stub."""
    from llmfs import grader, todo

    m = course.milestone("05")
    result = grader.grade_milestone(course, m, course.milestones_dir.resolve(), not_started=True)
    assert result.status == grader.NOT_STARTED and result.score == 0
    assert result.tests and all(t.kind == "stub" for t in result.tests), [t for t in result.tests if t.kind != "stub"]
    assert max(t.cpu for t in result.tests) < 0.5, max(result.tests, key=lambda t: t.cpu)
    functions = {name for _, _, names in todo.stubs_left(course.milestones_dir, m) for name in names}
    assert all(any(f"write `{name}`" in t.message for name in functions) for t in result.tests)
