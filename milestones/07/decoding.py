"""Milestone 07: generation with the KV cache: one prefill over the prompts, then one token per step.

    python milestones/07/decoding.py generate runs/05/cpu-shakespeare/last.pt --prompt "ROMEO:" --prompt "JULIET:\nO"
    python milestones/07/decoding.py generate runs/05/cpu-shakespeare/last.pt --prompt "ROMEO:" --dtype bfloat16
    python milestones/07/decoding.py results        # tokens/s with and without the cache: milestones/07/results/

Milestone 06's `generate` runs the whole context at every step. Here the prompt goes through the model once (the
*prefill*: every prompt token's keys and values go into the cache, and the last position's logits give the first
new token), and each later step feeds only the newest token (the *decode*). The choice of each token is 06's:
`process_logits`, `sample_next_token`, greedy argmax, end-of-text per row; so, with the same model, the tokens
are exactly those of 06's uncached loop, only faster.

Prompts of different lengths share a batch by *left padding*: the real tokens of every row end at the same
column, so every row's next token is appended at the same place. The attention mask (1 real, 0 padding) keeps
padding out of attention and out of 06's penalties, and each row's positions count its real tokens only.

    prompts  "a b c d"  and  "e f":     idx   [ a  b  c  d ]    mask [1 1 1 1]   positions [0 1 2 3]
                                              [ .  .  e  f ]         [0 0 1 1]             [0 0 0 1]

Beyond the block size: this generate raises a ValueError before any work (the prompt and the new tokens must
fit `model.config.block_size`). 06's loop crops the context instead; with a cache that would mean running the
last window again at every step, since learned positions shift: exact, but as slow as no cache at all.

Shapes in the comments: B batch, T prompt length (with padding), V vocabulary.

    task07_2  prefill, generate (one row or equal lengths: no padding)
    task07_3  left_pad, check_attention_mask (variable-length batches)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from llmfs.loader import dependency

if __package__:  # imported as part of the milestone (the tests do this)
    from . import kvcache
else:  # run as a script: python milestones/07/decoding.py
    import kvcache

sampling = dependency("06", "sampling")  # SamplingConfig, process_logits, sample_next_token, draw

# ----------------------------------------------------------------------------------------------------
# task07_2: prefill and decode


@torch.no_grad()
def prefill(model: nn.Module, idx: torch.Tensor, max_len: int, attention_mask: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, kvcache.KVCache]:
    """Run the prompts idx (B, T) through `model` once: a new cache for max_len positions (dtype and device of the
    model, `KVCache.for_model`) holding their keys and values, and the float32 logits (B, V) of the last position.

    With `attention_mask` (B, T) (left padding, task07_3), pass it on with `kvcache.position_ids_from_mask(...)`.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `prefill` in milestones/07/decoding.py (see milestones/07/README.md)')


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, *, attention_mask: torch.Tensor | None = None,
             eos_token_id: int | None = None, pad_token_id: int | None = None,
             generator: sampling.Generators = None, **settings) -> torch.Tensor:
    """Continue each row of idx (B, T) by up to max_new_tokens tokens with a KV cache; returns (B, T + n).

    The same tokens as 06's `generate(model, idx, max_new_tokens, ...)`: `settings` are SamplingConfig's
    (do_sample, temperature, top_k, top_p, min_tokens_to_keep, repetition_penalty, presence_penalty,
    frequency_penalty); eos_token_id, pad_token_id and generator mean what they mean there.

    1. Check: idx a 2-D int64 tensor with at least one token per row (ValueError naming `idx`), max_new_tokens an
       int >= 0 (naming `max_new_tokens`), T + max_new_tokens <= model.config.block_size (ValueError naming
       `block_size`: the cache holds no more); build the SamplingConfig (it checks the rest).
    2. `prefill` with a cache of T + max_new_tokens positions; then each step: choose the next tokens from the
       logits as 06 does (process_logits with the mask of real tokens when config.changes_logits, then
       sample_next_token or argmax), pad finished rows, append; stop when every row has ended; otherwise feed
       the new tokens (B, 1) to `forward_cached` for the next logits. No forward pass after the last token.
    3. With `attention_mask` (task07_3): `check_attention_mask` first; the mask of real tokens starts as the
       attention mask (06's penalties then skip the padding); each step extends the attention mask by a column
       of ones and gives each row's new token the position after its last one.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `generate` in milestones/07/decoding.py (see milestones/07/README.md)')


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dim()}-D tensor of {value.dtype} with shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


# ----------------------------------------------------------------------------------------------------
# task07_3: variable-length batches


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of token ids, of different lengths, as one left-padded batch: idx (B, T) int64 with pad_token_id
    before each shorter prompt, and the mask (B, T) bool, True at real tokens. T is the longest prompt.
    ValueError for no prompts or an empty one (naming its index)."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `left_pad` in milestones/07/decoding.py (see milestones/07/README.md)')


def check_attention_mask(idx: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The attention mask as a bool tensor, after checking it (ValueError naming `attention_mask` and what is
    wrong): a tensor of idx's shape (B, T), only 0/1 (or False/True), at least one real token per row, and
    padding on the left only (once a row's real tokens start, no 0 follows)."""
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `check_attention_mask` in milestones/07/decoding.py (see milestones/07/README.md)')


