"""`llmfs autograder`: the Gradescope bundle, built and then run the way Gradescope runs it, in a folder laid out
like /autograder (source/, submission/, results/): setup.sh once, run_autograder per submission."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import psutil
import pytest

from llmfs.course import SOLUTION_BEGIN, Course

SCHEMA = json.loads((Path(__file__).parent / "gradescope-results.schema.json").read_text())
DATA = os.environ.get("LLMFS_DATA", "")


def _build(llmfs, tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "autograder.zip"
    proc = llmfs("autograder", *args, "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_bundle_holds_what_gradescope_runs_and_not_the_answer_key(course: Course, llmfs, tmp_path: Path) -> None:
    with zipfile.ZipFile(_build(llmfs, tmp_path, "02")) as bundle:
        names = set(bundle.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in bundle.infolist()}
        texts = {n: bundle.read(n).decode("utf-8", "replace") for n in names if n.endswith(".py")}
    for script in ("setup.sh", "run_autograder"):
        assert script in names, f"{script} must be at the zip's root, where Gradescope looks"
        assert modes[script] & stat.S_IXUSR, f"{script} is not executable"
    assert "course/tests/02/test_model.py" in names and not any(n.startswith("course/tests/01/") for n in names)
    assert "course/solutions/01/bigram.py" in names, "02 builds on the reference 01"
    solved = {p.name for p in (course.solutions / "02").glob("*.py") if SOLUTION_BEGIN in p.read_text()}
    leaked = [n for n in names if n.startswith("course/solutions/02/") and n.rsplit("/", 1)[1] in solved]
    assert solved and not leaked, f"the graded milestone's solutions are in the bundle: {leaked}"
    assert not [n for n, text in texts.items() if SOLUTION_BEGIN in text and "/solutions/02/" in n]
    hashes = json.loads(zipfile.ZipFile(tmp_path / "autograder.zip").read("course/stubs.json"))
    assert set(hashes["02"]) == solved, "untouched stubs are told apart by their hashes"


def test_the_bundle_is_reproducible(llmfs, tmp_path: Path) -> None:
    first = _build(llmfs, tmp_path, "01").read_bytes()
    assert _build(llmfs, tmp_path, "01").read_bytes() == first


def test_a_bundle_that_would_break_its_own_tests_is_refused(llmfs, tmp_path: Path) -> None:
    proc = llmfs("autograder", "03", "04", "--out", str(tmp_path / "a.zip"))
    assert proc.returncode == 2 and "reference 03" in proc.stderr and "llmfs autograder 04" in proc.stderr, proc.stderr
    assert not (tmp_path / "a.zip").exists()
    proc = llmfs("autograder", "01", "--visibility", "sometimes", "--out", str(tmp_path / "a.zip"))
    assert proc.returncode == 2 and "sometimes" in proc.stderr


# ----------------------------------------------------------------------------------- the /autograder run


@dataclass
class Autograder:
    root: Path  # laid out like /autograder
    setup: subprocess.CompletedProcess

    def grade(self, files: dict[str, bytes], kill_grader: bool = False) -> tuple[dict, subprocess.CompletedProcess]:
        """Put `files` in submission/, run run_autograder as Gradescope does (SIGKILLing the grader once its tests
        run, with `kill_grader`), and return results.json."""
        shutil.rmtree(self.root / "submission", ignore_errors=True)
        for name, content in files.items():
            (self.root / "submission" / name).parent.mkdir(parents=True, exist_ok=True)
            (self.root / "submission" / name).write_bytes(content)
        script = subprocess.Popen(["bash", str(self.root / "run_autograder")], cwd=self.root, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={"PATH": os.environ["PATH"], "AUTOGRADER_ROOT": str(self.root)})
        if kill_grader:
            _kill_the_grader_once_it_runs_tests(script.pid)
        stdout, stderr = script.communicate(timeout=900)
        proc = subprocess.CompletedProcess(script.args, script.returncode, stdout, stderr)
        results = json.loads((self.root / "results" / "results.json").read_text())
        jsonschema.validate(results, SCHEMA)
        return results, proc


def _arguments(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # it ended while we looked
        return []


def _runs_module(arguments: list[str], module: str) -> bool:
    return any(a == "-m" and b == module for a, b in zip(arguments, arguments[1:], strict=False))


def _kill_the_grader_once_it_runs_tests(script_pid: int) -> None:
    """SIGKILL `python -m llmfs.autograder` once a `python -m pytest` below it runs the hidden tests."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        children = {p: _arguments(p) for p in psutil.Process(script_pid).children(recursive=True)}
        graders = [p for p, arguments in children.items() if _runs_module(arguments, "llmfs.autograder")]
        if graders and any(_runs_module(arguments, "pytest") for arguments in children.values()):
            graders[0].send_signal(signal.SIGKILL)
            return
        time.sleep(0.1)
    raise AssertionError("the grader never started its tests")


