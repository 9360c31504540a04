"""Hidden tests for milestone 07, decoding.py: prefill and decode with the cache, left-padded batches (07_2, 07_3).

The model is the *reference* milestone 05 GPT holding a seeded random `GPT2LMHeadModel`'s weights. Greedy and seeded
sampling must equal `GPT2LMHeadModel.generate` (with its own cache) token for token; with RoPE, which Hugging Face's
GPT-2 lacks, the reference is the *reference* milestone 06's uncached `generate`. A left-padded batch must give, row by
row, the tokens of each prompt generated alone. A forward hook counts what reaches the model: one prefill over the
prompt, then one token per step, so an uncached loop cannot pass for a cached one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmfs.course import load_course
from llmfs.loader import load_module
from llmfs.testing import implementation_fixture

decoding = implementation_fixture("07", "decoding")
COURSE = load_course()
gpt2 = load_module(COURSE.solutions, "05", "gpt2", COURSE.milestone("05").api["gpt2"])  # the reference 05
sampling06 = load_module(COURSE.solutions, "06", "sampling", COURSE.milestone("06").api["sampling"])  # reference 06
hf_ref = load_module(Path(__file__).resolve().parents[1], "05", "hf_reference")
EOS = 0

SHAPES = [  # (n_layer, n_head, n_embd, block_size, vocab_size)
    (1, 1, 16, 32, 11), (2, 2, 32, 64, 97), (3, 4, 48, 48, 257),
]


def twins(shape=(2, 2, 32, 64, 97), seed: int = 0, scale: float = 0.1, rope: bool = False):
    """A seeded random HF GPT-2 and the reference 05 GPT holding the same weights."""
    hf = hf_ref.random_hf_gpt2(*shape, seed=seed, scale=scale)
    return hf, hf_ref.ours_for(gpt2, hf, rope=rope)


def hf_generate(hf, idx, max_new_tokens, seed=None, eos=EOS, attention_mask=None, **settings):
    if seed is not None:
        torch.manual_seed(seed)
    settings.setdefault("top_k", 0)  # generate's hidden default is top_k=50: off unless the test asks
    mask = torch.ones_like(idx) if attention_mask is None else attention_mask
    return hf.generate(idx, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=EOS,
                       **settings)


# ---------------------------------------------------------------------------------------------- task07_2


@pytest.mark.task07_2
@pytest.mark.points(2)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"L{s[0]}-H{s[1]}-C{s[2]}-T{s[3]}-V{s[4]}" for s in SHAPES])
def test_greedy_equals_hugging_face_generate(decoding, shape):
    """Greedy decoding with the cache equals GPT2LMHeadModel.generate(do_sample=False) token for token: batches of 1,
    4 and 3, prompts of 1 to 12 tokens, up to the block size, end-of-text (id 0) stopping rows"""
    hf, ours = twins(shape, seed=shape[0])
    for batch, length, seed in ((1, 1, 0), (4, 5, 1), (3, 12, 2)):
        idx = hf_ref.random_prompts(batch, length, shape[4], seed)
        n = shape[3] - length
        hf_ref.assert_same_tokens(decoding.generate(ours, idx, n, eos_token_id=EOS),
                                  hf_generate(hf, idx, n, do_sample=False), length,
                                  f"greedy generate with the cache, batch {batch}, prompt of {length}")


@pytest.mark.task07_2
@pytest.mark.points(4)
def test_one_prefill_then_one_token_per_step(decoding):
    """The prompt reaches the model once, whole; then each step feeds only the newest token: n new tokens take one
    prefill and n - 1 single-token steps (none after the last token)"""
    _, ours = twins(seed=1)
    idx = hf_ref.random_prompts(3, 7, 97, 1)
    with hf_ref.FeedCounter(ours) as fed:
        decoding.generate(ours, idx, 10)
    expected = [(3, 7)] + [(3, 1)] * 9
    if fed.shapes != expected:
        longer = [s for s in fed.shapes[1:] if s[1] > 1]
        why = ("later steps feed more than the newest token: with a cache, feed only idx[:, -1:]" if longer
               else "the forward pass after the last new token is wasted" if len(fed.shapes) > 10
               else "one prefill over the whole prompt, then one token per step")
        pytest.fail(f"the model saw idx of shapes {fed.shapes[:4]}{' ...' if len(fed.shapes) > 4 else ''} "
                    f"({len(fed.shapes)} calls) for a (3, 7) prompt and 10 new tokens, expected {expected[:2]} and 8 "
                    f"more (3, 1): {why}", pytrace=False)


@pytest.mark.task07_2
@pytest.mark.points(3)
def test_rope_model_equals_the_uncached_loop(decoding):
    """With RoPE (no Hugging Face twin), greedy and penalized decoding with the cache equal the reference 06 uncached
    generate token for token, up to the block size"""
    _, ours = twins(seed=2, rope=True)
    idx = hf_ref.random_prompts(2, 6, 97, 2)
    for settings in ({}, {"repetition_penalty": 1.3, "presence_penalty": 0.5, "frequency_penalty": 0.3}):
        expected = sampling06.generate(ours, idx, 58, eos_token_id=EOS, **settings)
        hf_ref.assert_same_tokens(decoding.generate(ours, idx, 58, eos_token_id=EOS, **settings), expected, 6,
                                  f"greedy generate with RoPE, {settings or 'no penalty'}",
                                  reference="the uncached generate of milestone 06")


SAMPLING = [
    dict(temperature=0.8),
    dict(temperature=0.9, top_k=20, top_p=0.8, repetition_penalty=1.2),
]


@pytest.mark.task07_2
@pytest.mark.points(2)
@pytest.mark.parametrize("settings", SAMPLING, ids=["temperature", "all four"])
def test_seeded_sampling_equals_hugging_face_generate(decoding, settings):
    """After torch.manual_seed(s), generate(do_sample=True) with the cache equals GPT2LMHeadModel.generate with the same
    seed and settings, batch of 3, 40 tokens, end-of-text on"""
    hf, ours = twins(seed=6)
    idx = hf_ref.random_prompts(3, 4, 97, 6)
    for seed in (0, 1):
        torch.manual_seed(seed)
        out = decoding.generate(ours, idx, 40, do_sample=True, eos_token_id=EOS, pad_token_id=EOS, **settings)
        expected = hf_generate(hf, idx, 40, seed=seed, do_sample=True, **settings)
        hf_ref.assert_same_tokens(out, expected, 4, f"seeded generate(do_sample=True, {settings}), seed {seed}")


@pytest.mark.task07_2
@pytest.mark.points(2)
def test_generate_rejects_what_the_cache_cannot_hold(decoding):
    """A prompt and max_new_tokens past block_size: ValueError naming block_size (exactly block_size works); bad idx,
    max_new_tokens or settings: ValueError naming them; max_new_tokens=0 returns the prompt"""
    _, ours = twins((2, 2, 32, 16, 97), seed=3)
    idx = hf_ref.random_prompts(2, 6, 97, 3)
    assert decoding.generate(ours, idx, 10).shape == (2, 16), "a prompt of 6 and 10 new tokens fill block_size=16"
    with pytest.raises(ValueError, match="block_size"):
        decoding.generate(ours, idx, 11)
    with pytest.raises(ValueError, match="block_size"):
        decoding.generate(ours, hf_ref.random_prompts(1, 17, 97), 0)
    assert torch.equal(decoding.generate(ours, idx, 0), idx), "max_new_tokens=0 returns the prompt unchanged"
    for settings, name in (({"max_new_tokens": -1}, "max_new_tokens"), ({"top_p": 1.5}, "top_p"),
                           ({"do_sample": True, "temperature": 0.0}, "temperature")):
        with pytest.raises(ValueError, match=name):
            decoding.generate(ours, idx, **{"max_new_tokens": 3, **settings})
    with pytest.raises(ValueError, match="idx|prompt"):
        decoding.generate(ours, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="idx"):
        decoding.generate(ours, idx.float(), 3)


@pytest.mark.task07_2
@pytest.mark.points(2)
def test_prefill_returns_the_last_logits_and_a_filled_cache(decoding):
    """prefill(model, idx, max_len): float32 logits (B, V) of the last position, equal to the full forward pass's, and a
    cache of max_len positions holding the prompt (length T)"""
    _, ours = twins(seed=4)
    idx = hf_ref.random_prompts(2, 9, 97, 4)
    logits, cache = decoding.prefill(ours, idx, 20)
    with torch.no_grad():
        expected = ours(idx)[0][:, -1, :]
    assert logits.shape == (2, 97) and logits.dtype == torch.float32, \
        f"prefill returns float32 logits (B, V) = (2, 97), got {logits.dtype} {tuple(logits.shape)}"
    assert torch.allclose(logits, expected, atol=1e-5), "prefill's logits differ from the full forward pass's last ones"
    assert cache.length == 9 and cache.k.size(3) == 20, \
        f"the cache holds max_len=20 positions, 9 of them written; got length {cache.length}, max_len {cache.k.size(3)}"


# ---------------------------------------------------------------------------------------------- task07_3


def each_alone(hf, idx, mask, n, **settings) -> list[torch.Tensor]:
    """Each row's prompt, without its padding, generated alone by Hugging Face: the new tokens."""
    out = []
    for row in range(idx.size(0)):
        prompt = idx[row, mask[row].bool()][None]  # (1, n)
        out.append(hf_generate(hf, prompt, n, **settings)[0, prompt.size(1):])
    return out