# ----------------------------------------------------------------------------------------------------
# The command line (given code)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def complete_batch(gen, prompts: list[str], max_new_tokens: int | None = None, seed: int = 0,
                   dtype: torch.dtype = torch.float32, **settings) -> list[str]:
    """Continuations of several prompts at once, one left-padded batch, one generator per row (seeds seed,
    seed + 1, ...), so each row's text is what that prompt alone would give. `gen` is 06's LoadedModel;
    max_new_tokens None: 200, or fewer if the block size is shorter."""
    ids = [gen.encode(p) for p in prompts]
    pad = gen.eos_token_id if gen.eos_token_id is not None else 0
    idx, mask = left_pad(ids, pad)
    if max_new_tokens is None:
        max_new_tokens = max(0, min(200, gen.model.config.block_size - idx.size(1)))
    model = kvcache.to_dtype(gen.model, dtype)
    generators = [torch.Generator().manual_seed(seed + row) for row in range(len(prompts))]
    out = generate(model, idx, max_new_tokens, attention_mask=mask, eos_token_id=gen.eos_token_id,
                   generator=generators, **settings)
    return [gen.decode([t for t in row[idx.size(1):].tolist() if t != gen.eos_token_id]) for row in out]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate with a KV cache (milestone 07).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("generate", help="continue prompts with a checkpoint of milestone 05, as one batch")
    run.add_argument("checkpoint", type=Path)
    run.add_argument("--prompt", action="append", help="repeat for a batch (default: one newline)")
    run.add_argument("--max-new-tokens", type=int, default=None,
                     help="(default: 200, or what fits the model's block size)")
    run.add_argument("--greedy", action="store_true", help="the most likely token each step (default: sample)")
    run.add_argument("--temperature", type=float, default=1.0)
    run.add_argument("--top-k", type=int, default=None)
    run.add_argument("--top-p", type=float, default=1.0)
    run.add_argument("--repetition-penalty", type=float, default=1.0)
    run.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    run.add_argument("--seed", type=int, default=0)
    page = commands.add_parser("results", help="rebuild the results page (milestones/07/results)")
    page.add_argument("--out", type=Path, default=Path("milestones/07/results"), help="(default: %(default)s)")
    page.add_argument("--quick", action="store_true", help="fewer lengths, for a try-out")
    args = parser.parse_args(argv)
    if args.command == "results":
        if __package__:
            from .results import write_results
        else:
            from results import write_results
        write_results(args.out, quick=args.quick)
        return
    prompts = [p.encode().decode("unicode_escape") for p in (args.prompt or ["\n"])]
    try:
        gen = sampling.load_generator(args.checkpoint)
        if gen.eos_token_id is None:
            parser.error("milestone 07 generates with milestone 05's GPT-2 checkpoints (last.pt)")
        texts = complete_batch(gen, prompts, args.max_new_tokens, args.seed, DTYPES[args.dtype],
                               do_sample=not args.greedy, temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, repetition_penalty=args.repetition_penalty)
    except (ValueError, TypeError, FileNotFoundError) as e:
        parser.error(str(e))
    for prompt, text in zip(prompts, texts, strict=True):
        print(f"--- {prompt!r}\n{prompt}{text}\n")


if __name__ == "__main__":
    main()
