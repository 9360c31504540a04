"""Public tests for milestone 05, gpt2.py: `pytest milestones/05 -m task05_1` (then task05_2, task05_3), or one
function at a time, e.g. `pytest milestones/05 -k mlp` (each test's `checks` marker names its function).

Each test checks one function against a formula written out here or against `transformers.GPT2LMHeadModel`. The
hidden tests compare your model with Hugging Face's block by block (several shapes, the 124M configuration) and
your RoPE with Llama's.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
gpt2 = implementation_fixture("05", "gpt2", default_root=here)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # (in, out) in HF


def tiny_hf(std: float = 0.02) -> GPT2LMHeadModel:
    """A seeded random GPT-2 of 2 layers, 2 heads, 32 channels, 16 positions, 50 tokens (no download)."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=50, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=std)
    return GPT2LMHeadModel(config).eval()


def tiny_config(gpt2, **extra):
    return gpt2.GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32, **extra)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- task05_1


@pytest.mark.task05_1
@pytest.mark.checks("CausalSelfAttention.forward")
@pytest.mark.parametrize("flash", [False, True])
def test_attention_forward_is_a_causal_softmax_per_head(gpt2, flash):
    torch.manual_seed(0)
    attn = gpt2.CausalSelfAttention(gpt2.GPTConfig(n_head=4, n_embd=32, flash=flash))
    B, T, C, nh = 2, 7, 32, 4
    x = randn(B, T, C)
    with torch.no_grad():
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // nh)  # (B, nh, T, T)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        expected = attn.c_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C))
        torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.task05_1
@pytest.mark.checks("MLP.forward")
def test_mlp_uses_gpt2s_tanh_gelu(gpt2):
    torch.manual_seed(0)
    mlp = gpt2.MLP(gpt2.GPTConfig(n_embd=32)).double()
    x = 20 * randn(2, 5, 32).double()  # c_fc's outputs around +-2, where the two GELUs differ most
    with torch.no_grad():
        h = mlp.c_fc(x)
        gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))  # GPT-2's approximation
        torch.testing.assert_close(mlp(x), mlp.c_proj(gelu), atol=1e-10, rtol=1e-10)


@pytest.mark.task05_1
@pytest.mark.checks("Block.forward")
def test_block_is_pre_norm_with_two_residuals(gpt2):
    torch.manual_seed(0)
    block = gpt2.Block(gpt2.GPTConfig(n_head=2, n_embd=32))
    for p in (block.ln_1.weight, block.ln_2.weight, block.ln_1.bias, block.ln_2.bias):
        p.data.normal_()  # LayerNorms that do something, so a missing or misplaced one shows
    x = randn(2, 6, 32)
    with torch.no_grad():
        h = x + block.attn(block.ln_1(x))
        torch.testing.assert_close(block(x), h + block.mlp(block.ln_2(h)), atol=1e-5, rtol=1e-5)


@pytest.mark.task05_1
@pytest.mark.checks("GPT.init_weights")
def test_init_weights_is_gpt2s_initialisation(gpt2):
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig(block_size=64, vocab_size=5000, n_layer=6, n_head=4, n_embd=256))
    residual = 0.02 / math.sqrt(2 * 6)  # c_proj: two per block add to the residual stream
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert abs(p.std().item() - residual) < 0.1 * residual, f"{name}: std {p.std().item():.5f}"
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert abs(p.std().item() - 0.02) < 0.002, f"{name}: std {p.std().item():.5f}"
        elif ".ln_" in name or "ln_f" in name:
            assert torch.all(p == (1.0 if name.endswith("weight") else 0.0)), f"{name}: LayerNorms keep 1 and 0"
        else:
            assert name.endswith("bias") and p.abs().max().item() == 0, f"{name}: biases start at 0"


def copy_hf_weights(model, hf: GPT2LMHeadModel):
    """Hugging Face's weights into `model` by name (Conv1D weights transposed): task05_2 writes this properly."""
    hf_state = hf.state_dict()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p.copy_(hf_state[name].t() if name.endswith(CONV1D) else hf_state[name])
    return model.eval()


@pytest.mark.task05_1
@pytest.mark.checks("GPT.forward")
def test_forward_gives_hugging_faces_logits_and_loss(gpt2):
    hf = tiny_hf(std=0.1)  # large weights: every nonlinearity matters
    model = copy_hf_weights(gpt2.GPT(tiny_config(gpt2)), hf)
    g = torch.Generator().manual_seed(0)
    idx, targets = torch.randint(50, (3, 16), generator=g), torch.randint(50, (3, 16), generator=g)
    with torch.no_grad():
        logits, loss = model(idx, targets)
        expected = hf(idx).logits
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(loss, F.cross_entropy(expected.flatten(0, 1), targets.flatten()), atol=1e-4,
                                   rtol=1e-4)
        short, none = model(idx[:, :5])  # any length up to block_size, and no loss without targets
    torch.testing.assert_close(short, expected[:, :5], atol=1e-4, rtol=1e-4)
    assert none is None


