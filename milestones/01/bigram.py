"""Milestone 01: a character-level bigram language model, built by counting and as a neural network.

    task01_1  CharTokenizer (__init__, encode, decode), train_val_split, get_batch
    task01_2  count_bigrams, bigram_probabilities, bigram_nll
    task01_3  BigramLanguageModel.forward, BigramLanguageModel.generate
    task01_4  estimate_loss, train

Write the parts marked `# YOUR CODE HERE`; the checks of the arguments are given. One function at a time:
`pytest milestones/01 -k encode`. README.md explains each step; then `python milestones/01/bigram.py` trains.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F
from tqdm.auto import tqdm

# ----------------------------------------------------------------------------------------------------
# Checks of the arguments (given code): each raises TypeError or ValueError saying what is wrong.


def _check_text(text: object, what: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{what} takes a str, got {type(text).__name__}")


def _check_known(text: str, chars: list[str]) -> None:
    """ValueError naming the first character of `text` outside the vocabulary `chars`, and its position."""
    unknown = set(text) - set(chars)
    if unknown:
        position = next(i for i, ch in enumerate(text) if ch in unknown)
        raise ValueError(f"character {text[position]!r} at position {position} is not in the vocabulary "
                         f"of {len(chars)} characters")


def _check_ids(ids: list[int] | torch.Tensor, vocab_size: int) -> list[int]:
    """`ids` as a list of ints, each in [0, vocab_size)."""
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.dim() != 1:
            raise TypeError(f"decode() takes a 1-D integer tensor, got {ids.dtype} with shape {tuple(ids.shape)}")
        ids = ids.tolist()
    for position, i in enumerate(ids):
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"decode() takes integer ids, got {i!r} at position {position}")
        if not 0 <= i < vocab_size:
            raise ValueError(f"id {i} at position {position} is outside the vocabulary [0, {vocab_size})")
    return list(ids)


def _check_split(data: torch.Tensor, train_fraction: float) -> None:
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}")
    if data.dim() != 1:
        raise ValueError(f"train_val_split takes a 1-D tensor of ids, got shape {tuple(data.shape)}")
    n = int(train_fraction * len(data))
    if n == 0 or n == len(data):
        raise ValueError(f"{len(data)} ids are too few to split {train_fraction:.0%}/{1 - train_fraction:.0%}")


def _check_batch(data: torch.Tensor, batch_size: int, block_size: int) -> None:
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be at least 1, got {batch_size} and {block_size}")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} ids, too few for a window of block_size={block_size} plus a target")


def _check_range(data: torch.Tensor, vocab_size: int) -> None:
    if len(data) and (data.min() < 0 or data.max() >= vocab_size):
        raise ValueError(f"ids must lie in [0, {vocab_size}), got [{int(data.min())}, {int(data.max())}]")


def _check_smoothing(counts: torch.Tensor, k: float) -> None:
    if k < 0:
        raise ValueError(f"the smoothing constant k must be >= 0, got {k}")
    if k == 0 and (counts.sum(dim=1) == 0).any():
        raise ValueError("with k=0 a character that is never followed by anything has no probabilities; use k > 0")


def _check_at_least(name: str, value: int, least: int) -> None:
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")

# ----------------------------------------------------------------------------------------------------
# task01_1: from text to batches of token ids


class CharTokenizer:
    """Maps each distinct character of a text to an integer id, and back.

    The vocabulary is the sorted list of distinct characters, so ids do not depend on the order the
    characters first appear in: for "hello", `chars == ['e', 'h', 'l', 'o']`, so "e" is 0 and "o" is 3.
    """

    def __init__(self, text: str) -> None:
        """Build the vocabulary from `text`.

        Sets `self.chars` (the sorted distinct characters) and whatever lookup table `encode` needs.
        """
        _check_text(text, "CharTokenizer")
        if not text:
            raise ValueError("CharTokenizer cannot build a vocabulary from an empty text")
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 01: write `CharTokenizer.__init__` in milestones/01/bigram.py (see milestones/01/README.md)')

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """The id of each character of `text`, in order (the given checks reject a character that is not
        in the vocabulary, naming it and its position)."""
        _check_text(text, "encode()")
        _check_known(text, self.chars)
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 01: write `CharTokenizer.encode` in milestones/01/bigram.py (see milestones/01/README.md)')

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """The text whose encoding is `ids`: a list of ints, or a 1-D integer tensor that the given check
        turns into one (it also rejects ids outside [0, vocab_size))."""
        ids = _check_ids(ids, self.vocab_size)
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 01: write `CharTokenizer.decode` in milestones/01/bigram.py (see milestones/01/README.md)')


def train_val_split(data: torch.Tensor, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D tensor of token ids: the first `int(train_fraction * len(data))` ids train, the rest
    validate. No shuffling: the validation text is text the model never saw, not a random sample of it.
    """
    _check_split(data, train_fraction)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 01: write `train_val_split` in milestones/01/bigram.py (see milestones/01/README.md)')


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of `batch_size` windows of `block_size` consecutive ids, and their targets.

    Draw the window starts with exactly one call,
        ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    then x[b] = data[ix[b] : ix[b] + block_size] and y[b] = data[ix[b] + 1 : ix[b] + block_size + 1]:
    the target at each position is the next id. Both are int64 tensors of shape (batch_size, block_size).
    """
    _check_batch(data, batch_size, block_size)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 01: write `get_batch` in milestones/01/bigram.py (see milestones/01/README.md)')


# ----------------------------------------------------------------------------------------------------
# task01_2: the bigram model by counting


def count_bigrams(data: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """counts[a, b] = how many times id b directly follows id a in the 1-D tensor `data`.

    Returns an int64 tensor of shape (vocab_size, vocab_size). Count with tensor operations, not a
    Python loop (README.md, "Speed").
    """
    _check_range(data, vocab_size)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 01: write `count_bigrams` in milestones/01/bigram.py (see milestones/01/README.md)')


def bigram_probabilities(counts: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """Row-normalised next-id probabilities with add-k smoothing:

        P[a, b] = (counts[a, b] + k) / (sum_b' counts[a, b'] + k * V)

    Smoothing gives bigrams never seen in training a small probability instead of zero (whose log
    is -inf). Returns a float32 (V, V) tensor whose rows sum to 1.
    """
    _check_smoothing(counts, k)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 01: write `bigram_probabilities` in milestones/01/bigram.py (see milestones/01/README.md)')


def bigram_nll(probs: torch.Tensor, data: torch.Tensor) -> float:
    """Mean negative log-likelihood of `data` under bigram probabilities `probs`:
    -(1 / (N - 1)) * sum_i log probs[data[i], data[i + 1]], in nats.
    """
    _check_at_least("the number of ids bigram_nll scores", len(data), 2)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 01: write `bigram_nll` in milestones/01/bigram.py (see milestones/01/README.md)')


# ----------------------------------------------------------------------------------------------------
# task01_3: the bigram model as a neural network


class BigramLanguageModel(nn.Module):
    """Each id looks up a row of a (V, V) table: the logits of the next id. Trained with gradient
    descent, the table learns the log of the counting model's probabilities (plus a constant per row).
    """

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) int64 ids. Returns (logits, loss).

        logits: (B, T, V), the row of the table for each id. loss: the mean cross-entropy between
        logits and targets over all B*T positions (F.cross_entropy wants (N, V) logits and (N,)
        targets), or None when `targets` is None.
        """
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 01: write `BigramLanguageModel.forward` in milestones/01/bigram.py (see milestones/01/README.md)')

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Extend each row of `idx` (B, T) by `max_new_tokens` sampled ids; returns (B, T + max_new_tokens).

        At each step: the logits of the last position, softmax, then one draw with
        `torch.multinomial(probs, num_samples=1, generator=generator)`, appended to the sequence.
        The same generator seed gives the same text.
        """
        if idx.dim() != 2:
            raise ValueError(f"generate() takes idx of shape (B, T), got {tuple(idx.shape)}")
        _check_at_least("max_new_tokens", max_new_tokens, 0)
        # YOUR CODE HERE
        raise NotImplementedError('Milestone 01: write `BigramLanguageModel.generate` in milestones/01/bigram.py (see milestones/01/README.md)')


# ----------------------------------------------------------------------------------------------------
# task01_4: measuring and training


@torch.no_grad()
def estimate_loss(model: nn.Module, splits: dict[str, torch.Tensor], batch_size: int, block_size: int,
                  eval_iters: int, generator: torch.Generator | None = None) -> dict[str, float]:
    """The mean loss over `eval_iters` batches of each split, e.g. {"train": 2.45, "val": 2.49}.

    For each split in the order given, draw `eval_iters` batches with `get_batch(data, batch_size,
    block_size, generator)` and average `model(x, y)`'s losses. Run in eval mode (dropout off) with
    no gradients, and leave the model in the mode it was in.
    """
    _check_at_least("eval_iters", eval_iters, 1)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 01: write `estimate_loss` in milestones/01/bigram.py (see milestones/01/README.md)')


def train(model: nn.Module, train_data: torch.Tensor, *, max_iters: int, batch_size: int, block_size: int,
          learning_rate: float, generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Train `model` with torch.optim.AdamW(model.parameters(), lr=learning_rate) for `max_iters`
    steps; returns the training loss of every step.

    Each step: a batch from `get_batch(train_data, batch_size, block_size, generator)`, the loss,
    `optimizer.zero_grad(set_to_none=True)`, `loss.backward()`, `optimizer.step()`. With `progress`,
    show a tqdm progress bar.
    """
    _check_at_least("max_iters", max_iters, 0)
    # YOUR CODE HERE
    raise NotImplementedError('Milestone 01: write `train` in milestones/01/bigram.py (see milestones/01/README.md)')


