"""`llmfs grade-all`: grade a whole class, each submission in isolation, resumably.

    SUBMISSIONS/            one entry per learner: a folder (a git work tree or not), a bare git
      ada/                  repository (`ada.git/`), a git bundle (`ada.bundle`) or a zip file (`ada.zip`)
      grace.zip
    OUT/                    (default ./grades)
      submissions/NAME.json one record per learner: content hash, per-milestone points, metrics, messages
      feedback/NAME.json    Gradescope's results.json for that learner
      leaderboard.md|json|html, grades.csv, gradebook.db   (see llmfs.leaderboard)

For each submission, in a private temporary folder:
1. its files are unpacked (regular files only: no symlinks, nothing outside the folder, size-capped);
2. a fresh copy of the instructor's course is made from a snapshot taken once at the start (hidden tests,
   solutions, course.toml, pytest settings and the grading code itself, which the child imports first);
3. `llmfs.grader.grade` runs each milestone in a jail (llmfs.jail) that hides SUBMISSIONS, OUT, the run's
   other folders and the instructor's originals, with no network;
4. afterwards the copy is hashed again: a submission that edited its copy of the tests or the grader is
   marked `tampered`.
The parent writes the record atomically, then the leaderboards. A record whose key (the submission's
content hash, the grader's fingerprint, the milestones and limits) matches is reused, so a killed run picks
up where it stopped; `--force` regrades. Anything that goes wrong with one submission becomes that
submission's error, never another's.

With `--shard I/N` (several machines, one share of the class each) only the learners with
`shard_of(name, N) == I` are graded, their records and feedback written, and OUT/shard.json lists them with
their keys; no leaderboard, CSV or gradebook is written (it would hold a share of the class): `llmfs
merge-grades` makes them from the N folders (llmfs.shards, which also has the arithmetic for 1,000 learners).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

from llmfs.course import GRADER_COPY, Course, load_course
from llmfs.fsutil import atomic_write_text
from llmfs.grader import ERROR, TAMPERED, GraderError, MilestoneResult, Walls, fetch_datasets, grade
from llmfs.report import gradescope

MAX_FILES, MAX_BYTES = 20_000, 200 * 2**20  # per submission, unpacked
SKIPPED_DIRS = {".git", "__pycache__", ".venv", "venv", "node_modules", ".ipynb_checkpoints", ".pytest_cache"}
RECORD_VERSION = 1
RUN_PREFIX = "llmfs-grade-all-"
MANIFEST = "shard.json"  # what a `grade-all --shard I/N` run graded, for `merge-grades` (llmfs.shards)


class SubmissionError(Exception):
    """A submission that cannot be unpacked (corrupt zip, too large, not a folder): costs that learner only."""


@dataclass(frozen=True)
class Submission:
    name: str  # the learner: the entry's name without .zip/.git/.bundle
    path: Path
    kind: str  # folder / git / bundle / zip / unknown


def discover(folder: Path) -> list[Submission]:
    """Every entry of `folder`, sorted by name; hidden entries (.name) are ignored."""
    if not folder.is_dir():
        raise GraderError(f"submissions folder {folder} does not exist")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and (entry / "HEAD").is_file() and (entry / "objects").is_dir():
            found.append(Submission(entry.name.removesuffix(".git"), entry, "git"))
        elif entry.is_dir():
            found.append(Submission(entry.name, entry, "folder"))
        elif entry.suffix == ".zip":
            found.append(Submission(entry.stem, entry, "zip"))
        elif entry.suffix == ".bundle":
            found.append(Submission(entry.stem, entry, "bundle"))
        else:
            found.append(Submission(entry.name, entry, "unknown"))
    names = [s.name for s in found]
    return [s if names.count(s.name) == 1 else Submission(s.path.name, s.path, s.kind) for s in found]


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) that grades learner `name`: a stable hash of the name, not its place in the roster,
    so a learner who joins or leaves moves nobody else (each shard keeps reusing its cached records)."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:16], 16) % count + 1


# ------------------------------------------------------------------------------------------ unpacking


def _check_budget(files: int, size: int, where: str) -> None:
    if files > MAX_FILES:
        raise SubmissionError(f"{where} has more than {MAX_FILES:,} files")
    if size > MAX_BYTES:
        raise SubmissionError(f"{where} is larger than {MAX_BYTES // 2**20} MB")


def _regular_files(root: Path) -> Iterable[tuple[Path, os.stat_result]]:
    """Every regular file below `root`, in a fixed order, with its lstat; symlinks (to the reference solutions,
    say) are never followed, and virtual environments, caches and .git are skipped."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not (Path(folder) / d).is_symlink())
        for name in sorted(names):
            path = Path(folder, name)
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                yield path, info


