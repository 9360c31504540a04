"""Datasets: where each one comes from, how to find it offline, and how to download it safely.

    fetch("tinyshakespeare")            -> the folder holding its files (found or downloaded)
    fetch_file("tinyshakespeare")       -> .../tinyshakespeare/input.txt
    fetch_file("gpt2-bpe", "vocab.bpe") -> .../gpt2/vocab.bpe

Lookup order: $LLMFS_DATA, the mirrors named in course.toml (`data_mirrors`), the download cache
($LLMFS_CACHE, default ~/.cache/llmfs/data), then a download into that cache. Every file is checked
against the sha256 in registry.toml before it is used. A download goes to a `.part-*` file and is
renamed into place only once its size and hash are right, so an interrupted or corrupt download never
leaves a file that looks complete.

A *built* dataset (`build = "08/pair"` in the registry: milestone 08's pair.py) is made by course code instead of
downloaded: milestone 08's draft/target pair. Its module's `build_key()` hashes everything that decides it, and
`build(folder)` writes the files with that key in `build-key.txt` and renames the folder into place when done. It is
found like any dataset when its files are there with the current key; otherwise it is built into the cache, one
process at a time (a file lock), from the course's solutions/ (or, in a learner's release, milestones/).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmfs.course import CourseError, load_course

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA_ENV = "LLMFS_DATA"
CACHE_ENV = "LLMFS_CACHE"
# The course's data/registry.toml; an installed package (and grade-all's copy) has it as llmfs/registry/registry.toml.
_PACKAGED_REGISTRY = Path(__file__).parents[1] / "registry" / "registry.toml"
_COURSE_REGISTRY = Path(__file__).parents[3] / "data" / "registry.toml"  # grading/llmfs/data/ -> the course root
REGISTRY_FILE = _PACKAGED_REGISTRY if _PACKAGED_REGISTRY.is_file() else _COURSE_REGISTRY


def copy_registry(package: Path) -> None:
    """Give a copy of the `llmfs` package (the folder `package`) its registry, where an installed package has it."""
    if not (package / "registry" / "registry.toml").is_file():
        (package / "registry").mkdir(exist_ok=True)
        shutil.copy2(REGISTRY_FILE, package / "registry" / "registry.toml")
CHUNK = 1 << 20


class DataError(Exception):
    """A dataset cannot be found, downloaded or verified. The message says what to do."""


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to a data root, e.g. "tinyshakespeare/input.txt"
    url: str
    sha256: str  # "" when not pinned
    size: int | None

    @property
    def name(self) -> str:
        """The path inside the dataset's folder: "input.txt", "target/last.pt"."""
        return str(Path(*Path(self.path).parts[1:]))


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    license: str
    files: tuple[DataFile, ...]
    build: str = ""  # "NN/module": built by that course module instead of downloaded

    @property
    def folder(self) -> str:
        return Path(self.files[0].path).parts[0]


def _parse_registry(text: str) -> dict[str, Dataset]:
    registry = {}
    for name, raw in tomllib.loads(text).items():
        files = tuple(DataFile(f["path"], f.get("url", ""), f.get("sha256", ""), f.get("size")) for f in raw["files"])
        if len({Path(f.path).parts[0] for f in files}) != 1 or any(len(Path(f.path).parts) < 2 for f in files):
            raise DataError(f"registry: the files of {name} must share one folder")
        registry[name] = Dataset(name, raw.get("description", ""), raw.get("license", ""), files, raw.get("build", ""))
    return registry


@lru_cache(maxsize=1)
def registry() -> dict[str, Dataset]:
    """Every dataset the course knows, by name (see data/registry.toml)."""
    return _parse_registry(REGISTRY_FILE.read_text(encoding="utf-8"))


def dataset(name: str) -> Dataset:
    try:
        return registry()[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(registry()))}") from None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llmfs" / "data")


def search_roots() -> list[Path]:
    """Data roots searched in order: $LLMFS_DATA, the course's mirrors, the download cache."""
    roots = []
    if env := os.environ.get(DATA_ENV):
        roots.append(Path(env))
    with contextlib.suppress(CourseError):  # outside a course checkout there are no mirrors
        roots.extend(load_course().data_mirrors)
    roots.append(cache_dir())
    return roots


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _verified(path: Path, mtime_ns: int, size: int, sha256: str) -> bool:
    return not sha256 or sha256_of(path) == sha256


