"""Milestone 04: byte-level BPE made fast, with exactly the output of milestone 03. Nothing to write here.

    pretokens.py  task04_1  count each distinct pre-token once, in parallel over chunks of a file
    merges.py     task04_2  incremental pair counts and a heap with lazy invalidation: train, train_from_file
    encoder.py    task04_3  FastTokenizer: tiktoken's merge loop on ints, a cache, streaming and batches

This file gathers them (`fastbpe.train`, `fastbpe.FastTokenizer`, ...) and is the command line:
`python milestones/04/fastbpe.py train --vocab-size 1024` once task04_2 is done (under a second on
TinyShakespeare), and `python milestones/04/fastbpe.py results` for the results table once task04_3 is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from llmfs.loader import dependency

if __package__:  # imported as part of the milestone (later milestones and the tests do this)
    from .encoder import NO_MERGE, FastTokenizer
    from .merges import descending, learn_merges, merge_in_word, train, train_from_file
    from .pretokens import (
        CHUNK_BYTES,
        GPT2_SPLIT_PATTERN,
        count_pretokens,
        count_pretokens_in_file,
        default_workers,
        find_chunk_boundaries,
    )
else:  # run as a script, `python milestones/04/fastbpe.py`: this folder is on sys.path
    from encoder import NO_MERGE, FastTokenizer
    from merges import descending, learn_merges, merge_in_word, train, train_from_file
    from pretokens import (
        CHUNK_BYTES,
        GPT2_SPLIT_PATTERN,
        count_pretokens,
        count_pretokens_in_file,
        default_workers,
        find_chunk_boundaries,
    )

bpe = dependency("03", "bpe")  # your milestone 03

__all__ = [
    "CHUNK_BYTES", "GPT2_SPLIT_PATTERN", "NO_MERGE", "FastTokenizer", "bpe", "count_pretokens",
    "count_pretokens_in_file", "default_workers", "descending", "find_chunk_boundaries", "learn_merges",
    "merge_in_word", "train", "train_from_file",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fast byte-level BPE: train a tokenizer, or write the results table.")
    commands = parser.add_subparsers(dest="command", required=True)
    train_cmd = commands.add_parser("train", help="train a tokenizer on a text file and save it as JSON")
    train_cmd.add_argument("--input", type=Path, help="a UTF-8 text file (default: TinyShakespeare)")
    train_cmd.add_argument("--vocab-size", type=int, default=1024)
    train_cmd.add_argument("--special", action="append", default=[], help="a special token (repeatable)")
    train_cmd.add_argument("--workers", type=int, default=None)
    train_cmd.add_argument("--out", type=Path, default=Path("tokenizer.json"))
    results_cmd = commands.add_parser("results", help="train 4K/8K/16K tokenizers and compare with GPT-2, "
                                                      "Hugging Face tokenizers and tiktoken")
    results_cmd.add_argument("--corpus", action="append", default=None,
                             help="a dataset name (repeatable; default: tinystories-valid-head and tinyshakespeare; "
                                  "with the internet, try tinystories-v2-valid)")
    results_cmd.add_argument("--vocab-size", type=int, action="append", default=None)
    results_cmd.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.input is None:
            from llmfs.data import fetch_file
            args.input = fetch_file("tinyshakespeare")
        start = time.perf_counter()
        tokenizer = train_from_file(args.input, args.vocab_size, args.special, workers=args.workers, progress=True)
        seconds = time.perf_counter() - start
        tokenizer.save(args.out)
        print(f"trained {tokenizer.vocab_size} tokens on {args.input} in {seconds:.2f} s; saved {args.out}")
    else:
        if __package__:
            from .results import write_results
        else:
            from results import write_results
        write_results(train_from_file, args.corpus or ["tinystories-valid-head", "tinyshakespeare"],
                      args.vocab_size or [4096, 8192, 16384], args.out)


if __name__ == "__main__":
    main()
