"""Hidden tests for milestone 02, model.py (tasks 02_1 to 02_5): 65 of the milestone's 100 points.

Every reference is torch's own: F.scaled_dot_product_attention, nn.MultiheadAttention, F.layer_norm,
torch.autograd.gradcheck, and a GPT assembled from nn.LayerNorm and scaled_dot_product_attention
(builtin_gpt.py) that loads the learner's weights. Comparisons run in float64 with tight tolerances.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmfs.loader import load_module
from llmfs.testing import implementation_fixture

model = implementation_fixture("02", "model")
builtin = load_module(Path(__file__).resolve().parents[1], "02", "builtin_gpt")
TIGHT = {"rtol": 1e-10, "atol": 1e-10}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """assert_close in float64 with tight tolerances; a failure starts with `what`, which names the part."""
    torch.testing.assert_close(actual, expected, **TIGHT, msg=lambda m: f"{what}\n{m}")


def qkv(*shape: int, seed: int = 0, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=requires_grad) for _ in range(3)]


def causal_jacobian_leaks(f, x: torch.Tensor) -> float:
    """The largest |d f(x)[:, t] / d x[:, s]| over s > t: exactly zero when no information flows backwards."""
    jac = torch.autograd.functional.jacobian(f, x)  # (B, T, C_out, B, T, C_in)
    T = x.shape[1]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)  # [t, s] with s > t
    return jac.abs().amax(dim=(0, 2, 3, 5))[future].max().item()


# ---------------------------------------------------------------------------------------------- task02_1


@pytest.mark.task02_1
@pytest.mark.points(5)
def test_attention_equals_scaled_dot_product_attention(model):
    """causal_self_attention == F.scaled_dot_product_attention(is_causal=True) in float64, for 3-D and 4-D inputs"""
    for shape in [(2, 5, 4), (3, 2, 16, 8), (1, 1, 3), (2, 33, 7)]:
        q, k, v = qkv(*shape, seed=sum(shape))
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert_close(model.causal_self_attention(q, k, v), expected,
                     f"causal_self_attention on shape {shape} differs from F.scaled_dot_product_attention("
                     "is_causal=True): scores q @ k^T / sqrt(hs), -inf where s > t, softmax over the last axis "
                     "(the keys), then @ v")


@pytest.mark.task02_1
@pytest.mark.points(1)
def test_first_position_attends_only_to_itself(model):
    """The first position can see nothing but itself, so its output is its own value vector"""
    q, k, v = qkv(4, 9, 5, seed=1)
    out = model.causal_self_attention(q, k, v)
    assert_close(out[:, 0], v[:, 0], "causal_self_attention: position 0 sees only itself (the mask keeps the diagonal, "
                 "s <= t), so its output must be v[..., 0, :]")


@pytest.mark.task02_1
@pytest.mark.points(3)
def test_no_information_flows_from_future_positions(model):
    """The gradient of output t with respect to q, k and v at any later position is exactly zero"""
    q, k, v = qkv(2, 6, 4, seed=2)
    for name, f, x in [("q", lambda x: model.causal_self_attention(x, k, v), q),
                       ("k", lambda x: model.causal_self_attention(q, x, v), k),
                       ("v", lambda x: model.causal_self_attention(q, k, x), v)]:
        assert causal_jacobian_leaks(f, x) == 0.0, (
            f"causal_self_attention: output t depends on {name} at a later position s > t (mask those scores to -inf)")


@pytest.mark.task02_1
@pytest.mark.points(2)
def test_attention_dropout_drops_attention_weights(model):
    """With dropout p the weights go through F.dropout(p, training=True) once, before they multiply v"""
    q, k, v = qkv(2, 7, 4, seed=3)
    T = q.shape[-2]
    scores = (q @ k.transpose(-2, -1) / 2.0).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    torch.manual_seed(0)
    expected = F.dropout(F.softmax(scores, dim=-1), p=0.5, training=True) @ v
    torch.manual_seed(0)
    assert_close(model.causal_self_attention(q, k, v, dropout=0.5), expected,
                 "causal_self_attention(dropout=0.5): F.dropout(weights, p, training=True) once, after the softmax "
                 "and before @ v")


@pytest.mark.task02_1
@pytest.mark.points(4)
def test_head_attends_over_its_own_projections(model):
    """Head(x) is attention over query(x), key(x), value(x); with dropout it is random in training only"""
    torch.manual_seed(0)
    head = model.Head(12, 5, dropout=0.0).double()
    x = torch.randn(3, 10, 12, dtype=torch.float64)
    out = head(x)
    assert out.shape == (3, 10, 5), f"Head(12, 5) must map (3, 10, 12) to (3, 10, 5), got {tuple(out.shape)}"
    expected = F.scaled_dot_product_attention(head.query(x), head.key(x), head.value(x), is_causal=True)
    assert_close(out, expected, "Head: causal attention of query(x), key(x) and value(x), in that order")
    noisy = model.Head(12, 5, dropout=0.5).double().eval()
    without = F.scaled_dot_product_attention(noisy.query(x), noisy.key(x), noisy.value(x), is_causal=True)
    assert_close(noisy(x), without, "Head in eval mode: no attention dropout (pass dropout 0.0 when not self.training)")
    noisy.train()
    assert not torch.allclose(noisy(x), noisy(x)), "Head in training mode: attention dropout self.dropout"


# ---------------------------------------------------------------------------------------------- task02_2


def torch_mha(mha: nn.Module, n_embd: int, n_head: int) -> nn.MultiheadAttention:
    """torch's nn.MultiheadAttention holding the same weights (its in-projection is query;key;value stacked)."""
    ref = nn.MultiheadAttention(n_embd, n_head, bias=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.query.weight, mha.key.weight, mha.value.weight]))
        ref.in_proj_bias.zero_()
        ref.out_proj.weight.copy_(mha.proj.weight)
        ref.out_proj.bias.copy_(mha.proj.bias)
    return ref.eval()


