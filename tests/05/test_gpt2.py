"""Hidden tests for milestone 05, gpt2.py and hellaswag.py (tasks 05_1, 05_2, 05_3, 05_7).

The reference is Hugging Face: a seeded random `transformers.GPT2LMHeadModel` (no download) whose weights are
copied into the learner's model by a conversion written in hf_reference.py; Llama's `rotate_half` /
`apply_rotary_pos_emb` / `LlamaRotaryEmbedding` for RoPE; and HellaSwag scores recomputed from HF's logits.
When logits differ, the message names the first module whose output differs (forward hooks on both models).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from llmfs.data.gpt2_tokenizers import gpt2_tiktoken
from llmfs.loader import load_module
from llmfs.testing import implementation_fixture

gpt2 = implementation_fixture("05", "gpt2")
hellaswag = implementation_fixture("05", "hellaswag")
hf_ref = load_module(Path(__file__).resolve().parents[1], "05", "hf_reference")
ATOL, RTOL = 1e-4, 1e-4

SMALL = [  # (n_layer, n_head, n_embd, block_size, vocab_size)
    (1, 1, 16, 8, 11), (2, 2, 32, 64, 97), (3, 4, 48, 32, 257), (2, 8, 64, 16, 50),
]


def assert_matches_hf(ours, hf, idx, targets=None, path=""):
    """`path` names the optional code path under test (e.g. "flash=True: ") in the failure message."""
    with torch.no_grad():
        logits, loss = ours(idx, targets)
        expected = hf(idx, labels=None)
    if not torch.allclose(logits, expected.logits, atol=ATOL, rtol=RTOL):
        where = hf_ref.first_divergence(ours, hf, idx, ATOL, RTOL) or "the final lm_head"
        pytest.fail(f"{path}logits differ from transformers.GPT2LMHeadModel's: {where}", pytrace=False)
    if targets is not None:
        reference = torch.nn.functional.cross_entropy(expected.logits.flatten(0, 1), targets.flatten())
        torch.testing.assert_close(loss, reference, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------- task05_1


@pytest.mark.task05_1
@pytest.mark.points(3)
@pytest.mark.parametrize("shape", SMALL, ids=[f"L{s[0]}-H{s[1]}-C{s[2]}-T{s[3]}" for s in SMALL])
def test_logits_and_loss_match_hugging_face_on_small_models(gpt2, shape):
    """Random HF GPT-2s of several shapes, batch 3, lengths from 1 to block_size: logits and loss match, on the
    explicit attention path and on the flash=True one (F.scaled_dot_product_attention, causal too)"""
    n_layer, n_head, n_embd, block_size, vocab_size = shape
    hf = hf_ref.random_hf_gpt2(n_layer, n_head, n_embd, block_size, vocab_size, seed=n_layer)
    ours, flash = hf_ref.ours_for(gpt2, hf), hf_ref.ours_for(gpt2, hf, flash=True)
    g = torch.Generator().manual_seed(1)
    for T in sorted({1, 2, block_size // 2, block_size}):
        idx = torch.randint(vocab_size, (3, T), generator=g)
        targets = torch.randint(vocab_size, (3, T), generator=g)
        assert_matches_hf(ours, hf, idx, targets)
        assert_matches_hf(flash, hf, idx, targets, path="flash=True: ")


@pytest.mark.task05_1
@pytest.mark.slow
@pytest.mark.points(3)
def test_gpt2_124m_matches_hugging_face_and_counts_124439808_parameters(gpt2):
    """The 124M configuration: 124,439,808 parameters (wte tied to lm_head); logits on (2, 128) match HF's"""
    hf = hf_ref.random_hf_gpt2(12, 12, 768, 1024, 50257, seed=0, scale=0.02)
    ours = hf_ref.ours_for(gpt2, hf)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters()) == 124_439_808
    assert ours.lm_head.weight is ours.transformer.wte.weight, "lm_head.weight must be the same tensor as wte.weight"
    idx = torch.randint(50257, (2, 128), generator=torch.Generator().manual_seed(0))
    assert_matches_hf(ours, hf, idx)