def _copy_folder(source: Path, dest: Path) -> None:
    files = size = 0
    for path, info in _regular_files(source):
        files, size = files + 1, size + info.st_size
        _check_budget(files, size, source.name)
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _extract_zip(source: Path, dest: Path) -> None:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as e:
        raise SubmissionError(f"{source.name} is not a readable zip file: {e}") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        _check_budget(len(members), sum(m.file_size for m in members), source.name)
        for member in members:
            if stat.S_ISLNK(member.external_attr >> 16):
                continue
            relative = Path(member.filename)
            if relative.is_absolute() or ".." in relative.parts:
                raise SubmissionError(f"{source.name}: member {member.filename!r} points outside the archive")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # a CRC error, a truncated file
                raise SubmissionError(f"{source.name}: cannot extract {member.filename!r}: {e}") from None


def _clone(source: Path, dest: Path) -> None:
    """The HEAD commit of a bare repository or a bundle (a clone runs none of the source's hooks or config)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    origin = [str(source.resolve())] if source.is_file() else ["--depth", "1", f"file://{source.resolve()}"]
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        proc = subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", *origin[:-1], "--", origin[-1],
                               str(clone)], capture_output=True, text=True, env=env, timeout=120)
        if proc.returncode != 0:
            raise SubmissionError(f"{source.name}: git clone failed: {proc.stderr.strip()[-500:]}")
        _copy_folder(clone, dest)


def unpack(submission: Submission, dest: Path) -> Path:
    """Put the submission's files in `dest` and return its implementation root (the folder holding NN/)."""
    dest.mkdir(parents=True, exist_ok=True)
    if submission.kind == "folder":
        _copy_folder(submission.path, dest)
    elif submission.kind == "zip":
        _extract_zip(submission.path, dest)
    elif submission.kind in ("git", "bundle"):
        _clone(submission.path, dest)
    else:
        raise SubmissionError(f"{submission.path.name} is not a folder, a git repository or a zip file")
    return implementation_root(dest)


def implementation_root(folder: Path) -> Path:
    """`milestones/` when there is one (a learner's repository), else the folder itself; a single top
    folder (a zip of the repository, macOS's __MACOSX aside) is looked into."""
    if (folder / "milestones").is_dir():
        return folder / "milestones"
    folders = [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith((".", "__"))]
    if len(folders) == 1 and not folders[0].name[:2].isdigit():
        return implementation_root(folders[0])
    return folder


