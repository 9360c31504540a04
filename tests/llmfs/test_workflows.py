"""The CI workflow templates parse, and every command they run exists: `llmfs` subcommands and flags are parsed
by llmfs's own argument parser, paths they name exist, and actions come from GitHub's own `actions/`."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from llmfs.cli import build_parser
from llmfs.course import Course

WORKFLOWS = ("learner.yml", "instructor.yml")


def _steps(course: Course, name: str) -> list[dict]:
    workflow = yaml.safe_load((course.root / ".github" / "workflows" / name).read_text())
    assert workflow.get(True) or workflow.get("on"), f"{name} has no trigger"
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _commands(script: str) -> list[list[str]]:
    """Each simple command of a `run:` script, tokenized as a shell would (quotes kept together, operators
    such as `|`, `&&` and `;` separating commands, redirections dropped, variables left as written)."""
    commands = []
    for line in script.replace("$GITHUB_STEP_SUMMARY", "summary.md").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.commenters = "#"
        lexer.wordchars += "$/{}:"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in (";", "|", "&&", "||", ";;"):
                if words and words[0] not in ("done", "do", "mkdir", "cp", "cat", "git", "echo"):
                    commands.append(words)
                words = []
            elif words and words[-1] in (">", ">>", "<"):
                words.pop()  # a redirection and its file
            else:
                words.append(token)
    return commands


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_llmfs_command_parses(course: Course, name: str) -> None:
    llmfs_commands = [c for step in _steps(course, name) if "run" in step for c in _commands(step["run"])
                      if c[0] == "llmfs"]
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
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step["uses"]
        for command in _commands(step.get("run", "")):
            if command[0] == "pytest":
                paths = [w for w in command[1:] if not w.startswith("-")]
                assert all((course.root / p).exists() for p in paths), command
            elif command[:3] == ["python", "-m", "pip"]:
                assert command[3] == "install"
            else:
                assert command[0] in ("llmfs", "grep", "while"), f"{name}: unexpected command {command}"
                if command[0] == "while":
                    assert command[1:3] == ["read", "-r"], command


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
