"""Milestone 07: generation with the KV cache: one prefill over the prompts, then one token per step.

    python milestones/07/decoding.py generate runs/05/cpu-shakespeare/last.pt --prompt "ROMEO:" --prompt "JULIET:\nO"
    python milestones/07/decoding.py results        # tokens/s with and without the cache: milestones/07/results/

The prompt goes through the model once (the *prefill*), then each step feeds only the newest token (the *decode*).
Each token is chosen as 06 does, so the tokens are exactly those of 06's uncached loop, only faster. Prompts of
different lengths share a batch by *left padding* (the README's Variable-length batches).
Shapes in the comments: B batch, T prompt length (with padding), V vocabulary.
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

    The same tokens as 06's `generate`: `settings` are SamplingConfig's; eos_token_id, pad_token_id and generator
    mean what they mean there. idx, max_new_tokens and the block size are checked for you.
    `prefill` with a cache of T + max_new_tokens positions; then each step: choose the next tokens as 06 does
    (process_logits with the mask of real tokens when config.changes_logits, then sample_next_token or argmax),
    pad finished rows, append, stop when every row has ended, else feed the new tokens (B, 1) to `forward_cached`.
    With `attention_mask` (task07_3): `check_attention_mask` first; it is the first mask of real tokens; each step
    adds a column of ones to it and gives each row's new token the position after its last one.
    """
    _check_generate(model, idx, max_new_tokens)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 07: write `generate` in milestones/07/decoding.py (see milestones/07/README.md)')


def _check_generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int) -> None:
    """ValueError naming `idx`, `max_new_tokens` (06's checks) or `block_size` (given code): the cache holds no more."""
    sampling.check_prompt(idx, max_new_tokens)
    T, block_size = idx.size(1), model.config.block_size
    if T + max_new_tokens > block_size:
        raise ValueError(f"a prompt of {T} tokens and max_new_tokens={max_new_tokens} do not fit block_size="
                         f"{block_size}: the KV cache holds {block_size} positions (06's uncached generate crops)")


def _check_prompts(prompts: Sequence[Sequence[int]]) -> None:
    if not prompts:
        raise ValueError("left_pad: no prompts")
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"left_pad: prompt {i} is empty: each prompt needs at least one token")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dim()}-D tensor of {value.dtype} with shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


# ----------------------------------------------------------------------------------------------------
# task07_3: variable-length batches


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of token ids, of different lengths, as one left-padded batch: idx (B, T) int64 with pad_token_id
    before each shorter prompt, and the mask (B, T) bool, True at real tokens. T is the longest prompt.
    (No prompts or an empty one: ValueError, checked for you.)"""
    _check_prompts(prompts)
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