@pytest.mark.task02_2
@pytest.mark.points(6)
def test_multi_head_attention_equals_torch(model):
    """MultiHeadAttention == nn.MultiheadAttention with a causal mask and the same weights, in float64"""
    for n_embd, n_head, T in [(16, 4, 9), (12, 3, 1), (8, 1, 5), (24, 6, 20)]:
        torch.manual_seed(n_embd + T)
        mha = model.MultiHeadAttention(n_embd, n_head).double().eval()
        x = torch.randn(2, T, n_embd, dtype=torch.float64)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # True: may not attend
        expected, _ = torch_mha(mha, n_embd, n_head)(x, x, x, attn_mask=mask, need_weights=False)
        assert_close(mha(x), expected,
                     f"MultiHeadAttention(n_embd={n_embd}, n_head={n_head}) differs from nn.MultiheadAttention with "
                     "the same weights: head h owns channels h*hs..(h+1)*hs - 1 of query(x), key(x), value(x); view "
                     "(B, T, nh, hs), transpose to (B, nh, T, hs), attend, transpose back to (B, T, C), then proj")


@pytest.mark.task02_2
@pytest.mark.points(3)
def test_multi_head_attention_is_causal(model):
    """No output position depends on a later input position"""
    torch.manual_seed(1)
    mha = model.MultiHeadAttention(8, 2).double().eval()
    assert causal_jacobian_leaks(mha, torch.randn(2, 7, 8, dtype=torch.float64)) == 0.0, (
        "MultiHeadAttention: output t depends on a later position; viewing (B, T, C) directly as (B, nh, T, hs) "
        "mixes positions: view (B, T, nh, hs), then transpose(1, 2)")


@pytest.mark.task02_2
@pytest.mark.points(3)
def test_multi_head_attention_dropout_only_in_training(model):
    """Attention and residual dropout are active in training mode and off in eval mode"""
    torch.manual_seed(2)
    mha = model.MultiHeadAttention(8, 2, dropout=0.3).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    assert not torch.allclose(mha(x), mha(x)), "MultiHeadAttention in training mode: dropout makes outputs random"
    assert (mha(x) == 0).any(), "MultiHeadAttention in training mode: resid_dropout after proj zeroes some outputs"
    mha.eval()
    expected, _ = torch_mha(mha, 8, 2)(x, x, x, attn_mask=torch.ones(6, 6, dtype=torch.bool).triu(1),
                                       need_weights=False)
    assert_close(mha(x), expected, "MultiHeadAttention in eval mode: no dropout (attention dropout 0.0 when not "
                 "self.training)")