def content_hash(submission: Submission) -> str:
    """sha256 of what would be graded: the file bytes (or the git HEAD commit), independent of mtimes."""
    digest = hashlib.sha256(submission.kind.encode())
    if submission.kind == "folder":
        _hash_tree(digest, submission.path)
    elif submission.kind in ("zip", "bundle", "unknown") and submission.path.is_file():
        _hash_file(digest, submission.path)
    elif submission.kind == "git":
        head = subprocess.run(["git", "--git-dir", str(submission.path), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30)
        digest.update((head.stdout.strip() or head.stderr).encode())
    return digest.hexdigest()


def _hash_file(digest, path: Path) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def _hash_tree(digest, root: Path) -> None:
    """The same files `_copy_folder` copies, names and bytes."""
    for path, _ in _regular_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        _hash_file(digest, path)


TRUSTED = ("course.toml", "pyproject.toml", "tests", "solutions", GRADER_COPY)


def course_fingerprint(root: Path) -> str:
    """sha256 of what grading trusts in a course copy (not what tests write beside it, such as .hypothesis/)."""
    digest = hashlib.sha256()
    for name in TRUSTED:
        path = root / name
        digest.update(name.encode() + b"\0")
        if path.is_dir():
            _hash_tree(digest, path)
        elif path.is_file():
            _hash_file(digest, path)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ the course copy


def snapshot_course(course: Course, dest: Path) -> Path:
    """A private copy of everything grading trusts: manifest, pytest settings, hidden tests, solutions and the
    `llmfs` package (grading/llmfs/, with data/registry.toml as llmfs/registry/), laid out so `load_course(dest)`
    finds it."""
    import llmfs
    import llmfs.data

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "results")
    dest.mkdir(parents=True)
    shutil.copy2(course.root / "pyproject.toml", dest / "pyproject.toml")
    mirrors = "data_mirrors = [" + ", ".join(json.dumps(str(p)) for p in course.data_mirrors) + "]"
    manifest = re.sub(r"(?m)^data_mirrors\s*=.*$", lambda _: mirrors, (course.root / "course.toml").read_text())
    (dest / "course.toml").write_text(manifest, encoding="utf-8")  # mirrors made absolute: the copy moves
    tests = dest / course.hidden_tests.relative_to(course.root)
    tests.mkdir(parents=True)
    for entry in course.hidden_tests.iterdir():  # tests/NN and shared helpers; not the tool's own grading/tests
        if entry.is_dir() and entry.name[:2].isdigit():
            shutil.copytree(entry, tests / entry.name, ignore=ignore)
    shutil.copytree(course.solutions, dest / course.solutions.relative_to(course.root), ignore=ignore)
    package = dest / GRADER_COPY / "llmfs"
    shutil.copytree(Path(llmfs.__file__).parent, package, ignore=ignore)
    llmfs.data.copy_registry(package)  # an editable install reads the course's data/registry.toml
    return dest


def _shared_read_only(course: Course) -> tuple[Path, ...]:
    """The Python installation and its packages, and the datasets: one submission must not plant code or data
    for the ones graded after it."""
    import site

    from llmfs import data

    python = {Path(sys.prefix), Path(sys.base_prefix), *map(Path, site.getsitepackages())}
    datasets = {Path(p) for p in (os.environ.get(data.DATA_ENV), data.cache_dir()) if p} | set(course.data_mirrors)
    return tuple(sorted({p.resolve() for p in python | datasets if p.is_dir()}))


