"""Milestone 06: generating text with a GPT, greedy or sampled, token for token as Hugging Face's `generate`.

    task06_1  generate (greedy; the loop, the context crop, end-of-text)
    task06_4  process_logits, sample_next_token (penalties, temperature, top-k, top-p, then a seeded draw)

The random draw (`draw`), the settings (`SamplingConfig`), the argument checks and `last_position_only` are
given; README.md explains each. Shapes: B batch, T tokens so far, V vocabulary. Once written:

    python milestones/06/sampling.py generate runs/05/cpu-shakespeare/last.pt --prompt "ROMEO:" --top-p 0.9
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from llmfs.loader import dependency

if __package__:  # imported as part of the milestone (the tests do this)
    from . import processors
else:  # run as a script: python milestones/06/sampling.py
    import processors

Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class SamplingConfig:
    """How to choose each next token. The defaults change nothing: greedy decoding on the raw logits.

    Creating one checks every setting (`processors.check`), so bad input fails before any work is done:
    temperature only matters, and is only checked, when sampling.
    """

    do_sample: bool = False  # False: the most likely token (greedy); True: a random draw
    temperature: float = 1.0
    top_k: int | None = None  # None: off
    top_p: float = 1.0  # 1: off
    min_tokens_to_keep: int = 1  # top-k and top-p never keep fewer
    repetition_penalty: float = 1.0  # 1: off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.do_sample:
            processors.check("temperature", self.temperature)
        if self.top_k is not None:
            processors.check("top_k", self.top_k)
        for name in ("top_p", "min_tokens_to_keep", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            processors.check(name, getattr(self, name))

    @property
    def changes_logits(self) -> bool:
        """False when process_logits would return the logits as they are (no penalty, and no warper when sampling)."""
        penalized = self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0
        warped = self.do_sample and (self.temperature != 1 or self.top_k is not None or self.top_p < 1)
        return penalized or warped


def draw(probs: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """One token id per row of probs (B, V) -> (B,), with torch.multinomial (given code).

    generator None: torch's global random state, one call for the whole batch, exactly as Hugging Face's
    generate draws; so after torch.manual_seed(s) both pick the same tokens from the same probabilities.
    One torch.Generator: the same call, drawing from it. A list of B generators: row b draws from generator b,
    so a row's tokens do not depend on what else is in the batch (milestone 07 batches prompts).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
    if len(generator) != probs.size(0):
        raise ValueError(f"generator: got a list of {len(generator)} generators for a batch of {probs.size(0)} rows; "
                         "pass one per row, a single torch.Generator, or None")
    rows = zip(probs, generator, strict=True)
    return torch.cat([torch.multinomial(row, num_samples=1, generator=g) for row, g in rows])


