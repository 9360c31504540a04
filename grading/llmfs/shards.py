"""`llmfs grade-all --shard I/N` and `llmfs merge-grades`: one class graded on N machines, published once.

    llmfs grade-all submissions/ --shard 1/4 --out grades-1     # on machine 1 (the same flags on every machine)
    ...
    llmfs grade-all submissions/ --shard 4/4 --out grades-4     # on machine 4
    llmfs merge-grades grades-1 grades-2 grades-3 grades-4 --out grades [--pseudonyms]

Shard I grades the learners with `llmfs.classroom.shard_of(name, N) == I` (a hash of the learner's name, so a
learner who joins or leaves moves nobody else, and each shard's cached records stay valid), writes their
records and feedback, and OUT/shard.json: I, N, the grader's fingerprint, the milestones and limits, and every
learner of the shard with the key its record must have. A shard writes no leaderboard, CSV or gradebook.

`merge-grades` reads the shard folders and writes into DIR exactly what an unsharded `grade-all` writes:
submissions/NAME.json (the shards' records, byte for byte), feedback/NAME.json, leaderboard.json/md/html,
grades.csv and gradebook.db (updated in place, see llmfs.leaderboard). It refuses, naming the folders:
- a folder without submissions/ (not the --out of a `grade-all`), or DIR being one of the shard folders;
- shards of different N, a shard given twice, a shard missing (all of 1..N are needed: a leaderboard
  without a share of the class would rank the others wrongly);
- shards graded by different grading code, course or hidden tests (the fingerprint), milestones or limits;
- a shard whose learners do not all have an up-to-date record (a killed or unfinished shard: rerun it);
- folders without shard.json (plain `grade-all` outputs, merged as they are) whose records disagree: another
  record format, other milestones, or one learner graded differently in two folders.

Pseudonyms (`--pseudonyms`): merge-grades owns the salt, since shards publish nothing. It uses DIR/.pseudonym-salt
when there is one (so the names stay the same from one week's merge to the next); else the one salt found in the
shard folders (a class that was graded unsharded into one of them keeps its pseudonyms), copied into DIR; shard
folders with different salts are an error (copy the one to keep into DIR/.pseudonym-salt); with none, a new
salt is made in DIR. Keep DIR between runs, as the instructor workflow keeps grades/.

How far this goes: 1,000 learners, milestones 01-05, GitHub-hosted runners
------------------------------------------------------------------------------
One complete submission of 01-05, graded on 2 cores one at a time (README, `llmfs grade --reference`: 7-10 s
for 01, 34-41 s for 02, 49-56 s for 03, 63 s for 04, about 106 s for 05; 259-276 s) plus unpacking, the course
copy and the jail: about 280 s. A milestone left as stubs costs about 5 s, so a real class costs less.
- 1,000 complete submissions: 1,000 x 280 s = 280,000 s, about 78 runner-hours. One machine: 3.2 days.
- GitHub Actions (docs.github.com, Actions limits): a matrix makes at most 256 jobs per workflow run; a job on a
  GitHub-hosted runner runs at most 6 hours; 20 jobs run at once on the Free plan (Pro 40, Team 60).
- N = 20 shards: 50 learners each on average, but the hash does not balance exactly: for 1,000 names the
  largest of 20 shards held 58-64 learners, 64 x 280 s = 17,920 s = 5.0 h, too close to the 6-hour limit once
  setup (checkout, install, datasets: minutes) is added.
- N = 40 shards (recommended): 25 learners each on average, at most 31-37 measured: 37 x 280 s = 10,360 s,
  2.9 h per job at worst (1.9 h on average). With 20 jobs at a time, 78 runner-hours / 20 = 3.9 h of wall clock
  at best (two waves of 1.9-2.9 h: 4-6 h); with 40 at a time (Pro), the slowest job: about 3 h.
- The whole course (01-08, about 600 s per complete submission once 08's pair is built, about 8 minutes
  once per runner): 600,000 s, 167 runner-hours; N = 64 keeps the largest shard (25-28 learners measured) at
  4.7 h; with 20 jobs at a time the other jobs of the matrix wait for a free slot: 167 / 20 = 8.3 h of wall
  clock at best for the workflow run.
- A rerun grades only what changed (each shard keeps its folder as a cache): a week in which 100 learners
  pushed costs about 100 x 280 s = 7.8 runner-hours. A change to the hidden tests or the grader regrades all.
Public repositories get 4-core standard runners (private ones 2 cores), where `--jobs 2` grades two at a time;
the figures above assume 2 cores and one job (the timed checks were calibrated there: measure before relying on
more).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from llmfs.classroom import MANIFEST, RECORD_VERSION, remove_torn_writes, shard_of
from llmfs.course import Course
from llmfs.fsutil import atomic_write_text
from llmfs.grader import GraderError

SALT = ".pseudonym-salt"  # llmfs.leaderboard's salt file


class MergeError(GraderError):
    """The shard folders cannot be merged into one class: the message names the folders and what to do."""


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" with 1 <= I <= N, as (I, N); ValueError otherwise."""
    match = re.fullmatch(r"([0-9]+)/([0-9]+)", text.strip())
    if not match:
        raise ValueError(f"expected I/N such as 1/4, got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise ValueError(f"expected I/N with 1 <= I <= N, got {text!r}")
    return index, count


@dataclass
class ShardFolder:
    folder: Path
    manifest: dict | None
    records: dict[str, dict] = field(default_factory=dict)  # by learner name
    texts: dict[str, str] = field(default_factory=dict)  # the record files' text, copied as it is

    @property
    def label(self) -> str:
        if self.manifest:
            index, count = self.manifest["shard"]
            return f"{self.folder} (shard {index}/{count})"
        return str(self.folder)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MergeError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise MergeError(f"{path} is not a JSON object")
    return data


def read_shard(folder: Path) -> ShardFolder:
    """The records of one `grade-all` output folder: with shard.json, the shard's learners (each must have the
    record the manifest expects); without, every record in submissions/."""
    folder = folder.resolve()
    records_dir = folder / "submissions"
    if not records_dir.is_dir():
        raise MergeError(f"{folder} has no submissions/ folder: give the --out folders of `llmfs grade-all "
                         "--shard I/N` runs")
    manifest = _read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else None
    shard = ShardFolder(folder, manifest)
    if manifest is None:
        names = sorted(p.stem for p in records_dir.glob("*.json") if not p.name.startswith("."))
    else:
        _check_manifest(folder, manifest)
        names = sorted(manifest["learners"])
    for name in names:
        path = records_dir / f"{name}.json"
        if manifest is not None and not path.is_file():
            raise MergeError(f"{shard.label} is incomplete: {name} has no record; finish that shard (rerun its "
                             f"`llmfs grade-all --shard {manifest['shard'][0]}/{manifest['shard'][1]}`)")
        text = path.read_text(encoding="utf-8")
        record = _read_json(path)
        if record.get("name") != name:
            raise MergeError(f"{path} holds the record of {record.get('name')!r}, not of {name!r}")
        if record.get("version") != RECORD_VERSION:
            raise MergeError(f"{path} is a record of version {record.get('version')!r}, this llmfs writes version "
                             f"{RECORD_VERSION}: regrade that folder with this llmfs")
        if manifest is not None and record.get("key") != manifest["learners"][name]:
            raise MergeError(f"{shard.label} is incomplete: the record of {name} is older than the shard's last "
                             f"run (its submission, the grader or the options changed); finish that shard (rerun "
                             f"its `llmfs grade-all --shard {manifest['shard'][0]}/{manifest['shard'][1]}`)")
        shard.records[name], shard.texts[name] = record, text
    return shard


def _check_manifest(folder: Path, manifest: dict) -> None:
    try:
        index, count = manifest["shard"]
        ok = (manifest["version"] == RECORD_VERSION and 1 <= index <= count
              and isinstance(manifest["learners"], dict) and "fingerprint" in manifest)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise MergeError(f"{folder / MANIFEST} is not a shard manifest of this llmfs (record version "
                         f"{RECORD_VERSION}): regrade that shard with this llmfs")
    strays = [name for name in manifest["learners"] if shard_of(name, count) != index]
    if strays:
        raise MergeError(f"{folder / MANIFEST}: {', '.join(strays[:5])} belong(s) to another shard than "
                         f"{index}/{count}: regrade that shard with this llmfs")


def _options(manifest: dict) -> dict:
    """What must be the same in every shard for their records to form one class."""
    return {"grader fingerprint (course, hidden tests, solutions, grading code)": manifest["fingerprint"],
            "milestones": sorted(manifest["milestones"]) if manifest["milestones"] else "all",
            "limits": manifest["limits"] or {}}


def _check_shards(shards: list[ShardFolder]) -> None:
    with_manifest = [s for s in shards if s.manifest]
    if with_manifest and len(with_manifest) != len(shards):
        plain = next(s for s in shards if not s.manifest)
        raise MergeError(f"{plain.folder} has no {MANIFEST} but {with_manifest[0].label} has: give only the "
                         f"folders of `llmfs grade-all --shard I/N` runs (or only plain `grade-all` folders)")
    if not with_manifest:
        return
    first = shards[0]
    count = first.manifest["shard"][1]
    seen: dict[int, ShardFolder] = {}
    for s in shards:
        index, n = s.manifest["shard"]
        if n != count:
            raise MergeError(f"{first.label} and {s.label} split the class differently: use one N for every shard")
        if index in seen:
            raise MergeError(f"shard {index}/{count} given twice: {seen[index].folder} and {s.folder}")
        seen[index] = s
        for what, value in _options(s.manifest).items():
            if value != _options(first.manifest)[what]:
                raise MergeError(f"{first.label} and {s.label} were graded with different {what}: "
                                 f"{_options(first.manifest)[what]} and {value}; regrade them with the same llmfs, "
                                 f"course and flags")
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in seen]
    if missing:
        raise MergeError(f"shard(s) {', '.join(missing)} missing: give all {count} shard folders (the leaderboard "
                         f"ranks the whole class)")


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "cached"}


