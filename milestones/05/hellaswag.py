"""Milestone 05: HellaSwag, evaluated the way build-nanogpt does it (completion style).

Each example is a context and four endings; one is right. The model reads context + ending for each of the
four and we ask which ending it finds most likely: the ending tokens' cross-entropy, summed (`acc`) or
averaged over the ending's length (`acc_norm`, which does not favour short endings). Random guessing scores
0.25; OpenAI's GPT-2 124M scores 0.2945 acc_norm with this method.

    task05_7  render_example, ending_losses, evaluate
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm


def load_examples(path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The HellaSwag validation examples (10,042), from the course's data registry unless a path is given."""
    if path is None:
        from llmfs.data import fetch_file
        path = fetch_file("hellaswag-val")
    examples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            examples.append(json.loads(line))
            if limit is not None and len(examples) >= limit:
                break
    return examples


def gpt2_encode() -> Callable[[str], list[int]]:
    """GPT-2's tokenizer (tiktoken's encode_ordinary): the `encode` for OpenAI's GPT-2 and the course's models."""
    from llmfs.data.gpt2_tokenizers import gpt2_tiktoken

    return gpt2_tiktoken().encode_ordinary


# ----------------------------------------------------------------------------------------------------
# task05_7: scoring endings


def render_example(example: dict, encode: Callable[[str], list[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """tokens (4, T) and mask (4, T) for the four endings, and the label.

    Row i is encode(ctx) followed by encode(" " + endings[i]) (the space joins them, as in build-nanogpt),
    right-padded with 0 to the longest row. mask is 1 on the ending's tokens and 0 elsewhere.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `render_example` in milestones/05/hellaswag.py (see milestones/05/README.md)')


def ending_losses(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From logits (4, T, V) of `tokens`: each row's summed and mean cross-entropy over its ending, both (4,).

    Position t predicts token t + 1, so shift: logits[:, :-1] against tokens[:, 1:], weighted by mask[:, 1:].
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `ending_losses` in milestones/05/hellaswag.py (see milestones/05/README.md)')


@torch.no_grad()
def evaluate(logits_of: Callable[[torch.Tensor], torch.Tensor], examples: Iterable[dict],
             encode: Callable[[str], list[int]], progress: bool = False,
             max_len: int | None = None) -> dict[str, float]:
    """acc (lowest summed loss is the label) and acc_norm (lowest mean loss), over `examples`.

    `logits_of(tokens)` maps (4, T) ids to (4, T, V) logits: `lambda t: model(t)[0]` for our GPT. A model with a
    short context passes `max_len` (its block_size): rows longer than that keep their last max_len tokens.
    """
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 05: write `evaluate` in milestones/05/hellaswag.py (see milestones/05/README.md)')