@contextlib.contextmanager
def last_position_only(model: nn.Module) -> Iterator[None]:
    """Within this block, `model(idx)` computes the logits of the last position only: (B, 1, V) (given code).

    Generation needs just those, and the final projection is costly: for GPT-2 small it is 2 x 768 x 50,257
    flops per position, about 40% of the whole forward pass. A forward pre-hook hands `model.lm_head` the last
    position of its input; Hugging Face's generate does the same with `logits_to_keep=1`.
    """
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Module):
        yield  # a model without an lm_head module: it computes every position
        return
    handle = head.register_forward_pre_hook(lambda _module, args: (args[0][:, -1:, :], *args[1:]))
    try:
        yield
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------------
# task06_1: the generation loop


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, *, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0, min_tokens_to_keep: int = 1,
             repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
             eos_token_id: int | None = None, pad_token_id: int | None = None,
             generator: Generators = None) -> torch.Tensor:
    """Continue each row of idx (B, T) by up to max_new_tokens tokens; returns (B, T + n) with n <= max_new_tokens.

    `model(ids)` returns (logits, loss); `model.config.block_size` is the longest context it takes. Each step,
    inside `with last_position_only(model):`: crop the context to the last block_size tokens; take the last
    position's logits as float32 (B, V); if `config.changes_logits`, pass them through `process_logits` (with
    the prompt's length and the mask of real tokens); pick `sample_next_token` when sampling, else the argmax.
    Once a row has produced `eos_token_id`, its later tokens are `pad_token_id` (by default the eos id), masked
    as padding; stop when every row has finished. The checks of the arguments are given (README.md, "generate").
    """
    check_prompt(idx, max_new_tokens)
    config = SamplingConfig(do_sample, temperature, top_k, top_p, min_tokens_to_keep, repetition_penalty,
                            presence_penalty, frequency_penalty)
    ### BEGIN SOLUTION
    if pad_token_id is None:
        pad_token_id = eos_token_id
    block_size = model.config.block_size
    prompt_length = idx.size(1)
    mask = torch.ones_like(idx, dtype=torch.bool)  # (B, T): False marks padding after end of text
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,)
    with last_position_only(model):
        for _ in range(max_new_tokens):
            logits = model(idx[:, -block_size:])[0][:, -1, :].float()  # (B, V)
            if config.changes_logits:
                logits = process_logits(logits, idx, prompt_length, config, mask)
            next_token = sample_next_token(logits, generator) if config.do_sample else logits.argmax(dim=-1)  # (B,)
            if eos_token_id is not None:
                next_token = next_token.masked_fill(finished, pad_token_id)
            idx = torch.cat([idx, next_token[:, None]], dim=1)
            mask = torch.cat([mask, ~finished[:, None]], dim=1)
            if eos_token_id is not None:
                finished |= next_token == eos_token_id
                if finished.all():
                    break
    return idx
    ### END SOLUTION


def check_prompt(idx: object, max_new_tokens: object) -> None:
    """Raise ValueError naming `idx` unless it is a (B, T) int64 tensor with at least one token per row (an empty
    prompt has no last token to continue), or naming `max_new_tokens` unless it is an int >= 0 (given code)."""
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long:
        raise ValueError(f"idx must be a (B, T) tensor of int64 token ids, got {_describe(idx)}")
    if idx.size(0) == 0 or idx.size(1) == 0:
        raise ValueError(f"idx is an empty prompt of shape {tuple(idx.shape)}: each row needs at least one token")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dim()}-D tensor of {value.dtype} with shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


# ----------------------------------------------------------------------------------------------------
# task06_4: the sampler