def combine(shards: list[ShardFolder]) -> list[tuple[dict, str, ShardFolder]]:
    """Every learner once, in the order `grade-all` lists them (by submission entry name): (record, its file's
    text, the folder it came from)."""
    _check_shards(shards)
    merged: dict[str, tuple[dict, str, ShardFolder]] = {}
    milestones: tuple[list[str], str, ShardFolder] | None = None
    for s in shards:
        for name, record in s.records.items():
            ids = sorted(record.get("milestones", {}))
            if milestones is None:
                milestones = (ids, name, s)
            elif ids != milestones[0]:
                raise MergeError(f"{name} in {s.label} was graded on milestones {', '.join(ids) or 'none'} but "
                                 f"{milestones[1]} in {milestones[2].label} on {', '.join(milestones[0]) or 'none'}: "
                                 "regrade with the same --milestone flags")
            if name in merged:
                other = merged[name][2]
                if _comparable(merged[name][0]) != _comparable(record):
                    raise MergeError(f"{name} is graded in both {other.label} and {s.label}, with different "
                                     f"records: remove the outdated one")
                continue
            merged[name] = (record, s.texts[name], s)
    return sorted(merged.values(), key=lambda item: (item[0].get("source") or item[0]["name"], item[0]["name"]))


def _salt(shards: list[ShardFolder], out: Path) -> None:
    """Put the salt the merged pseudonyms use in OUT (see the module docstring)."""
    if (out / SALT).is_file():
        return
    salts = {}
    for s in shards:
        if (s.folder / SALT).is_file():
            salts.setdefault((s.folder / SALT).read_text().strip(), s.folder)
    if len(salts) > 1:
        a, b = list(salts.values())[:2]
        raise MergeError(f"{a} and {b} have different pseudonym salts ({SALT}): copy the one whose pseudonyms "
                         f"should stay into {out / SALT}")
    if salts:
        atomic_write_text(out / SALT, next(iter(salts)))


