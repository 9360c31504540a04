"""A large mixed text file built from the registry's small datasets, for testing tokenizer training at scale.

The course's real corpora (TinyStoriesV2 train, 2.6 GB; FineWeb samples) need the internet. For a
machine without it, `build_mixed_corpus` makes a file of any size from what is at hand: HellaSwag contexts
with their gold endings, TinyStories stories, TinyShakespeare speeches and CS336's corpus.en, one
document each, separated by "<|endoftext|>", reshuffled (seeded) on each pass until the size is reached.
About 15 MB of distinct text: so a 100 MB file has realistic pre-token counts and a realistic number of
distinct words, but repeats itself.

    llmfs data mix mixed-100mb.txt --mb 100
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

from llmfs.data import fetch_file

SEPARATOR = "<|endoftext|>"
SOURCES = ("hellaswag-val", "tinystories-valid-head", "tinyshakespeare", "cs336-bpe")


def documents() -> list[str]:
    """Every document of the sources, in a fixed order."""
    docs = []
    for line in fetch_file("hellaswag-val").read_text(encoding="utf-8").splitlines():
        example = json.loads(line)
        docs.append(f"{example['ctx']} {example['endings'][int(example['label'])]}".strip())
    for name in ("tinystories-valid-head", "tinyshakespeare"):
        text = fetch_file(name).read_text(encoding="utf-8")
        docs += [block.strip() for block in text.split("\n\n") if block.strip()]
    docs.append(fetch_file("cs336-bpe", "corpus.en").read_text(encoding="utf-8").strip())
    return docs


def build_mixed_corpus(path: str | os.PathLike[str], size_bytes: int, seed: int = 0) -> Path:
    """Write at least `size_bytes` (and at most one document more) of UTF-8 text to `path`, atomically."""
    if size_bytes <= 0:
        raise ValueError(f"size_bytes must be positive, got {size_bytes}")
    path = Path(path)
    docs = [(doc + SEPARATOR).encode("utf-8") for doc in documents()]
    rng = random.Random(seed)
    written = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            while written < size_bytes:
                rng.shuffle(docs)
                for doc in docs:
                    f.write(doc)
                    written += len(doc)
                    if written >= size_bytes:
                        break
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