@pytest.mark.task05_1
@pytest.mark.points(2)
def test_parameter_names_are_hugging_faces(gpt2):
    """state_dict keys are GPT2LMHeadModel's (minus its attention-mask buffers)"""
    hf = hf_ref.random_hf_gpt2(2, 2, 32, 16, 50)
    config = gpt2.GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32)
    expected = {k for k in hf.state_dict() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert set(gpt2.GPT(config).state_dict()) == expected


@pytest.mark.task05_1
@pytest.mark.points(2)
def test_initialisation_is_gpt2s(gpt2):
    """std 0.02 for weights and embeddings, 0.02/sqrt(2 n_layer) for the residual projections, zero biases; a fresh
    model's loss is close to ln(V)"""
    torch.manual_seed(0)
    config = gpt2.GPTConfig(block_size=64, vocab_size=5000, n_layer=6, n_head=4, n_embd=256)
    model = gpt2.GPT(config)
    residual = 0.02 / math.sqrt(2 * 6)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert abs(p.std().item() - residual) < 0.1 * residual, name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert abs(p.std().item() - 0.02) < 0.002, name
        elif name.endswith("bias") and "ln_" not in name:
            assert p.abs().max().item() == 0, name
    g = torch.Generator().manual_seed(0)
    idx, targets = torch.randint(5000, (4, 64), generator=g), torch.randint(5000, (4, 64), generator=g)
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(5000)) < 0.1