def _tests_left_running(root: Path, wait_s: float = 10) -> list[int]:
    """The pids of hidden-test processes of this /autograder still alive after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = [p.pid for p in psutil.process_iter() if _runs_module(_arguments(p), "pytest")
                 and str(root) in " ".join(_arguments(p))]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="module")
def autograder(course: Course, llmfs, lent_venv, tmp_path_factory: pytest.TempPathFactory) -> Autograder:
    root = tmp_path_factory.mktemp("autograder")
    out = root.parent / f"{root.name}.zip"
    proc = llmfs("autograder", "01", "02", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as archive:
        archive.extractall(root / "source")
    for script in ("setup.sh", "run_autograder"):
        os.chmod(root / "source" / script, 0o755)
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")  # what Gradescope's image build does
    lent_venv(root / "venv", pip=True)  # torch and the rest lent: Gradescope downloads them, which takes minutes
    # setup.sh as Gradescope runs it, with two stand-ins for the internet: $LLMFS_DATA for the dataset downloads,
    # and pip's own index (TORCH_INDEX_URL="") for torch's CPU wheel index, which this machine cannot reach.
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], cwd=root / "source", capture_output=True,
                           text=True, timeout=900, env={"PATH": os.environ["PATH"], "HOME": str(root / "home"),
                                                         "AUTOGRADER_ROOT": str(root), "LLMFS_DATA": DATA,
                                                         "PYTHON": sys.executable, "TORCH_INDEX_URL": ""})
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    return Autograder(root, setup)


def _repository(course: Course, source: Path, ids: tuple[str, ...]) -> dict[str, bytes]:
    return {f"milestones/{i}/{p.name}": p.read_bytes() for i in ids for p in sorted((source / i).glob("*.py"))
            if not p.name.startswith("test_")}


@pytest.mark.slow  # about 2 minutes: setup.sh, then the reference's 01 and 02 graded
def test_setup_bakes_the_datasets_into_the_image(autograder: Autograder) -> None:
    assert (autograder.root / "source" / "datasets" / "tinyshakespeare" / "input.txt").is_file()
    assert (autograder.root / "venv" / "bin" / "llmfs").is_file()


@pytest.mark.slow
def test_the_reference_repository_gets_full_points(autograder: Autograder, course: Course) -> None:
    results, proc = autograder.grade(_repository(course, course.solutions, ("01", "02")))
    failed = [f"{t['name']}: {t.get('output', '')[:300]}" for t in results["tests"] if t["status"] != "passed"]
    assert results["score"] == 200 and not failed, (results["output"], failed, proc.stdout[-2000:])
    assert results["output_format"] == "text" and results["visibility"] == "visible"


@pytest.mark.slow
def test_untouched_stubs_uploaded_one_by_one_get_nothing(autograder: Autograder, course: Course) -> None:
    files = {p.name: p.read_bytes() for i in ("01", "02") for p in sorted((course.milestones_dir / i).glob("*.py"))
             if not p.name.startswith("test_")}
    results, _ = autograder.grade(files)
    statuses = {m["id"]: (m["score"], m["status"]) for m in results["extra_data"]["milestones"]}
    assert statuses == {"01": (0, "not started"), "02": (0, "not started")}, statuses
    assert results["score"] == 0


@pytest.mark.slow
def test_a_submission_that_kills_its_grading_process_costs_only_its_points(autograder: Autograder) -> None:
    killer = b"import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    results, _ = autograder.grade({"bigram.py": killer, "model.py": killer, "train.py": killer})
    assert results["score"] == 0 and not results["extra_data"].get("infrastructure_error"), results["output"]
    assert {m["status"] for m in results["extra_data"]["milestones"]} <= {"error", "not started"}, results["output"]


@pytest.mark.slow
def test_a_killed_grader_still_leaves_a_results_json_that_says_so(autograder: Autograder, course: Course) -> None:
    """The grader SIGKILLed while it grades (an out-of-memory kill, say): run_autograder writes results.json
    itself, saying that the failure is not the learner's."""
    results, proc = autograder.grade(_repository(course, course.solutions, ("01",)), kill_grader=True)
    assert proc.returncode == 0, "Gradescope must read results.json, not a failed script"
    assert _tests_left_running(autograder.root) == [], "the killed grader's tests outlived it"
    shutil.rmtree(autograder.root / "tmp")  # what the killed grader could not clean up: only there
    assert results["extra_data"].get("infrastructure_error") is True, results
    assert results["extra_data"]["exit_status"] == 128 + signal.SIGKILL
    assert "not your fault" in results["output"] and results["score"] == 0


@pytest.mark.slow  # needs 08's pair built (the slow run builds it first)
def test_a_bundle_for_08_ships_its_built_pair_and_finds_it(llmfs, tmp_path: Path) -> None:
    """08's draft/target pair takes minutes to train and its key hashes the references of 02-05: the bundle carries
    the pair and those references (not 08's), and inside the image the pair is found without building it."""
    with zipfile.ZipFile(_build(llmfs, tmp_path, "08")) as bundle:
        bundle.extractall(tmp_path / "source")
    assert not (tmp_path / "source" / "course" / "solutions" / "08" / "speculative.py").exists()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LLMFS_COURSE": str(tmp_path / "source" / "course"),
           "LLMFS_DATA": str(tmp_path / "source" / "datasets"), "LLMFS_CACHE": str(tmp_path / "source" / "datasets")}
    proc = subprocess.run([sys.executable, "-c", "from llmfs import data; print(data.locate('speculative-pair'))"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == str(tmp_path / "source" / "datasets" / "speculative-pair"), proc.stdout + proc.stderr


def test_files_uploaded_one_by_one_go_to_their_milestone_or_are_refused(course: Course, tmp_path: Path) -> None:
    """bigram.py goes to 01/; train.py is a module of both 02 and 05, so a flat upload for both is refused."""
    from llmfs.autograder import place_submission
    from llmfs.classroom import SubmissionError

    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "bigram.py").write_text("x = 1\n")
    (upload / "train.py").write_text("y = 2\n")
    placed = place_submission(course, upload, tmp_path / "a", [course.milestone("01"), course.milestone("02")])
    assert (placed / "01" / "bigram.py").read_text() == "x = 1\n" and (placed / "02" / "train.py").is_file()
    with pytest.raises(SubmissionError, match="train.py belongs to milestones 02 and 05"):
        place_submission(course, upload, tmp_path / "b", [course.milestone("02"), course.milestone("05")])