def process_logits(logits: torch.Tensor, tokens: torch.Tensor, prompt_length: int, config: SamplingConfig,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The processors of `config`, in Hugging Face's order, on logits (B, V) for sequences tokens (B, T):

    1. repetition penalty over all of `tokens` (prompt and generated);
    2. presence and frequency penalties over the generated tokens only, tokens[:, prompt_length:];
    3. only when sampling: temperature, then top-k, then top-p (with config.min_tokens_to_keep).

    Skip a processor whose setting is off (penalty 1 or 0, temperature 1, top_k None, top_p 1). `mask` (B, T)
    marks real tokens (1) and padding (0) and goes to the penalties. The order matters: temperature changes
    which tokens top-p keeps, so it must come first.
    """
    ### BEGIN SOLUTION
    if config.repetition_penalty != 1:
        logits = processors.repetition_penalty(logits, tokens, config.repetition_penalty, mask)
    if config.presence_penalty != 0 or config.frequency_penalty != 0:
        generated_mask = None if mask is None else mask[:, prompt_length:]
        logits = processors.presence_frequency_penalty(logits, tokens[:, prompt_length:], config.presence_penalty,
                                            config.frequency_penalty, generated_mask)
    if config.do_sample:
        if config.temperature != 1:
            logits = processors.apply_temperature(logits, config.temperature)
        if config.top_k is not None:
            logits = processors.top_k_filter(logits, config.top_k, config.min_tokens_to_keep)
        if config.top_p < 1:
            logits = processors.top_p_filter(logits, config.top_p, config.min_tokens_to_keep)
    return logits
    ### END SOLUTION


def sample_next_token(logits: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """One random token per row from processed logits (B, V) -> (B,): the softmax over the vocabulary (a token
    at -inf gets probability exactly 0), then `draw` with the generator(s) as given."""
    ### BEGIN SOLUTION
    return draw(logits.softmax(dim=-1), generator)
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# The command line (given code): a checkpoint of milestone 02 (characters) or 05 (GPT-2 tokens)


@dataclass
class LoadedModel:
    """A trained model with its tokenizer: what the command line and the results page need."""

    model: nn.Module
    encode: object  # str -> list[int]
    decode: object  # list[int] -> str
    eos_token_id: int | None
    name: str


def load_generator(checkpoint: Path) -> LoadedModel:
    """A checkpoint of milestone 02 (`train.py train`: best.pt or last.pt, characters) or 05 (last.pt, GPT-2's
    tokens), in eval mode, with its tokenizer."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: train one first, e.g. "
                                "python milestones/05/train.py train --preset cpu-shakespeare")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "chars" in saved:  # milestone 02's character GPT
        model, tokenizer = dependency("02", "train").load_model(checkpoint)
        return LoadedModel(model, tokenizer.encode, tokenizer.decode, None, "02 character GPT")
    from llmfs.data.gpt2_tokenizers import ENDOFTEXT, gpt2_tiktoken

    m05 = dependency("05", "train")
    model = dependency("05", "gpt2").GPT(m05.TrainConfig(**saved["config"]).model_config())
    model.load_state_dict(saved["model"])
    encoding = gpt2_tiktoken()

    def decode(ids: list[int]) -> str:  # 05 pads the vocabulary to 50,304: the ids past GPT-2's 50,257 are no text
        return encoding.decode([i for i in ids if i < encoding.n_vocab])

    return LoadedModel(model.eval(), encoding.encode_ordinary, decode, encoding.encode_single_token(ENDOFTEXT),
                       "05 GPT-2")


def complete(gen: LoadedModel, prompt: str, max_new_tokens: int, seed: int = 0, **settings) -> str:
    """The prompt's continuation, as text (a seeded draw when sampling)."""
    ids = gen.encode(prompt)
    if not ids:
        raise ValueError("prompt is empty: give at least one character (--prompt)")
    out = generate(gen.model, torch.tensor([ids]), max_new_tokens, eos_token_id=gen.eos_token_id,
                   generator=torch.Generator().manual_seed(seed), **settings)
    return gen.decode(out[0, len(ids):].tolist())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate text with a trained GPT (milestone 06).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("generate", help="continue a prompt with a checkpoint of milestone 02 or 05")
    run.add_argument("checkpoint", type=Path)
    run.add_argument("--prompt", default="\n")
    run.add_argument("--max-new-tokens", type=int, default=200)
    run.add_argument("--greedy", action="store_true", help="the most likely token each step (default: sample)")
    run.add_argument("--temperature", type=float, default=1.0)
    run.add_argument("--top-k", type=int, default=None)
    run.add_argument("--top-p", type=float, default=1.0)
    run.add_argument("--repetition-penalty", type=float, default=1.0)
    run.add_argument("--presence-penalty", type=float, default=0.0)
    run.add_argument("--frequency-penalty", type=float, default=0.0)
    run.add_argument("--seed", type=int, default=0)
    page = commands.add_parser("results", help="rebuild the results page (milestones/06/results)")
    page.add_argument("--checkpoint", type=Path, default=None,
                      help="a 05 checkpoint (default: train the cpu-shakespeare preset into runs/05 if it is missing)")
    page.add_argument("--out", type=Path, default=Path("milestones/06/results"), help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "results":
        if __package__:
            from .results import write_results
        else:
            from results import write_results
        write_results(args.checkpoint, args.out)
        return
    try:
        text = complete(load_generator(args.checkpoint), args.prompt, args.max_new_tokens, args.seed,
                        do_sample=not args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        repetition_penalty=args.repetition_penalty, presence_penalty=args.presence_penalty,
                        frequency_penalty=args.frequency_penalty)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    print(args.prompt + text)


if __name__ == "__main__":
    main()