def assert_rows_equal_alone(ours: torch.Tensor, alone: list[torch.Tensor], T: int, what: str, pad: int = EOS) -> None:
    for row, expected in enumerate(alone):
        got = ours[row, T:]
        real = got[:len(expected)]
        if len(got) < len(expected) or not torch.equal(real, expected):
            step = next((i for i in range(min(len(real), len(expected))) if real[i] != expected[i]), len(real))
            pytest.fail(f"{what}: row {row}'s new token {step} differs from its prompt generated alone "
                        f"({real[:step + 1].tolist()[-3:]} vs {expected[:step + 1].tolist()[-3:]}). Under left "
                        "padding: attention_mask keeps padding out of attention, positions come from the mask "
                        "(position_ids_from_mask), and each new token's position is its row's last + 1", pytrace=False)
        if not (got[len(expected):] == pad).all():
            pytest.fail(f"{what}: row {row} ended after {len(expected)} tokens alone; later tokens must be the pad id",
                        pytrace=False)


@pytest.mark.task07_3
@pytest.mark.points(1)
def test_left_pad_builds_the_batch_and_its_mask(decoding):
    """left_pad([[5, 6, 7], [8], [9, 10]], pad) -> ids padded on the left and a bool mask; no prompt or an empty one:
    ValueError"""
    idx, mask = decoding.left_pad([[5, 6, 7], [8], [9, 10]], 0)
    assert idx.dtype == torch.long and torch.equal(idx, torch.tensor([[5, 6, 7], [0, 0, 8], [0, 9, 10]])), \
        f"left_pad: ids {idx.tolist()}, expected [[5, 6, 7], [0, 0, 8], [0, 9, 10]] (padding on the left)"
    assert torch.equal(mask.bool(), torch.tensor([[1, 1, 1], [0, 0, 1], [0, 1, 1]]).bool())
    with pytest.raises(ValueError, match="1"):
        decoding.left_pad([[1], []], 0)
    with pytest.raises(ValueError):
        decoding.left_pad([], 0)