# ---------------------------------------------------------------------------------------------- task02_3


@pytest.mark.task02_3
@pytest.mark.points(4)
def test_feed_forward_is_relu_between_two_linear_layers(model):
    """FeedForward(x) == proj(relu(fc(x))), computed here with F.linear"""
    torch.manual_seed(3)
    ff = model.FeedForward(10).double().eval()
    x = torch.randn(2, 5, 10, dtype=torch.float64)
    expected = F.linear(F.relu(F.linear(x, ff.fc.weight, ff.fc.bias)), ff.proj.weight, ff.proj.bias)
    assert_close(ff(x), expected, "FeedForward: proj(relu(fc(x))), with F.relu between the two linear layers")


@pytest.mark.task02_3
@pytest.mark.points(2)
def test_feed_forward_is_four_times_wider_and_positionwise(model):
    """The hidden layer has 4 * n_embd units, and each position is computed on its own"""
    ff = model.FeedForward(6).double().eval()
    assert (ff.fc.in_features, ff.fc.out_features, ff.proj.out_features) == (6, 24, 6), (
        "FeedForward(6): fc maps 6 to 4 * 6 = 24 units, proj maps them back to 6")
    x = torch.randn(1, 4, 6, dtype=torch.float64)
    y = x.clone()
    y[:, 2] += 1.0
    changed = (ff(x) - ff(y)).abs().amax(dim=-1)[0]
    assert changed[2] > 0 and changed[[0, 1, 3]].max() == 0, "FeedForward: each position is computed on its own"


@pytest.mark.task02_3
@pytest.mark.points(2)
def test_feed_forward_dropout_only_in_training(model):
    """Dropout at the output in training mode, none in eval mode"""
    ff = model.FeedForward(8, dropout=0.5).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    assert (ff(x) == 0).any(), "FeedForward in training mode: dropout(proj(relu(fc(x)))) zeroes some outputs"
    ff.eval()
    assert_close(ff(x), ff(x), "FeedForward in eval mode: no dropout")
    assert not (ff(x) == 0).any(), "FeedForward in eval mode: no dropout"


# ---------------------------------------------------------------------------------------------- task02_4


@pytest.mark.task02_4
@pytest.mark.points(4)
def test_layer_norm_equals_torch(model):
    """LayerNorm == F.layer_norm over the last dimension, with learned weight and bias and any eps"""
    g = torch.Generator().manual_seed(4)
    for shape, eps in [((5, 8), 1e-5), ((2, 3, 16), 1e-5), ((4, 1), 1e-3), ((2, 7, 32), 0.5)]:
        ln = model.LayerNorm(shape[-1], eps=eps).double()
        assert torch.equal(ln.weight, torch.ones(shape[-1], dtype=torch.float64)), "LayerNorm: weight starts at 1"
        assert torch.equal(ln.bias, torch.zeros(shape[-1], dtype=torch.float64)), "LayerNorm: bias starts at 0"
        with torch.no_grad():
            ln.weight.normal_(generator=g)
            ln.bias.normal_(generator=g)
        x = 3 * torch.randn(*shape, generator=g, dtype=torch.float64) + 2
        assert_close(ln(x), F.layer_norm(x, shape[-1:], ln.weight, ln.bias, eps),
                     f"LayerNorm(eps={eps}) on shape {shape} differs from F.layer_norm: (x - mean) / sqrt(var + eps) "
                     "* weight + bias over the last dimension, var the biased variance (divide by ndim), eps inside "
                     "the square root")