def is_valid(path: Path, spec: DataFile) -> bool:
    """`path` exists with the registry's size and hash (hashes are cached per file version)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if spec.size is not None and st.st_size != spec.size:
        return False
    return _verified(path.resolve(), st.st_mtime_ns, st.st_size, spec.sha256)


def locate(name: str) -> Path | None:
    """The folder of dataset `name` under the first data root holding all its files intact, or None."""
    ds = dataset(name)
    key = builder(ds).build_key() if ds.build else None
    for root in search_roots():
        if all(is_valid(root / f.path, f) for f in ds.files) and (key is None or _built_key(root / ds.folder) == key):
            return root / ds.folder
    return None


BUILD_KEY_FILE = "build-key.txt"


def _built_key(folder: Path) -> str | None:
    try:
        return (folder / BUILD_KEY_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def builder(ds: Dataset):
    """The course module that builds dataset `ds`: from the course's solutions/, else its milestones/."""
    from llmfs.loader import load_module

    milestone, module = ds.build.split("/")
    course = load_course()
    for root in (course.solutions, course.milestones_dir):
        if (root / milestone / f"{module}.py").is_file():
            return load_module(root, milestone, module, ["build", "build_key"])
    raise DataError(f"dataset {ds.name} is built by {milestone}/{module}.py, which this course does not have")


def build(name: str, *, progress: bool = True) -> Path:
    """Build dataset `name` into the cache (one process at a time) unless a current copy is found."""
    from filelock import FileLock

    ds = dataset(name)
    target = cache_dir() / ds.folder
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if found := locate(name):  # another process built it while this one waited
            return found
        print(f"building dataset {name} (once; {ds.description})", file=sys.stderr)
        builder(ds).build(target, progress=progress)
    if (found := locate(name)) is None:
        raise DataError(f"building {name} did not leave its files and key in {target}")
    return found


def download(url: str, dest: Path, *, sha256: str = "", size: int | None = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, checking length and sha256; `dest` appears only when both are right."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    received = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "llmfs"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            declared = response.headers.get("Content-Length")
            expected = int(declared) if declared is not None else size
            with tqdm(total=expected, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        for what, wanted in (("the server announced", expected), ("the registry expects", size)):
            if wanted is not None and received != wanted:
                raise DataError(f"download of {url} was cut off: got {received:,} bytes, {what} {wanted:,}")
        if sha256 and digest.hexdigest() != sha256:
            raise DataError(f"download of {url} is corrupt: sha256 {digest.hexdigest()}, expected {sha256}")
        os.replace(part, dest)
    except http.client.IncompleteRead as e:
        raise DataError(f"download of {url} was cut off after {received:,} bytes: {e}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise DataError(f"could not download {url}: {e}. Offline? Point ${DATA_ENV} at a folder "
                        f"that already has {dest.parent.name}/{dest.name}.") from e
    finally:
        part.unlink(missing_ok=True)
    if not sha256:
        print(f"warning: {dest.name} has no pinned sha256 in the registry; got {digest.hexdigest()}",
              file=sys.stderr)
    return dest


def fetch(name: str, *, progress: bool = True) -> Path:
    """The folder holding every file of dataset `name`: found locally, else downloaded and verified."""
    if found := locate(name):
        return found
    ds = dataset(name)
    if ds.build:
        return build(name, progress=progress)
    root = cache_dir()
    for f in ds.files:
        target = root / f.path
        if not is_valid(target, f):
            download(f.url, target, sha256=f.sha256, size=f.size, progress=progress)
    return root / ds.folder


def fetch_file(name: str, filename: str | None = None, *, progress: bool = True) -> Path:
    """One file of dataset `name` (its only file when `filename` is None)."""
    ds = dataset(name)
    names = [f.name for f in ds.files]
    if filename is None:
        if len(names) != 1:
            raise DataError(f"dataset {name} has several files ({', '.join(names)}); say which")
        filename = names[0]
    elif filename not in names:
        raise DataError(f"dataset {name} has no file {filename!r}; it has {', '.join(names)}")
    return fetch(name, progress=progress) / filename