@pytest.mark.task05_1
@pytest.mark.points(1)
def test_too_long_a_sequence_is_a_clear_error(gpt2):
    """A sequence longer than block_size raises ValueError, not an index error deep in an embedding"""
    model = gpt2.GPT(gpt2.GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 9, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- task05_2


@pytest.mark.task05_2
@pytest.mark.points(4)
def test_from_hf_loads_a_model_and_a_state_dict(gpt2):
    """from_hf(model) and from_hf(state_dict, config) give HF's logits (Conv1D weights transposed)"""
    hf = hf_ref.random_hf_gpt2(3, 4, 48, 32, 257, seed=3)
    idx = torch.randint(257, (2, 32), generator=torch.Generator().manual_seed(0))
    assert_matches_hf(gpt2.GPT.from_hf(hf).eval(), hf, idx)
    config = gpt2.GPTConfig(block_size=32, vocab_size=257, n_layer=3, n_head=4, n_embd=48)
    assert_matches_hf(gpt2.GPT.from_hf(hf.state_dict(), config).eval(), hf, idx)
    bare = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    assert_matches_hf(gpt2.GPT.from_hf(bare, config).eval(), hf, idx)  # GPT2Model's keys, no lm_head


@pytest.mark.task05_2
@pytest.mark.points(2)
def test_from_pretrained_reads_a_local_safetensors_folder(gpt2, tmp_path):
    """save_pretrained writes config.json + model.safetensors; from_pretrained(folder) loads them"""
    hf = hf_ref.random_hf_gpt2(2, 2, 32, 16, 50, seed=5)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    idx = torch.randint(50, (2, 16), generator=torch.Generator().manual_seed(0))
    assert_matches_hf(gpt2.GPT.from_pretrained(tmp_path).eval(), hf, idx)


@pytest.mark.task05_2
@pytest.mark.points(3)
def test_bad_checkpoints_are_clear_errors(gpt2):
    """Missing, unexpected and mis-shaped keys raise ValueError naming them"""
    hf = hf_ref.random_hf_gpt2(2, 2, 32, 16, 50)
    config = gpt2.GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32)
    state = dict(hf.state_dict())
    missing = {k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.weight"}
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.weight"):
        gpt2.GPT.from_hf(missing, config)
    with pytest.raises(ValueError, match="surplus"):
        gpt2.GPT.from_hf({**state, "transformer.surplus": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match="wpe"):
        gpt2.GPT.from_hf(state, gpt2.GPTConfig(block_size=8, vocab_size=50, n_layer=2, n_head=2, n_embd=32))


# ---------------------------------------------------------------------------------------------- task05_3


@pytest.mark.task05_3
@pytest.mark.points(4)
@pytest.mark.parametrize("offset", [0, 5])
def test_rope_equals_llamas_rotary_embedding(gpt2, offset):
    """apply_rope with rope_tables equals transformers' Llama rotary embedding (base 10000) at any offset"""
    head_size, T = 16, 12
    config = LlamaConfig(hidden_size=head_size * 2, num_attention_heads=2, max_position_embeddings=64)
    rotary = LlamaRotaryEmbedding(config)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(3, 2, T, head_size, generator=g) for _ in range(2))
    position_ids = torch.arange(offset, offset + T).unsqueeze(0)
    cos_ref, sin_ref = rotary(q, position_ids)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    cos, sin = gpt2.rope_tables(head_size, 64)
    for x, expected in ((q, q_ref), (k, k_ref)):
        got = gpt2.apply_rope(x, cos, sin, offset)
        if not torch.allclose(got, expected, atol=1e-5, rtol=1e-5):
            pytest.fail(rope_diagnosis(got, x, cos, sin, offset, rotary, cos_ref, sin_ref), pytrace=False)


def rope_diagnosis(got, x, cos, sin, offset, rotary, cos_ref, sin_ref) -> str:
    """Which part of RoPE is wrong, judged against Llama's tables and Llama's rotation."""
    T = x.size(-2)
    same = tuple(cos.shape) == (64, x.size(-1)) and all(
        torch.allclose(table[offset : offset + T], ref[0], atol=1e-5) for table, ref in ((cos, cos_ref), (sin, sin_ref))
    )
    if not same:
        return ("rope_tables differ from Llama's cos and sin: row t, channel i must be cos / sin of "
                "t * base ** (-2 (i mod hs/2) / hs) (the angles laid out as [angles, angles])")
    if offset:
        at_zero = apply_rotary_pos_emb(x, x, *rotary(x, torch.arange(T).unsqueeze(0)))[0]
        if torch.allclose(got, at_zero, atol=1e-5, rtol=1e-5):
            return (f"apply_rope ignores offset={offset}: the sequence's positions are offset, ..., offset + T - 1, "
                    "so it needs rows offset: offset + T of cos and sin")
    return ("apply_rope differs from Llama's apply_rotary_pos_emb with the same tables: it must be "
            "x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1) for the halves x1, x2 of the last "
            "dimension (not adjacent pairs, and that sign)")


@pytest.mark.task05_3
@pytest.mark.points(2)
def test_rope_scores_depend_only_on_relative_position(gpt2):
    """<rope(q, m), rope(k, n)> depends on m - n only, and RoPE keeps vector norms"""
    cos, sin = gpt2.rope_tables(32, 64)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32, generator=g), torch.randn(1, 1, 1, 32, generator=g)
    scores = {}
    for m, n in [(3, 1), (10, 8), (40, 38), (5, 5), (20, 20)]:
        scores[(m, n)] = (gpt2.apply_rope(q, cos, sin, m) * gpt2.apply_rope(k, cos, sin, n)).sum().item()
    assert scores[(3, 1)] == pytest.approx(scores[(10, 8)], abs=1e-4) == pytest.approx(scores[(40, 38)], abs=1e-4)
    assert scores[(5, 5)] == pytest.approx((q * k).sum().item(), abs=1e-4) == pytest.approx(scores[(20, 20)], abs=1e-4)
    torch.testing.assert_close(gpt2.apply_rope(q, cos, sin, 17).norm(), q.norm())


