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
    ### BEGIN SOLUTION
    context = encode(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        ending_ids = encode(" " + ending)
        rows.append(context + ending_ids)
        masks.append([0] * len(context) + [1] * len(ending_ids))
    width = max(len(row) for row in rows)
    tokens = torch.zeros(4, width, dtype=torch.long)
    mask = torch.zeros(4, width, dtype=torch.long)
    for i, (row, m) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(m)] = torch.tensor(m)
    return tokens, mask, int(example["label"])
    ### END SOLUTION


def ending_losses(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From logits (4, T, V) of `tokens`: each row's summed and mean cross-entropy over its ending, both (4,).

    Position t predicts token t + 1, so shift: logits[:, :-1] against tokens[:, 1:], weighted by mask[:, 1:].
    """
    ### BEGIN SOLUTION
    shift_logits = logits[:, :-1].float()  # (4, T-1, V)
    shift_tokens, shift_mask = tokens[:, 1:], mask[:, 1:].float()  # (4, T-1)
    losses = F.cross_entropy(shift_logits.transpose(1, 2), shift_tokens, reduction="none")  # (4, T-1)
    summed = (losses * shift_mask).sum(dim=1)
    return summed, summed / shift_mask.sum(dim=1)
    ### END SOLUTION


@torch.no_grad()
def evaluate(logits_of: Callable[[torch.Tensor], torch.Tensor], examples: Iterable[dict],
             encode: Callable[[str], list[int]], progress: bool = False,
             max_len: int | None = None) -> dict[str, float]:
    """acc (lowest summed loss is the label) and acc_norm (lowest mean loss), over `examples`.

    `logits_of(tokens)` maps (4, T) ids to (4, T, V) logits: `lambda t: model(t)[0]` for our GPT. A model with a
    short context passes `max_len` (its block_size): rows longer than that keep their last max_len tokens.
    """
    ### BEGIN SOLUTION
    examples = list(examples)
    correct = correct_norm = 0
    for example in tqdm(examples, desc="hellaswag", disable=not progress):
        tokens, mask, label = render_example(example, encode)
        if max_len is not None and tokens.size(1) > max_len:
            tokens, mask = tokens[:, -max_len:], mask[:, -max_len:]
        summed, mean = ending_losses(logits_of(tokens), tokens, mask)
        correct += int(summed.argmin().item() == label)
        correct_norm += int(mean.argmin().item() == label)
    n = max(len(examples), 1)
    return {"acc": correct / n, "acc_norm": correct_norm / n, "n": len(examples)}
    ### END SOLUTION
