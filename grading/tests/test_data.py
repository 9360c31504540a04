"""The data layer: the registry, offline lookup, downloads checked against a server on 127.0.0.1, and the
GPT-2 reference tokenizers built offline."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from pathlib import Path

import pytest

from llmfs import data
from llmfs.data import DataError, DataFile, Dataset, download, fetch, fetch_file, registry
from llmfs.data.gpt2_tokenizers import gpt2_hf_tokenizer, gpt2_tiktoken

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Handler(http.server.BaseHTTPRequestHandler):
    """/good serves PAYLOAD; /truncated announces all of it and hangs up halfway; anything else is 404."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path not in ("/good", "/truncated"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD if self.path == "/good" else PAYLOAD[: len(PAYLOAD) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def only_dest(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_good_download_lands_verified(server, tmp_path):
    dest = tmp_path / "d" / "file.bin"
    download(f"{server}/good", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert only_dest(dest.parent) == ["file.bin"]  # no partial file left beside it


def test_a_wrong_hash_leaves_nothing(server, tmp_path):
    dest = tmp_path / "d" / "file.bin"
    with pytest.raises(DataError, match="corrupt: sha256"):
        download(f"{server}/good", dest, sha256="0" * 64, progress=False)
    assert only_dest(dest.parent) == []


def test_a_download_cut_off_halfway_leaves_nothing(server, tmp_path):
    dest = tmp_path / "d" / "file.bin"
    with pytest.raises(DataError, match="was cut off"):
        download(f"{server}/truncated", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert only_dest(dest.parent) == []


def test_a_missing_file_is_a_clear_error(server, tmp_path):
    with pytest.raises(DataError, match=r"could not download .*404.*LLMFS_DATA"):
        download(f"{server}/absent", tmp_path / "x.bin", progress=False)


def test_fetch_downloads_once_then_works_offline(server, tmp_path, monkeypatch):
    spec = DataFile("toy/payload.bin", f"{server}/good", hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))
    monkeypatch.setattr(data, "registry", lambda: {"toy": Dataset("toy", "a test dataset", "none", (spec,))})
    monkeypatch.setenv("LLMFS_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("LLMFS_CACHE", str(tmp_path / "cache"))
    path = fetch_file("toy", progress=False)
    assert path == tmp_path / "cache" / "toy" / "payload.bin" and path.read_bytes() == PAYLOAD
    monkeypatch.setattr(data, "download", lambda *a, **k: pytest.fail("fetched again"))
    assert fetch_file("toy", progress=False) == path
    path.write_bytes(b"tampered")  # a corrupt cached file is not used
    with pytest.raises(pytest.fail.Exception, match="fetched again"):
        fetch_file("toy", progress=False)


def test_the_registry_pins_every_file():
    for name, ds in registry().items():
        assert ds.description and ds.license, name
        for f in ds.files:
            assert f.url.startswith("https://") or (ds.build and not f.url), f"{name}: {f.url!r}"
            assert f.sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
            assert f.sha256 == "" or f.size, f"{name}: a pinned file also needs its size"
    pinned = [n for n, ds in registry().items() if all(f.sha256 for f in ds.files)]
    assert {"tinyshakespeare", "gpt2-bpe", "hellaswag-val", "tinystories-valid-head", "cs336-bpe"} <= set(pinned)


@pytest.mark.parametrize("name", ["tinyshakespeare", "gpt2-bpe", "hellaswag-val", "tinystories-valid-head",
                                  "tinystories-sample", "cs336-bpe"])
def test_every_pinned_dataset_is_found_and_verified_offline(name):
    folder = fetch(name, progress=False)
    for f in data.dataset(name).files:
        assert data.sha256_of(folder / f.name) == f.sha256


def test_unknown_names_are_clear_errors(llmfs):
    with pytest.raises(DataError, match="unknown dataset 'shakespeare'; known:"):
        fetch("shakespeare")
    with pytest.raises(DataError, match="several files"):
        fetch_file("gpt2-bpe")
    proc = llmfs("data", "fetch", "nope")
    assert proc.returncode == 2 and "unknown dataset" in proc.stderr
    listed = llmfs("data", "list")
    assert listed.returncode == 0 and "tinyshakespeare" in listed.stdout


def test_gpt2_tokenizers_agree_with_published_ids():
    enc, hf = gpt2_tiktoken(), gpt2_hf_tokenizer()
    # ids published with the data (tiktoken's own output, recorded in shared/data/README.md)
    assert enc.encode("Hello world") == hf.encode("Hello world") == [15496, 995]
    assert enc.encode("hello world!!!") == [31373, 995, 10185]
    assert enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert enc.n_vocab == len(hf) == 50257


def test_gpt2_tokenizers_agree_on_shakespeare():
    text = fetch_file("tinyshakespeare").read_text()
    enc, hf = gpt2_tiktoken(), gpt2_hf_tokenizer()
    lines = text.splitlines(keepends=True)[:3000]
    assert [enc.encode_ordinary(line) for line in lines] == [hf.encode(line) for line in lines]
    assert len(enc.encode_ordinary(text)) == 338_025  # the count published with the data


class ToyBuilder:
    """Stands in for a course module that builds a dataset (08's pair.py): counts its builds, can crash."""

    def __init__(self, key: str = "k1", crash: bool = False) -> None:
        self.key, self.crash, self.builds = key, crash, 0

    def build_key(self) -> str:
        return self.key

    def build(self, folder, progress=True):
        self.builds += 1
        work = folder.with_name(folder.name + ".partial")
        work.mkdir(parents=True, exist_ok=True)
        (work / "model.pt").write_text("weights")
        if self.crash:
            raise RuntimeError("killed mid-build")
        (work / "build-key.txt").write_text(self.key)
        work.rename(folder)
        return folder


def test_a_built_dataset_is_built_once_found_again_and_rebuilt_when_its_key_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMFS_DATA", raising=False)
    toy = Dataset("toy-built", "a toy", "MIT", (DataFile("toy-built/model.pt", "", "", None),), build="99/toy")
    monkeypatch.setattr(data, "registry", lambda: {"toy-built": toy})
    monkeypatch.setattr(data, "search_roots", lambda: [tmp_path / "cache"])
    builder = ToyBuilder()
    monkeypatch.setattr(data, "builder", lambda ds: builder)
    folder = fetch("toy-built", progress=False)
    assert (folder / "model.pt").read_text() == "weights" and builder.builds == 1
    assert fetch("toy-built", progress=False) == folder and builder.builds == 1, "a current build is reused"
    builder.key = "k2"  # the course code or the settings changed
    import shutil

    shutil.rmtree(folder)  # (the toy builder renames into place; the real one replaces an old folder itself)
    fetch("toy-built", progress=False)
    assert builder.builds == 2 and (folder / "build-key.txt").read_text() == "k2"


def test_a_crashed_build_leaves_nothing_that_looks_built(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFS_CACHE", str(tmp_path / "cache"))
    toy = Dataset("toy-built", "a toy", "MIT", (DataFile("toy-built/model.pt", "", "", None),), build="99/toy")
    monkeypatch.setattr(data, "registry", lambda: {"toy-built": toy})
    monkeypatch.setattr(data, "search_roots", lambda: [tmp_path / "cache"])
    monkeypatch.setattr(data, "builder", lambda ds: ToyBuilder(crash=True))
    with pytest.raises(RuntimeError, match="killed"):
        fetch("toy-built", progress=False)
    assert data.locate("toy-built") is None, "a half-built dataset must not be found"
    monkeypatch.setattr(data, "builder", lambda ds: ToyBuilder())
    assert (fetch("toy-built", progress=False) / "model.pt").is_file()


def test_the_pair_key_covers_the_code_it_runs():
    from llmfs.course import load_course
    from llmfs.loader import load_module

    course = load_course()
    pair = load_module(course.solutions, "08", "pair", course.milestone("08").api["pair"])
    key = pair.build_key()
    assert key == pair.build_key() and len(key) == 16
    sources = {f"{m}/{mod}" for m, mod in pair.SOURCES}
    assert {"04/fastbpe", "05/gpt2", "05/train", "05/data"} <= sources, "the key must change with the code it runs"
