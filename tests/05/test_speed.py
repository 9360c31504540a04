"""Hidden benchmarks for milestone 05: the learner's GPT-2 against Hugging Face's, flash against explicit attention,
the shard loader against plain numpy.

Every figure is a ratio of two runs in the same test, interleaved, the best of up to three rounds each (noise only
ever adds time; the two 124M races always run three and two rounds), on one thread, so that
it does not depend on how many cores the grader gives. Thresholds are in course.toml; outputs are checked too, so a
fast wrong model gets no points.

    forward / Hugging Face     GPT-2 124M, fp32, batch 2 x 256 tokens, loss included, against GPT2LMHeadModel with
                               the same weights and its default (sdpa) attention
    train step / Hugging Face  the same, forward and backward
    explicit / flash           4 layers, 24 heads of 16 channels, T = 1,024, where attention is most of the work
    ShardLoader / memmap       300 batches of 16 x 1,024 tokens, against reading the same windows from np.load's
                               memmap directly
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from llmfs.loader import load_module
from llmfs.testing import implementation_fixture, race, record_threshold, thresholds

gpt2 = implementation_fixture("05", "gpt2")
data = implementation_fixture("05", "data")
hf_ref = load_module(Path(__file__).resolve().parents[1], "05", "hf_reference")
LIMITS = thresholds("05")
B, T = 2, 256

pytestmark = [pytest.mark.benchmark]


@functools.cache
def hf_124m():
    """GPT-2 124M with random weights (speed does not depend on them), Hugging Face's default attention."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(bos_token_id=None, eos_token_id=None, attn_implementation="sdpa",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


@functools.cache
def ours_124m(gpt2) -> torch.nn.Module:
    """The learner's GPT with the default GPTConfig (the explicit attention path), holding hf_124m's weights, built
    once for both 124M races. A stub fails at a tiny model first, in a second."""
    gpt2.GPT(gpt2.GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=16))(torch.zeros(1, 1).long())
    return hf_ref.load_into(gpt2.GPT(gpt2.GPTConfig()), hf_124m())


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(50257, (B, T), generator=g), torch.randint(50257, (B, T), generator=g)


def hf_loss(hf, x, y) -> torch.Tensor:
    """Hugging Face's cross-entropy of `y` at every position (labels shift inside the model, so pass the logits
    through F.cross_entropy here: the same work as the learner's model does with targets)."""
    logits = hf(x).logits
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


def train_step(model, loss_fn) -> float:
    model.zero_grad(set_to_none=False)  # gradients stay allocated: page faults on 500 MB would make the times noisy
    loss = loss_fn()
    loss.backward()
    return loss.item()


# ---------------------------------------------------------------------------------------------- task05_1


@pytest.mark.task05_1
@pytest.mark.points(3)
def test_forward_pass_is_as_fast_as_hugging_faces(gpt2, benchmark, leaderboard):
    """GPT-2 124M, fp32, 2 x 256 tokens with targets, no gradients: the learner's forward pass (default config)
    takes at most hf_forward_ratio_max times GPT2LMHeadModel's, the same loss"""
    ours, hf = ours_124m(gpt2).eval(), hf_124m().eval()
    x, y = batch()

    def forward(loss_fn):
        with torch.no_grad():
            return loss_fn()

    runs = {"ours": lambda: forward(lambda: ours(x, y)[1]), "hf": lambda: forward(lambda: hf_loss(hf, x, y))}
    limit = LIMITS["hf_forward_ratio_max"]
    speed, out = race(runs, "ours", "hf", 1 / limit, benchmark, attempts=3, min_attempts=3)
    torch.testing.assert_close(out["ours"], out["hf"], atol=1e-4, rtol=1e-4,
                               msg="GPT.forward's loss differs from GPT2LMHeadModel's with the same weights")
    record_threshold(benchmark, "hf_forward_ratio_max", limit, 1 / speed)
    leaderboard("forward time / Hugging Face's", 1 / speed)
    assert 1 / speed <= limit, (
        f"GPT.forward takes {1 / speed:.2f}x GPT2LMHeadModel's time on 2 x 256 tokens (limit {limit}x): look for "
        "Python loops over heads or positions, a GELU written as several operations, or work repeated per layer")