@pytest.mark.task02_4
@pytest.mark.points(4)
def test_layer_norm_gradients_pass_gradcheck(model):
    """torch.autograd.gradcheck in float64: the analytic gradients (input, weight, bias) match finite differences,
    and equal F.layer_norm's"""
    torch.manual_seed(5)
    ln = model.LayerNorm(6).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)

    def learner(x, w, b):  # the module with w and b in place of its parameters, so gradcheck varies them too
        return torch.func.functional_call(ln, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(learner, (x, w, b))
    upstream = torch.randn(3, 6, dtype=torch.float64)
    ours = torch.autograd.grad(learner(x, w, b), (x, w, b), upstream)
    theirs = torch.autograd.grad(F.layer_norm(x, (6,), w, b, 1e-5), (x, w, b), upstream)
    for name, a, e in zip(("input", "weight", "bias"), ours, theirs, strict=True):
        assert_close(a, e, f"LayerNorm: the gradient with respect to its {name} differs from F.layer_norm's")


@pytest.mark.task02_4
@pytest.mark.points(2)
def test_layer_norm_is_written_from_scratch(model, monkeypatch):
    """LayerNorm.forward still works when torch's own layer_norm is unavailable"""
    def forbidden(*args, **kwargs):
        raise AssertionError("LayerNorm must be written with tensor operations, not F.layer_norm")

    ln = model.LayerNorm(4).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    expected = F.layer_norm(x, (4,), ln.weight, ln.bias, 1e-5)
    monkeypatch.setattr(F, "layer_norm", forbidden)
    monkeypatch.setattr(torch, "layer_norm", forbidden)
    monkeypatch.setattr(torch.nn.LayerNorm, "forward", forbidden)
    assert_close(ln(x), expected, "LayerNorm written with tensor operations differs from F.layer_norm")


@pytest.mark.task02_4
@pytest.mark.points(3)
def test_block_is_pre_norm_with_residuals(model):
    """Block(x) == h + ffwd(LN2(h)) with h = x + sa(LN1(x)), LayerNorms computed with F.layer_norm"""
    torch.manual_seed(6)
    block = model.Block(16, 4).double().eval()
    with torch.no_grad():
        for ln in (block.ln1, block.ln2):
            ln.weight.normal_()
            ln.bias.normal_()
    x = torch.randn(2, 9, 16, dtype=torch.float64)

    def norm(ln, t):
        return F.layer_norm(t, (16,), ln.weight, ln.bias, 1e-5)

    h = x + block.sa(norm(block.ln1, x))
    assert_close(block(x), h + block.ffwd(norm(block.ln2, h)),
                 "Block: h = x + sa(ln1(x)), then h + ffwd(ln2(h)): pre-norm, each sublayer added to its input")


@pytest.mark.task02_4
@pytest.mark.points(2)
def test_block_without_layer_norm_keeps_the_residuals(model):
    """Block(layer_norm=False), the ablation's "residual" stage: x + sa(x), then + ffwd of that"""
    torch.manual_seed(7)
    block = model.Block(8, 2, layer_norm=False).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    h = x + block.sa(x)
    assert_close(block(x), h + block.ffwd(h),
                 "Block(layer_norm=False): h = x + sa(x), then h + ffwd(h): both residual connections stay")


# ---------------------------------------------------------------------------------------------- task02_5


def small_gpt(model, seed: int = 8, block_size: int = 8, dtype=torch.float64):
    torch.manual_seed(seed)
    config = model.GPTConfig(vocab_size=11, block_size=block_size, n_layer=2, n_head=2, n_embd=12, dropout=0.0)
    gpt = model.GPT(config).to(dtype).eval()
    with torch.no_grad():  # move LayerNorm gains and biases off 1 and 0 so that every parameter matters
        for name, p in gpt.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_f.weight", "bias")):
                p.add_(0.1 * torch.randn_like(p))
    return gpt


@pytest.mark.task02_5
@pytest.mark.points(5)
def test_gpt_logits_equal_the_builtin_reference(model):
    """Logits and loss equal a GPT made of nn.LayerNorm and scaled_dot_product_attention holding the same weights"""
    gpt = small_gpt(model)
    reference = builtin.builtin_copy(gpt).eval()
    for T in (1, 5, 8):
        idx = torch.randint(11, (3, T), generator=torch.Generator().manual_seed(T))
        targets = torch.randint(11, (3, T), generator=torch.Generator().manual_seed(T + 1))
        logits, loss = gpt(idx, targets)
        ref_logits, ref_loss = reference(idx, targets)
        assert logits.shape == (3, T, 11), f"GPT.forward: logits of shape (B, T, V) = (3, {T}, 11), got {logits.shape}"
        assert_close(logits, ref_logits, f"GPT.forward (T={T}): logits differ from a GPT of torch's parts holding the "
                     "same weights: token + position embeddings (positions 0..T-1), the blocks, ln_f, lm_head")
        assert_close(loss, ref_loss, "GPT.forward: the loss is F.cross_entropy over all B*T positions")


@pytest.mark.task02_5
@pytest.mark.points(2)
def test_gpt_loss_is_none_without_targets_and_is_causal(model):
    """forward(idx) returns (logits, None), and logits at t do not depend on later tokens"""
    gpt = small_gpt(model)
    idx = torch.randint(11, (2, 8), generator=torch.Generator().manual_seed(0))
    logits, loss = gpt(idx)
    assert loss is None, "GPT.forward(idx) without targets returns (logits, None)"
    changed = idx.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    assert_close(gpt(changed)[0][:, :5], logits[:, :5], "GPT.forward: the logits at t depend on later tokens")
    assert not torch.allclose(gpt(changed)[0][:, 5:], logits[:, 5:]), "GPT.forward: the logits ignore the tokens"


@pytest.mark.task02_5
@pytest.mark.points(2)
def test_gpt_rejects_sequences_longer_than_block_size(model):
    """A ValueError naming block_size, not an IndexError from the position embedding"""
    gpt = small_gpt(model)
    gpt(torch.zeros(1, 8, dtype=torch.long))  # block_size positions are fine (and a stub stops here)
    expect_value_error(lambda: gpt(torch.zeros(1, 9, dtype=torch.long)), "block_size",
                       "GPT.forward with T=9 > block_size=8 must raise a ValueError naming block_size")


def expect_value_error(call, match: str, what: str) -> None:
    """call() must raise a ValueError whose message contains `match`; any other outcome fails naming `what`."""
    try:
        call()
    except ValueError as error:
        assert match in str(error), f"{what}; its message was {str(error)!r}"
        return
    except NotImplementedError:  # a stub: code still to write, reported as such
        raise
    except Exception as error:  # an IndexError from the embedding, say: the learner's code let T through
        pytest.fail(f"{what}; got {type(error).__name__}: {error}")
    pytest.fail(f"{what}; nothing was raised")


def reference_generate(reference, idx, steps, block_size, temperature, generator):
    for _ in range(steps):
        logits, _ = reference(idx[:, -block_size:])
        probs = F.softmax(logits[:, -1] / temperature, dim=-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return idx


@pytest.mark.task02_5
@pytest.mark.points(4)
def test_generate_crops_the_context_to_block_size(model):
    """generate() runs past block_size by feeding the last block_size ids, and draws like the reference"""
    gpt = small_gpt(model, block_size=6)
    reference = builtin.builtin_copy(gpt).eval()
    idx = torch.randint(11, (2, 3), generator=torch.Generator().manual_seed(1))
    for temperature in (1.0, 0.7):
        try:
            out = gpt.generate(idx, 20, temperature=temperature, generator=torch.Generator().manual_seed(5))
        except ValueError as error:
            pytest.fail(f"generate past block_size=6 raised {error!r}: feed only the last block_size ids, "
                        "idx[:, -block_size:]")
        expected = reference_generate(reference, idx, 20, 6, temperature, torch.Generator().manual_seed(5))
        assert out.shape == (2, 23) and torch.equal(out[:, :3], idx), (
            "generate: returns (B, T + max_new_tokens), the prompt first")
        assert torch.equal(out, expected), (
            f"generate(temperature={temperature}) draws other ids than the reference: feed the last block_size ids, "
            "take the last position's logits / temperature, softmax, one torch.multinomial with the generator")


@pytest.mark.task02_5
@pytest.mark.points(2)
def test_generate_temperature(model):
    """A tiny temperature samples the most likely id; a temperature <= 0 is refused"""
    gpt = small_gpt(model)
    idx = torch.randint(11, (3, 4), generator=torch.Generator().manual_seed(2))
    out = gpt.generate(idx, 1, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, -1], gpt(idx)[0][:, -1].argmax(dim=-1)), (
        "generate(temperature=1e-6) must pick the most likely id: divide the logits by the temperature")
    expect_value_error(lambda: gpt.generate(idx, 1, temperature=0.0), "temperature",
                       "generate(temperature=0.0) must raise a ValueError naming temperature")