@pytest.mark.task05_1
@pytest.mark.checks("GPT.forward")
@pytest.mark.parametrize("flash", [False, True])
def test_forward_of_a_fresh_model_sees_no_future_and_guesses_uniformly(gpt2, flash):
    torch.manual_seed(0)
    model = gpt2.GPT(tiny_config(gpt2, flash=flash)).eval()
    idx = torch.randint(50, (2, 16), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 50  # another last token
    with torch.no_grad():
        (logits, loss), other = model(idx, torch.randint(50, (2, 16))), model(changed)[0]
    torch.testing.assert_close(other[:, :-1], logits[:, :-1], atol=1e-6, rtol=0)  # earlier positions unchanged
    assert not torch.allclose(other[:, -1], logits[:, -1])
    assert logits.shape == (2, 16, 50) and abs(loss.item() - math.log(50)) < 0.3  # GPT-2's init: near uniform


# ---------------------------------------------------------------------------------------------- task05_2


@pytest.mark.task05_2
@pytest.mark.checks("hf_to_ours")
def test_hf_to_ours_renames_transposes_and_ties(gpt2):
    hf_state = tiny_hf().state_dict()
    ours = gpt2.GPT(tiny_config(gpt2)).state_dict()
    state = gpt2.hf_to_ours(hf_state, ours)
    assert set(state) == set(ours)  # the attention-mask buffers dropped
    for name, value in state.items():
        expected = hf_state[name].t() if name.endswith(CONV1D) else hf_state[name]
        assert torch.equal(value, expected), f"{name}: Conv1D weights (in, out) become Linear's (out, in)"
    bare = {k.removeprefix("transformer."): v for k, v in hf_state.items() if k != "lm_head.weight"}  # GPT2Model's
    state = gpt2.hf_to_ours(bare, ours)
    assert set(state) == set(ours) and torch.equal(state["lm_head.weight"], hf_state["transformer.wte.weight"])
    missing = {k: v for k, v in hf_state.items() if k != "transformer.h.1.mlp.c_fc.weight"}
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.weight"):  # check_fits says which
        gpt2.hf_to_ours(missing, ours)


@pytest.mark.task05_2
@pytest.mark.checks("from_hf")
def test_from_hf_gives_hugging_faces_logits(gpt2):
    hf = tiny_hf()
    idx = torch.randint(50, (2, 16), generator=torch.Generator().manual_seed(0))
    bare = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    with torch.no_grad():
        expected = hf(idx).logits
        for ours in (gpt2.from_hf(hf), gpt2.from_hf(hf.state_dict(), tiny_config(gpt2)),
                     gpt2.from_hf(bare, tiny_config(gpt2)), gpt2.GPT.from_hf(hf)):
            torch.testing.assert_close(ours.eval()(idx)[0], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.task05_2
@pytest.mark.checks("from_pretrained")
def test_from_pretrained_reads_a_safetensors_folder_and_file(gpt2, tmp_path):
    hf = tiny_hf()
    hf.save_pretrained(tmp_path)  # config.json + model.safetensors
    idx = torch.randint(50, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(idx).logits
        for source in (tmp_path, tmp_path / "model.safetensors", str(tmp_path)):
            torch.testing.assert_close(gpt2.GPT.from_pretrained(source).eval()(idx)[0], expected, atol=1e-4,
                                       rtol=1e-4)


# ---------------------------------------------------------------------------------------------- task05_3


@pytest.mark.task05_3
@pytest.mark.checks("rope_tables")
@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_rope_tables_hold_position_times_frequency(gpt2, base):
    hs, max_len = 8, 12
    cos, sin = gpt2.rope_tables(hs, max_len, base)
    assert cos.shape == sin.shape == (max_len, hs) and cos.dtype == torch.float32
    for t in range(max_len):
        for i in range(hs):  # channel i and i + hs/2 share the angle: [angles, angles]
            angle = t * base ** (-2 * (i % (hs // 2)) / hs)
            assert (cos[t, i].item(), sin[t, i].item()) == pytest.approx((math.cos(angle), math.sin(angle)),
                                                                         abs=1e-5), f"row {t}, channel {i}"


@pytest.mark.task05_3
@pytest.mark.checks("apply_rope")
def test_apply_rope_turns_channel_pairs_by_position_times_frequency(gpt2):
    """Channels i and i + hs/2 form a pair, turned by (offset + t) * 10000 ** (-2i / hs) at row t."""
    hs, T, offset = 8, 5, 3
    cos, sin = gpt2.rope_tables(hs, 16)
    x = randn(1, 1, T, hs)
    y = gpt2.apply_rope(x, cos, sin, offset)
    for t in range(T):
        for i in range(hs // 2):
            angle = (offset + t) * 10000 ** (-2 * i / hs)
            a, b = x[0, 0, t, i].item(), x[0, 0, t, i + hs // 2].item()
            turned = [a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle)]
            assert y[0, 0, t, [i, i + hs // 2]].tolist() == pytest.approx(turned, abs=1e-5), (
                f"apply_rope(offset={offset}): row {t} is position {offset + t}; its pair ({i}, {i + hs // 2}) "
                f"must turn by {angle:.4f} rad")
    torch.testing.assert_close(gpt2.apply_rope(x, cos, sin)[..., 0, :], x[..., 0, :])  # position 0: no turn


@pytest.mark.task05_3
@pytest.mark.checks("apply_rope")
def test_apply_rope_leaves_a_lone_token_alike_at_any_offset(gpt2):
    torch.manual_seed(0)
    model = gpt2.GPT(tiny_config(gpt2, rope=True)).eval()
    assert "transformer.wpe.weight" not in model.state_dict()
    idx = torch.randint(50, (3, 1))
    with torch.no_grad():  # it attends only to itself, and RoPE turns q and k (never v) by the same angle
        torch.testing.assert_close(model(idx, offset=7)[0], model(idx)[0], atol=1e-5, rtol=1e-5)