# ----------------------------------------------------------------------------------------------------
# Putting it together: `python milestones/01/bigram.py` (given; nothing to write below)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="Train the character bigram on TinyShakespeare.")
    parser.add_argument("--max-iters", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--eval-iters", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", type=Path, default=Path("runs/01"), help="where results.json and loss.png go")
    args = parser.parse_args(argv)

    from llmfs.data import fetch_file
    from llmfs.fsutil import atomic_write_text

    text = fetch_file("tinyshakespeare").read_text(encoding="utf-8")
    tokenizer = CharTokenizer(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_data, val_data = train_val_split(data)
    print(f"{len(text):,} characters, vocabulary of {tokenizer.vocab_size}")

    probs = bigram_probabilities(count_bigrams(train_data, tokenizer.vocab_size), k=1.0)
    count_nll = bigram_nll(probs, val_data)
    print(f"count model (add-1 smoothing): validation NLL {count_nll:.4f}, uniform would be "
          f"{math.log(tokenizer.vocab_size):.4f}")

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = BigramLanguageModel(tokenizer.vocab_size)
    losses = train(model, train_data, max_iters=args.max_iters, batch_size=args.batch_size,
                   block_size=args.block_size, learning_rate=args.learning_rate, generator=generator)
    estimate = estimate_loss(model, {"train": train_data, "val": val_data}, args.batch_size, args.block_size,
                             args.eval_iters, generator)
    print(f"neural bigram after {args.max_iters} steps: train {estimate['train']:.4f}, val {estimate['val']:.4f}")

    sample = model.generate(torch.zeros((1, 1), dtype=torch.long), 300, generator)[0]
    print("sample:\n" + tokenizer.decode(sample))

    results = {"count_model_val_nll": count_nll, "train_loss": estimate["train"], "val_loss": estimate["val"],
               **{k: v for k, v in vars(args).items() if k != "out"}}
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    _plot(losses, count_nll, args.out / "loss.png")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'loss.png'}")
    return results


def _plot(losses: list[float], count_nll: float, path: Path) -> None:
    from matplotlib.figure import Figure  # the object API: a notebook keeps its backend

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(losses, lw=0.6, alpha=0.6, label="training loss (one batch)")
    window = max(1, len(losses) // 50)
    smooth = torch.tensor(losses).unfold(0, window, 1).mean(1) if len(losses) >= window else torch.tensor(losses)
    ax.plot(range(window - 1, window - 1 + len(smooth)), smooth, label=f"running mean ({window} steps)")
    ax.axhline(count_nll, color="k", ls="--", lw=1, label=f"count model, validation ({count_nll:.3f})")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title="Character bigram on TinyShakespeare")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


if __name__ == "__main__":
    main()
