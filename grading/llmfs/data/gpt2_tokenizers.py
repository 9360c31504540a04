"""GPT-2's reference tokenizers, built offline from the registry's encoder.json and vocab.bpe.

Every test that compares against tiktoken or Hugging Face gets its tokenizer here, so none of them
needs the network:

    gpt2_tiktoken()         tiktoken's "gpt2" encoding (r50k), same ranks and regex as get_encoding("gpt2")
    gpt2_hf_tokenizer()     transformers.GPT2TokenizerFast
"""

from __future__ import annotations

import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from llmfs.data import dataset, fetch

ENDOFTEXT = "<|endoftext|>"


def _gpt2_files() -> tuple[Path, Path, dict[str, str]]:
    folder = fetch("gpt2-bpe")
    hashes = {f.name: f.sha256 for f in dataset("gpt2-bpe").files}
    return folder / "encoder.json", folder / "vocab.bpe", hashes


@lru_cache(maxsize=1)
def gpt2_tiktoken():
    """tiktoken's gpt2 encoding (n_vocab 50,257; <|endoftext|> = 50256) from local files."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    encoder_json, vocab_bpe, hashes = _gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json),
        vocab_bpe_hash=hashes["vocab.bpe"], encoder_json_hash=hashes["encoder.json"],
    )
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)


@lru_cache(maxsize=1)
def gpt2_hf_tokenizer():
    """transformers' GPT2TokenizerFast from local files (`from_pretrained` on a folder works in 4.x and 5.x)."""
    from transformers import GPT2TokenizerFast

    encoder_json, vocab_bpe, _ = _gpt2_files()
    with tempfile.TemporaryDirectory(prefix="llmfs-gpt2-") as folder:
        shutil.copyfile(encoder_json, Path(folder) / "vocab.json")
        shutil.copyfile(vocab_bpe, Path(folder) / "merges.txt")
        return GPT2TokenizerFast.from_pretrained(folder)
