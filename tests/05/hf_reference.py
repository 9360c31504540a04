"""Hugging Face references for milestone 05's hidden tests (loaded with llmfs.loader.load_module).

`random_hf_gpt2` builds a seeded GPT2LMHeadModel with weights large enough that every nonlinearity works in
its nonlinear range (with GPT-2's own std 0.02 init, GELU with and without tanh differ by 1e-6 at the logits,
and a test could not tell them apart). `load_into` copies its weights into a learner's model with a conversion
written here, independently of the learner's `from_hf`. `first_divergence` runs both models with forward hooks
and names the first module whose output differs. `FeedCounter` records what reaches a model's token embedding, so 07's
and 08's tests can tell a cached loop from one that runs the whole context again.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def random_hf_gpt2(n_layer: int = 2, n_head: int = 2, n_embd: int = 32, block_size: int = 64,
                   vocab_size: int = 97, seed: int = 0, scale: float = 0.1) -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=block_size,
                        vocab_size=vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("lm_head"):
                continue  # tied to wte
            noise = torch.randn(p.shape, generator=g) * scale
            p.copy_(1.0 + noise if ("ln_" in name and name.endswith("weight")) else noise)
    return model


def hf_state_for(ours: nn.Module, hf: GPT2LMHeadModel) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in hf.state_dict().items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        state[key] = value.t().contiguous() if key.endswith(CONV1D) else value
    return {k: v for k, v in state.items() if k in ours.state_dict()}


def load_into(ours: nn.Module, hf: GPT2LMHeadModel) -> nn.Module:
    missing, unexpected = ours.load_state_dict(hf_state_for(ours, hf), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return ours


def ours_for(gpt2, hf: GPT2LMHeadModel, **extra) -> nn.Module:
    """A learner's (or the reference's) 05 GPT of `hf`'s shape holding its weights, in eval mode; `extra` goes to
    GPTConfig (rope=True, flash=True)."""
    c = hf.config
    config = gpt2.GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head,
                            n_embd=c.n_embd, **extra)
    torch.manual_seed(0)
    return load_into(gpt2.GPT(config), hf).eval()


def _output(out):
    return out[0] if isinstance(out, tuple) else out


def module_outputs(model: nn.Module, names: list[str], run) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: outputs.__setitem__(name, _output(out).detach())) for name in names
        if name in modules]
    if "transformer.h.0" in modules:  # what enters the first block: the embeddings' sum
        handles.append(modules["transformer.h.0"].register_forward_pre_hook(
            lambda _m, args, kwargs=None: outputs.__setitem__("embeddings", args[0].detach())
            if args else None))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return outputs


WHAT = {"embeddings": "the input of block 0, wte(idx) + wpe(positions) (GPT.forward)",
        "wte": "the token embedding (wte)", "wpe": "the position embedding (wpe)", "ln_1": "ln_1 (LayerNorm)",
        "attn": "the attention (CausalSelfAttention.forward)", "ln_2": "ln_2 (LayerNorm)",
        "mlp": "the MLP (MLP.forward: c_fc, GELU with tanh, c_proj)", "ln_f": "the final LayerNorm ln_f"}


def first_divergence(ours: nn.Module, hf: GPT2LMHeadModel, idx: torch.Tensor, atol: float, rtol: float) -> str | None:
    """Run both on idx; the first module (in forward order) whose output differs, described, or None."""
    n_layer = hf.config.n_layer
    names = ["transformer.wte", "transformer.wpe", "embeddings"]
    for i in range(n_layer):
        names += [f"transformer.h.{i}.{part}" for part in ("ln_1", "attn", "ln_2", "mlp")] + [f"transformer.h.{i}"]
    names.append("transformer.ln_f")
    with torch.no_grad():
        mine = module_outputs(ours, names, lambda: ours(idx))
        theirs = module_outputs(hf, names, lambda: hf(idx))
    for name in names:
        if name not in theirs:
            continue
        if name == "embeddings" and name not in mine:
            continue  # a block called with keyword arguments only: skip this check
        if name not in mine:
            return f"{name} was never called in your forward pass"
        a, b = mine[name], theirs[name]
        with contextlib.suppress(RuntimeError):  # HF's wpe output has a batch dimension of 1: broadcast
            a, b = torch.broadcast_tensors(a, b)
        if a.shape != b.shape:
            return f"{name}: output shape {tuple(a.shape)}, Hugging Face's {tuple(b.shape)}"
        if not torch.allclose(a, b, atol=atol, rtol=rtol):
            part = name.split(".")[-1]
            where = f"block {name.split('.')[2]}: " if ".h." in name else ""
            what = WHAT.get(part, "the block as a whole (Block.forward: the residual connections)")
            return (f"{where}{what} differs from Hugging Face's by up to {(a - b).abs().max().item():.3g} "
                    f"(everything before it matches)")
    return None


def assert_same_tokens(ours: torch.Tensor, expected: torch.Tensor, prompt_length: int, what: str,
                       reference: str = "Hugging Face's generate") -> None:
    if ours.shape == expected.shape and torch.equal(ours, expected):
        return
    if ours.shape[0] != expected.shape[0]:
        pytest.fail(f"{what}: {ours.shape[0]} rows returned for a batch of {expected.shape[0]}", pytrace=False)
    if not torch.equal(ours[:, :prompt_length], expected[:, :prompt_length]):
        pytest.fail(f"{what}: the output must start with the prompt, unchanged", pytrace=False)
    steps = min(ours.shape[1], expected.shape[1])
    differ = (ours[:, :steps] != expected[:, :steps]).any(dim=0).nonzero()
    if len(differ):
        step = int(differ[0]) - prompt_length
        row = int((ours[:, prompt_length + step] != expected[:, prompt_length + step]).nonzero()[0])
        pytest.fail(f"{what}: new token {step} of row {row} is {int(ours[row, prompt_length + step])}, {reference} "
                    f"gives {int(expected[row, prompt_length + step])} (the tokens before it agree)", pytrace=False)
    pytest.fail(f"{what}: {ours.shape[1] - prompt_length} new tokens, {reference} gives "
                f"{expected.shape[1] - prompt_length} (every row stops at end-of-text, and generation stops when all "
                "rows have; later tokens of a finished row are the pad id)", pytrace=False)


def random_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """(batch, length) token ids in 1..vocab-1, seeded (id 0 is left for end-of-text)."""
    return torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def left_padded(lengths: list[int], vocab: int, seed: int = 0, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of the given lengths in one batch, padded on the left with `pad`, and their mask (1 real,
    0 padding), built here independently of any learner's `left_pad`."""
    T = max(lengths)
    idx = torch.full((len(lengths), T), pad, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, n in enumerate(lengths):
        idx[row, T - n:] = random_prompts(1, n, vocab, seed + row)[0]
        mask[row, T - n:] = 1
    return idx, mask


class FeedCounter:
    """Records the shape of every idx that reaches the model's token embedding."""

    def __init__(self, model) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.handle = model.transformer.wte.register_forward_hook(
            lambda _m, args, _out: self.shapes.append(tuple(args[0].shape)))

    def __enter__(self) -> FeedCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()