@pytest.mark.task05_3
@pytest.mark.points(4)
def test_a_rope_model_has_no_position_embedding_and_learns(gpt2):
    """rope=True: no wpe; offset shifts positions exactly; 30 AdamW steps on one batch cut its loss"""
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig(block_size=32, vocab_size=40, n_layer=2, n_head=2, n_embd=32, rope=True))
    assert "transformer.wpe.weight" not in model.state_dict()
    idx = torch.randint(40, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model(idx)
        # a relative-position model gives position 0 of a sequence the same output wherever it starts
        tail, _ = model(idx[:, 10:], offset=10)
        start, _ = model(idx[:, 10:11])
        shifted, _ = model(idx[:, 10:11], offset=10)
    assert torch.allclose(start, shifted, atol=1e-5, rtol=1e-5), (
        "rope=True: one token alone must give the same logits at offset 10 as at offset 0 (it attends only to itself, "
        "and RoPE rotates q and k, never v)")
    assert tail.shape == (4, 22, 40) and not torch.allclose(tail, full[:, 10:]), (
        "rope=True: GPT.forward(idx[:, 10:], offset=10) sees only from position 10, so its logits differ")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first, f"rope=True: 30 AdamW steps on one batch only took its loss from {first:.3f}"


# ---------------------------------------------------------------------------------------------- task05_7


@pytest.fixture(scope="module")
def hellaswag_examples(hellaswag):
    return hellaswag.load_examples(limit=50)


@pytest.mark.task05_7
@pytest.mark.points(3)
def test_rendered_examples_are_context_then_each_ending(hellaswag, hellaswag_examples):
    """Rows are encode(ctx) + encode(" " + ending), zero-padded; the mask covers exactly the ending"""
    enc = gpt2_tiktoken()
    example = hellaswag_examples[0]
    tokens, mask, label = hellaswag.render_example(example, enc.encode_ordinary)
    context = enc.encode_ordinary(example["ctx"])
    assert tokens.shape == mask.shape and tokens.shape[0] == 4 and label == example["label"]
    for i, ending in enumerate(example["endings"]):
        row = context + enc.encode_ordinary(" " + ending)
        assert tokens[i, : len(row)].tolist() == row and tokens[i, len(row):].eq(0).all(), (
            f"render_example: row {i} must be encode(ctx) + encode(' ' + ending), then zeros")
        padding = tokens.shape[1] - len(row)
        assert mask[i].tolist() == [0] * len(context) + [1] * (len(row) - len(context)) + [0] * padding, (
            f"render_example: mask row {i} must be 1 on the ending's tokens only (0 on the context and the padding)")


@pytest.mark.task05_7
@pytest.mark.points(4)
def test_ending_scores_equal_those_from_hugging_faces_model(hellaswag, hellaswag_examples):
    """50 real examples, a random HF GPT-2 (50,257 tokens): per-ending summed and mean losses, acc and acc_norm
    equal the ones computed here from HF's logits with torch's cross_entropy"""
    hf = hf_ref.random_hf_gpt2(2, 2, 64, 256, 50257, seed=7, scale=0.05)
    enc = gpt2_tiktoken()
    correct = correct_norm = 0
    for example in hellaswag_examples:
        tokens, mask, label = hellaswag.render_example(example, enc.encode_ordinary)
        with torch.no_grad():
            logits = hf(tokens).logits
        summed, mean = hellaswag.ending_losses(logits, tokens, mask)
        for i in range(4):
            n = int(mask[i, 1:].sum())
            start = int(mask[i].nonzero()[0])  # first ending token
            expected = torch.nn.functional.cross_entropy(
                logits[i, start - 1 : start - 1 + n], tokens[i, start : start + n], reduction="sum")
            assert summed[i].item() == pytest.approx(expected.item(), rel=1e-5), (
                f"ending_losses: ending {i}'s summed loss is {summed[i].item():.4f}, its {n} tokens' cross-entropy "
                f"sums to {expected.item():.4f} (position t predicts token t + 1: logits[:, :-1] against "
                "tokens[:, 1:], weighted by mask[:, 1:])")
            assert mean[i].item() == pytest.approx(expected.item() / n, rel=1e-5), (
                f"ending_losses: ending {i}'s mean loss is {mean[i].item():.4f}, not its summed loss divided by its "
                f"{n} ending tokens ({expected.item() / n:.4f}): the context and the padding do not count")
        correct += int(summed.argmin() == label)
        correct_norm += int(mean.argmin() == label)
    scores = hellaswag.evaluate(lambda t: hf(t).logits, hellaswag_examples, enc.encode_ordinary)
    assert scores["n"] == 50, f"evaluate: n is {scores['n']} for 50 examples"
    assert scores["acc"] == correct / 50 and scores["acc_norm"] == correct_norm / 50, (
        f"evaluate: acc {scores['acc']} and acc_norm {scores['acc_norm']}, but the ending with the lowest summed loss "
        f"is the label in {correct} of 50 examples and the one with the lowest mean loss in {correct_norm}")