@pytest.mark.task07_3
@pytest.mark.points(2)
@pytest.mark.parametrize("shape", SHAPES[1:], ids=["L2-H2-C32-T64-V97", "L3-H4-C48-T48-V257"])
def test_a_left_padded_batch_gives_each_prompt_its_own_tokens(decoding, shape):
    """Greedy, float32: prompts of 7, 2, 5 and 1 tokens in one left-padded batch give, row by row, the tokens
    GPT2LMHeadModel.generate gives each prompt alone, with end-of-text ending rows at different steps"""
    hf, ours = twins(shape, seed=5)
    lengths = [7, 2, 5, 1]
    idx, mask = hf_ref.left_padded(lengths, shape[4], seed=5)
    free = each_alone(hf, idx, mask, 30, eos=None, do_sample=False)
    eos = int(free[0][6])  # a token row 0 makes at step 6: rows end at different steps, or never
    alone = each_alone(hf, idx, mask, 30, eos=eos, do_sample=False)
    out = decoding.generate(ours, idx, 30, attention_mask=mask, eos_token_id=eos, pad_token_id=EOS)
    assert out.size(1) <= 7 + 30
    assert_rows_equal_alone(out, alone, 7, f"a left-padded batch (prompts of {lengths}), eos {eos}")


@pytest.mark.task07_3
@pytest.mark.points(2)
def test_penalties_never_count_the_padding(decoding):
    """With a repetition penalty, and padding by a token the model likes (the pad id is a real token id): each row of a
    left-padded batch equals its prompt alone"""
    hf, ours = twins(seed=8)
    with torch.no_grad():
        liked = int(hf(hf_ref.random_prompts(1, 3, 97, 8)).logits[0, -1].argmax())
    lengths = [6, 1, 3]
    idx, mask = hf_ref.left_padded(lengths, 97, seed=8, pad=liked)
    settings = dict(do_sample=False, repetition_penalty=1.5, presence_penalty=0.0)
    alone = each_alone(hf, idx, mask, 20, eos=None, do_sample=False, repetition_penalty=1.5)
    out = decoding.generate(ours, idx, 20, attention_mask=mask, **settings)
    assert_rows_equal_alone(out, alone, 6, f"repetition penalty 1.5 on a batch padded with token {liked} (06's "
                            "penalties take the mask of real tokens: padding is never penalized)", pad=liked)