@pytest.mark.task05_1
@pytest.mark.points(3)
def test_training_step_is_as_fast_as_hugging_faces(gpt2, benchmark, leaderboard):
    """GPT-2 124M, fp32, 2 x 256 tokens: forward and backward take at most hf_train_ratio_max times
    GPT2LMHeadModel's, the same loss"""
    ours, hf = ours_124m(gpt2).train(), hf_124m().train()
    x, y = batch()
    runs = {"ours": lambda: train_step(ours, lambda: ours(x, y)[1]),
            "hf": lambda: train_step(hf, lambda: hf_loss(hf, x, y))}
    limit = LIMITS["hf_train_ratio_max"]
    speed, out = race(runs, "ours", "hf", 1 / limit, benchmark, attempts=3, min_attempts=2)
    assert out["ours"] == pytest.approx(out["hf"], rel=1e-4), "the training loss differs from GPT2LMHeadModel's"
    record_threshold(benchmark, "hf_train_ratio_max", limit, 1 / speed)
    leaderboard("training step time / Hugging Face's", 1 / speed)
    assert 1 / speed <= limit, (
        f"a training step (forward and backward) takes {1 / speed:.2f}x GPT2LMHeadModel's time on 2 x 256 tokens "
        f"(limit {limit}x): look for Python loops, and for tensors built again in every forward pass")


@pytest.mark.task05_1
@pytest.mark.points(2)
def test_flash_attention_is_faster_than_the_explicit_softmax_at_1024_tokens(gpt2, benchmark, leaderboard):
    """4 layers with 24 heads of 16 channels, 1 x 1,024 tokens, no gradients: GPTConfig(flash=True) makes the
    forward pass at least flash_speedup_min times faster than the explicit softmax path, with the same logits"""
    shape = dict(block_size=1024, vocab_size=1024, n_layer=4, n_head=24, n_embd=384)
    torch.manual_seed(0)
    explicit = gpt2.GPT(gpt2.GPTConfig(**shape)).eval()
    flash = gpt2.GPT(gpt2.GPTConfig(**shape, flash=True)).eval()
    flash.load_state_dict(explicit.state_dict())
    x = torch.randint(1024, (1, 1024), generator=torch.Generator().manual_seed(0))

    def forward(model):
        with torch.no_grad():
            return model(x)[0]

    minimum = LIMITS["flash_speedup_min"]
    speedup, out = race({"flash": lambda: forward(flash), "explicit": lambda: forward(explicit)},
                        "flash", "explicit", minimum, benchmark, attempts=3, min_attempts=3)
    torch.testing.assert_close(out["flash"], out["explicit"], atol=1e-4, rtol=1e-4,
                               msg="flash=True gives different logits from the explicit softmax path")
    record_threshold(benchmark, "flash_speedup_min", minimum, speedup)
    leaderboard("flash attention speed-up at 1,024 tokens", speedup, order="desc")
    assert speedup >= minimum, (
        f"flash=True makes the forward pass at 1,024 tokens only {speedup:.2f}x as fast as the explicit path "
        f"(minimum {minimum}x): on the flash path call F.scaled_dot_product_attention(q, k, v, is_causal=True) and "
        "nothing else; build the (T, T) scores and the mask only on the explicit path")


# ---------------------------------------------------------------------------------------------- task05_4


@pytest.mark.task05_4
@pytest.mark.points(2)
def test_shard_loader_reads_as_fast_as_a_plain_memmap(data, tmp_path, benchmark, leaderboard):
    """Two uint16 shards of 3M tokens; 300 batches of 16 x 1,024: ShardLoader.next_batch takes at most
    loader_ratio_max times reading the same windows (the documented order) from np.load(mmap_mode="r")"""
    batch_size, block, batches = 16, 1024, 300
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"shard_{i}.npy")
        np.save(paths[-1], rng.integers(0, 50257, 3_000_000, dtype=np.uint16))

    def plain() -> list[torch.Tensor]:
        tokens = [np.load(path, mmap_mode="r") for path in paths]
        windows = [(s, start) for s, shard in enumerate(tokens) for start in range(0, len(shard) - block, block)]
        order = [windows[i] for i in torch.randperm(len(windows), generator=torch.Generator().manual_seed(0)).tolist()]
        out = []
        for b in range(batches):
            chosen = order[b * batch_size:(b + 1) * batch_size]
            rows = torch.from_numpy(np.stack([tokens[s][i:i + block + 1].astype(np.int64) for s, i in chosen]))
            out.append(rows[:, :-1])
        return out

    def loader() -> list[torch.Tensor]:
        shard_loader = data.ShardLoader(paths, batch_size, block, seed=0)
        return [shard_loader.next_batch()[0] for _ in range(batches)]

    limit = LIMITS["loader_ratio_max"]
    speed, out = race({"loader": loader, "plain": plain}, "loader", "plain", 1 / limit, benchmark, attempts=3,
                      min_attempts=2)
    assert len(out["loader"]) == batches and all(map(torch.equal, out["loader"], out["plain"])), (
        "ShardLoader's batches are not the documented windows in the documented order")
    record_threshold(benchmark, "loader_ratio_max", limit, 1 / speed)
    leaderboard("ShardLoader time / numpy memmap's", 1 / speed)
    assert 1 / speed <= limit, (
        f"ShardLoader.next_batch takes {1 / speed:.2f}x the time of reading the same windows from a memmap "
        f"(limit {limit}x): read only the batch's windows from the np.load(mmap_mode='r') arrays, never a whole shard")