def merge(course: Course, folders: list[Path], out: Path, pseudonyms: bool = False) -> list[dict]:
    """Merge the shard folders into `out` and write the class's outputs (the module docstring); returns the
    records, in the order the leaderboard lists them before ranking."""
    from llmfs.leaderboard import write_all

    if not folders:
        raise MergeError("no shard folders given")
    out = out.resolve()
    resolved = [Path(f).resolve() for f in folders]
    for i, folder in enumerate(resolved):
        if folder == out:
            raise MergeError(f"--out {out} is one of the shard folders: merge into a folder of its own")
        if folder in resolved[:i]:
            raise MergeError(f"{folder} given twice")
    shards = [read_shard(f) for f in resolved]
    merged = combine(shards)
    out.mkdir(parents=True, exist_ok=True)
    remove_torn_writes(out)
    if pseudonyms:
        _salt(shards, out)
    for record, text, shard in merged:
        name = record["name"]
        atomic_write_text(out / "submissions" / f"{name}.json", text)
        feedback = shard.folder / "feedback" / f"{name}.json"
        if feedback.is_file():
            (out / "feedback").mkdir(exist_ok=True)
            shutil.copyfile(feedback, out / "feedback" / f".{name}.json.tmp")
            (out / "feedback" / f".{name}.json.tmp").replace(out / "feedback" / f"{name}.json")
    records = [record for record, _, _ in merged]
    write_all(course, records, out, pseudonyms, gradebook=True)
    return records