@pytest.mark.task07_3
@pytest.mark.points(2)
def test_per_row_generators_make_a_padded_batch_equal_single_rows(decoding):
    """Sampling with one generator per row: each row of a left-padded batch equals its prompt alone (no padding) with a
    generator seeded alike"""
    _, ours = twins(seed=9, rope=True)
    lengths = [5, 2, 8]
    idx, mask = hf_ref.left_padded(lengths, 97, seed=9)
    settings = dict(do_sample=True, temperature=1.1, top_p=0.95, repetition_penalty=1.1)
    together = decoding.generate(ours, idx, 25, attention_mask=mask,
                                 generator=[torch.Generator().manual_seed(s) for s in (20, 21, 22)], **settings)
    for row, (n, seed) in enumerate(zip(lengths, (20, 21, 22), strict=True)):
        alone = decoding.generate(ours, idx[row:row + 1, 8 - n:], 25, generator=[torch.Generator().manual_seed(seed)],
                                  **settings)
        if not torch.equal(together[row, 8:], alone[0, n:]):
            pytest.fail(f"row {row} (a prompt of {n} after {8 - n} pads), sampled with generator seed {seed}, differs "
                        "from the same prompt alone: positions from the mask, padding masked in attention and in the "
                        "penalties, the generators passed on", pytrace=False)


@pytest.mark.task07_3
@pytest.mark.points(1)
def test_check_attention_mask_names_what_is_wrong(decoding):
    """attention_mask of another shape, values other than 0/1, a row with no real token, or padding on the right:
    ValueError naming attention_mask"""
    _, ours = twins(seed=10)
    idx, mask = hf_ref.left_padded([3, 2], 97)
    assert decoding.check_attention_mask(idx, mask).dtype == torch.bool
    cases = {"of another shape": mask[:, 1:], "holding a 2": mask * 2, "with a row of padding only":
             torch.tensor([[1, 1, 1], [0, 0, 0]]), "padded on the right": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    for what, bad in cases.items():
        try:
            decoding.check_attention_mask(idx, bad)
        except ValueError as e:
            assert "attention_mask" in str(e), f"the error for an attention_mask {what} must name attention_mask: {e}"
        else:
            pytest.fail(f"check_attention_mask accepted an attention_mask {what} ({bad.tolist()}): raise ValueError",
                        pytrace=False)
    with pytest.raises(ValueError, match="attention_mask"):
        decoding.generate(ours, idx, 3, attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
