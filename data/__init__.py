"""Datasets: where each one comes from, how to find it offline, and how to download it safely.

    fetch("tinyshakespeare")            -> the folder holding its files (found or downloaded)
    fetch_file("tinyshakespeare")       -> .../tinyshakespeare/input.txt
    fetch_file("gpt2-bpe", "vocab.bpe") -> .../gpt2/vocab.bpe

Lookup order: $LLMFS_DATA, the mirrors named in course.toml (`data_mirrors`), the download cache
($LLMFS_CACHE, default ~/.cache/llmfs/data), then a download into that cache. Every file is checked
against the sha256 in registry.toml before it is used. A download goes to a `.part-*` file and is
renamed into place only once its size and hash are right, so an interrupted or corrupt download never
leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
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
REGISTRY_FILE = Path(__file__).with_name("registry.toml")
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
        return Path(self.path).name


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    license: str
    files: tuple[DataFile, ...]

    @property
    def folder(self) -> str:
        return str(Path(self.files[0].path).parent)


def _parse_registry(text: str) -> dict[str, Dataset]:
    registry = {}
    for name, raw in tomllib.loads(text).items():
        files = tuple(DataFile(f["path"], f["url"], f.get("sha256", ""), f.get("size")) for f in raw["files"])
        if len({str(Path(f.path).parent) for f in files}) != 1:
            raise DataError(f"registry: the files of {name} must share one folder")
        registry[name] = Dataset(name, raw.get("description", ""), raw.get("license", ""), files)
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
    for root in search_roots():
        if all(is_valid(root / f.path, f) for f in ds.files):
            return root / ds.folder
    return None


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