def remove_stale_runs() -> None:
    """Delete the working folders of earlier runs that were killed (their owner process is gone)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*"):
        try:
            owner = int((folder / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not psutil.pid_exists(owner):
            _rmtree(folder)


def remove_torn_writes(out: Path) -> None:
    """Delete the temporary files of atomic writes (llmfs.fsutil) that a killed run left in OUT: the files they
    were replacing are intact, and this run rewrites them. (One grade-all writes to an OUT folder at a time.)"""
    for torn in out.glob("**/.*.tmp"):
        torn.unlink(missing_ok=True)


def _rmtree(path: Path) -> None:
    """Remove a working folder even if the code under test made parts of it read-only."""
    def unlock(func, target, _exc):
        with contextlib.suppress(OSError):
            os.chmod(Path(target).parent, 0o700)
            os.chmod(target, 0o700)
            func(target)

    shutil.rmtree(path, onerror=unlock)


# -------------------------------------------------------------------------------------------- grading


@dataclass
class Options:
    milestones: list[str] | None = None
    jobs: int = 1
    force: bool = False
    limits: dict[str, float] | None = None
    pseudonyms: bool = False  # public leaderboards name learners by a salted hash
    shard: tuple[int, int] | None = None  # (I, N): grade only shard I of N; no leaderboards (llmfs.shards)


def record_key(content: str, fingerprint: str, options: Options) -> str:
    payload = json.dumps([RECORD_VERSION, content, fingerprint, options.milestones, options.limits], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def shard_manifest(shard: tuple[int, int], fingerprint: str, options: Options, keys: dict[str, str]) -> dict:
    """OUT/shard.json of a `--shard I/N` run: what `merge-grades` checks the records against (the same grader,
    milestones and limits in every shard; every learner of the shard with an up-to-date record)."""
    return {"version": RECORD_VERSION, "shard": list(shard), "fingerprint": fingerprint,
            "milestones": options.milestones, "limits": options.limits, "learners": keys}


def _milestone_summary(r: MilestoneResult) -> dict:
    return {"score": r.score, "max_score": r.max_score, "status": r.status, "message": r.message,
            "passed": r.passed, "total": len(r.tests), "seconds": round(r.seconds, 2), "network": r.network,
            "hidden": r.hidden, "metrics": r.metrics, "output_bytes": r.output_bytes, "log_tail": r.log[-2000:]}


def _error_record(course: Course, options: Options, message: str) -> dict:
    ids = options.milestones or [m.id for m in course.milestones]
    return {m: {"score": 0.0, "max_score": course.milestone(m).points, "status": ERROR, "message": message,
                "passed": 0, "total": 0, "seconds": 0.0, "network": "", "hidden": False, "metrics": [],
                "log_tail": ""} for m in ids}


class ClassGrader:
    """Grades SUBMISSIONS into OUT (see the module docstring); `run()` returns every record."""

    def __init__(self, course: Course, submissions: Path, out: Path, options: Options) -> None:
        self.course, self.options = course, options
        self.submissions_dir, self.out = submissions.resolve(), out.resolve()
        self.records_dir = self.out / "submissions"
        self.shared_read_only = _shared_read_only(course)
        self.lock = threading.Lock()
        self.records: dict[str, dict] = {}

    def run(self, on_start: Callable[[int, int], None] | None = None,
            on_done: Callable[[dict], None] | None = None) -> list[dict]:
        submissions = discover(self.submissions_dir)
        if self.options.shard:
            index, count = self.options.shard
            submissions = [s for s in submissions if shard_of(s.name, count) == index]
        chosen = [self.course.milestone(i) for i in self.options.milestones] if self.options.milestones else \
            list(self.course.milestones)
        fetch_datasets(chosen)
        fetch_datasets(chosen, built=True)  # 08's pair: once for the class
        self.records_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_runs()
        remove_torn_writes(self.out)
        with tempfile.TemporaryDirectory(prefix=RUN_PREFIX) as run_dir:
            run_dir = Path(run_dir)
            os.chmod(run_dir, 0o700)
            (run_dir / "owner.pid").write_text(str(os.getpid()))
            snapshot = snapshot_course(self.course, run_dir / "snapshot")
            fingerprint = course_fingerprint(snapshot)
            todo, keys = [], {}
            for s in submissions:
                key = keys[s.name] = record_key(content_hash(s), fingerprint, self.options)
                old = self._load_record(s.name)
                if old and old.get("key") == key and not self.options.force:
                    old["cached"] = True
                    self.records[s.name] = old
                else:
                    todo.append((s, key))
            if self.options.shard:  # first: a killed shard leaves a manifest its missing records fail
                atomic_write_text(self.out / MANIFEST, json.dumps(
                    shard_manifest(self.options.shard, fingerprint, self.options, keys), indent=1))
            else:  # the whole class now: no longer a shard folder
                (self.out / MANIFEST).unlink(missing_ok=True)
            if on_start:
                on_start(len(submissions), len(submissions) - len(todo))
            self._publish(submissions, gradebook=False)
            with ThreadPoolExecutor(max_workers=self.options.jobs) as pool:
                futures = {pool.submit(self._grade_one, s, key, snapshot, fingerprint, run_dir): s for s, key in todo}
                for future in as_completed(futures):
                    record = future.result()
                    with self.lock:
                        self.records[record["name"]] = record
                        atomic_write_text(self.records_dir / f"{record['name']}.json", json.dumps(record, indent=1))
                        self._publish(submissions, gradebook=False)
                    if on_done:
                        on_done(record)
        self._publish(submissions, gradebook=True)
        return self._current(submissions)

    def _publish(self, submissions: list[Submission], gradebook: bool) -> None:
        from llmfs.leaderboard import write_all

        if self.options.shard:  # a share of the class: `merge-grades` publishes
            return
        write_all(self.course, self._current(submissions), self.out, self.options.pseudonyms, gradebook)

    def _current(self, submissions: Iterable[Submission]) -> list[dict]:
        return [self.records[s.name] for s in submissions if s.name in self.records]

    def _load_record(self, name: str) -> dict | None:
        try:
            return json.loads((self.records_dir / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def _grade_one(self, submission: Submission, key: str, snapshot: Path, fingerprint: str, run_dir: Path) -> dict:
        started = time.monotonic()
        record = {"version": RECORD_VERSION, "name": submission.name, "source": submission.path.name,
                  "kind": submission.kind, "key": key, "graded_at": datetime.now(timezone.utc).isoformat(),
                  "cached": False, "error": "", "gradescope": None}
        work = Path(tempfile.mkdtemp(prefix="job-", dir=run_dir))
        try:
            root = unpack(submission, work / "submission")
            course_copy = work / "course"
            shutil.copytree(snapshot, course_copy, symlinks=True)
            course = load_course(course_copy)
            threads = max(1, (os.cpu_count() or 1) // self.options.jobs)  # 2 jobs on 2 cores: 1 thread each
            walls = Walls(hide=self._hidden(run_dir), keep=(work,), scratch=work,
                          read_only=self._protected(course_copy), threads=threads)
            results = grade(course, root, self.options.milestones, self.options.limits, walls=walls, fetch=False)
            if course_fingerprint(course_copy) != fingerprint:
                for r in results:
                    r.status = TAMPERED
                    r.message = ("tampering detected: the grader's copy of the hidden tests, solutions or grading "
                                 "code was modified while this submission ran")
            record["milestones"] = {r.milestone.id: _milestone_summary(r) for r in results}
            record["gradescope"] = gradescope(results, time.monotonic() - started)
        except SubmissionError as e:
            record["error"] = str(e)
            record["milestones"] = _error_record(self.course, self.options, str(e))
        except Exception as e:  # the grader's own failure on this submission: recorded, the class goes on
            record["error"] = f"grader error: {type(e).__name__}: {e}"
            record["traceback"] = traceback.format_exc()[-4000:]
            record["milestones"] = _error_record(self.course, self.options, record["error"])
        finally:
            _rmtree(work)
        record["seconds"] = round(time.monotonic() - started, 2)
        if record["gradescope"]:
            atomic_write_text(self.out / "feedback" / f"{submission.name}.json",
                              json.dumps(record["gradescope"], indent=2))
        return record

    def _protected(self, course_copy: Path) -> tuple[Path, ...]:
        """Readable, not writable: what every submission shares, and this submission's copy of the grader."""
        return (*self.shared_read_only, *(course_copy / name for name in TRUSTED if (course_copy / name).is_dir()))

    def _hidden(self, run_dir: Path) -> tuple[Path, ...]:
        """What the code under test must not see: the other learners, the outputs, this run's other folders
        and the instructor's originals (its own working folder is mounted back inside run_dir)."""
        originals = [self.course.hidden_tests, self.course.solutions, self.course.root / "grading",
                     self.course.root / "data", self.course.milestones_dir]
        return tuple(dict.fromkeys(p for p in (self.submissions_dir, self.out, run_dir, *originals) if p.is_dir()))
