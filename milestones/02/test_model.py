"""Public tests for milestone 02, model.py: one function at a time, in the order you write them.

    pytest milestones/02 -m task02_1            # a task's functions
    pytest milestones/02 -k head_forward        # one function: the tests are named after it

Each test checks one function (its `checks` marker names it) against torch's own version or a formula
written here, and uses only that function and those before it. The hidden tests that grade you check the
same things on more shapes, with gradients, and against a GPT built from torch's parts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmfs.testing import implementation_fixture

model = implementation_fixture("02", "model", default_root=Path(__file__).resolve().parents[1])


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dropout_only_in_training(name, noisy, plain) -> torch.Tensor:
    """`noisy` (dropout=0.5) equals `plain` (no dropout, same weights) in eval mode, and is random in training
    mode; returns one training-mode output."""
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))
    plain.load_state_dict(noisy.state_dict())
    torch.testing.assert_close(noisy.eval()(x), plain.eval()(x), msg=f"{name} in eval mode: no dropout")
    noisy.train()
    assert not torch.allclose(noisy(x), noisy(x)), f"{name} in training mode: dropout makes outputs random"
    return noisy(x)


def heads_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) projections -> (B, T, C): torch's causal attention on each head's hs channels, side by side."""
    B, T, C = q.shape
    split = [t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v)]
    return F.scaled_dot_product_attention(*split, is_causal=True).transpose(1, 2).reshape(B, T, C)


# ---------------------------------------------------------------------------------------------- task02_1


@pytest.mark.task02_1
@pytest.mark.checks("causal_self_attention")
def test_causal_self_attention_matches_torch(model):
    for shape in ((2, 6, 4), (2, 3, 5, 4)):  # (B, T, hs) and (B, nh, T, hs)
        q, k, v = randn(*shape, seed=1), randn(*shape, seed=2), randn(*shape, seed=3)
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.testing.assert_close(model.causal_self_attention(q, k, v), expected)


@pytest.mark.task02_1
@pytest.mark.checks("causal_self_attention")
def test_causal_self_attention_first_position_sees_only_itself(model):
    q, k, v = randn(1, 4, 3, seed=1), randn(1, 4, 3, seed=2), randn(1, 4, 3, seed=3)
    torch.testing.assert_close(model.causal_self_attention(q, k, v)[:, 0], v[:, 0])  # all its weight on itself


@pytest.mark.task02_1
@pytest.mark.checks("Head.forward")
def test_head_forward_attends_over_its_projections(model):
    torch.manual_seed(0)
    head = model.Head(8, 4).double().eval()
    x = randn(2, 6, 8)
    expected = F.scaled_dot_product_attention(head.query(x), head.key(x), head.value(x), is_causal=True)
    torch.testing.assert_close(head(x), expected)


@pytest.mark.task02_1
@pytest.mark.checks("Head.forward")
def test_head_forward_dropout_only_in_training_mode(model):
    torch.manual_seed(0)
    dropout_only_in_training("Head", model.Head(8, 4, dropout=0.5), model.Head(8, 4))


# ---------------------------------------------------------------------------------------------- task02_2


@pytest.mark.task02_2
@pytest.mark.checks("MultiHeadAttention.forward")
def test_multi_head_attention_forward_matches_heads_by_hand(model):
    torch.manual_seed(0)
    mha = model.MultiHeadAttention(8, 2).double().eval()
    x = randn(2, 5, 8)
    expected = mha.proj(heads_by_hand(mha.query(x), mha.key(x), mha.value(x), n_head=2))
    torch.testing.assert_close(mha(x), expected)


@pytest.mark.task02_2
@pytest.mark.checks("MultiHeadAttention.forward")
def test_multi_head_attention_forward_is_causal(model):
    torch.manual_seed(0)
    mha = model.MultiHeadAttention(8, 2).double().eval()
    x = randn(2, 5, 8)
    y = mha(x)
    x2 = x.clone()
    x2[:, 3:] += 1.0  # change the future: the first three outputs must not move
    torch.testing.assert_close(mha(x2)[:, :3], y[:, :3])


@pytest.mark.task02_2
@pytest.mark.checks("MultiHeadAttention.forward")
def test_multi_head_attention_forward_dropout_only_in_training_mode(model):
    torch.manual_seed(0)
    y = dropout_only_in_training("MultiHeadAttention", model.MultiHeadAttention(8, 2, dropout=0.5),
                                 model.MultiHeadAttention(8, 2))
    assert (y == 0).any(), "MultiHeadAttention: resid_dropout after proj zeroes some outputs"


# ---------------------------------------------------------------------------------------------- task02_3


@pytest.mark.task02_3
@pytest.mark.checks("FeedForward.forward")
def test_feed_forward_forward_is_relu_between_two_linear_layers(model):
    torch.manual_seed(0)
    ff = model.FeedForward(6).eval()
    x = torch.randn(3, 6)
    hidden = F.linear(x, ff.fc.weight, ff.fc.bias).clamp(min=0)
    torch.testing.assert_close(ff(x), F.linear(hidden, ff.proj.weight, ff.proj.bias))
    assert ff.fc.out_features == 24


@pytest.mark.task02_3
@pytest.mark.checks("FeedForward.forward")
def test_feed_forward_forward_dropout_only_in_training_mode(model):
    torch.manual_seed(0)
    y = dropout_only_in_training("FeedForward", model.FeedForward(8, dropout=0.5), model.FeedForward(8))
    assert (y == 0).any(), "FeedForward: dropout after proj zeroes some outputs"


# ---------------------------------------------------------------------------------------------- task02_4


@pytest.mark.task02_4
@pytest.mark.checks("LayerNorm.forward")
def test_layer_norm_forward_matches_torch(model):
    ln = model.LayerNorm(5).double()
    with torch.no_grad():
        ln.weight.copy_(randn(5, seed=1))
        ln.bias.copy_(randn(5, seed=2))
    x = 4 * randn(3, 2, 5) + 1
    torch.testing.assert_close(ln(x), F.layer_norm(x, (5,), ln.weight, ln.bias, eps=1e-5))


@pytest.mark.task02_4
@pytest.mark.checks("Block.forward")
def test_block_forward_is_pre_norm_with_residuals(model):
    torch.manual_seed(0)
    block = model.Block(8, 2).double().eval()
    with torch.no_grad():
        block.ln1.weight.mul_(2.0)  # tell ln1 and ln2 apart
    x = randn(2, 4, 8)
    h = x + block.sa(F.layer_norm(x, (8,), block.ln1.weight, block.ln1.bias))
    expected = h + block.ffwd(F.layer_norm(h, (8,), block.ln2.weight, block.ln2.bias))
    torch.testing.assert_close(block(x), expected)


# ---------------------------------------------------------------------------------------------- task02_5


def tiny_gpt(model, block_size: int = 4):
    torch.manual_seed(0)
    config = model.GPTConfig(vocab_size=10, block_size=block_size, n_layer=1, n_head=2, n_embd=8)
    return model.GPT(config).eval()


@pytest.mark.task02_5
@pytest.mark.checks("GPT.forward")
def test_gpt_forward_logits_and_loss(model):
    gpt = tiny_gpt(model)
    idx, targets = torch.randint(10, (2, 3)), torch.randint(10, (2, 3))
    logits, loss = gpt(idx, targets)
    with torch.no_grad():
        x = gpt.token_embedding_table(idx) + gpt.position_embedding_table.weight[:3]
        expected = gpt.lm_head(gpt.ln_f(gpt.blocks(x)))
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(loss, F.cross_entropy(expected.view(6, 10), targets.view(6)))
    assert gpt(idx)[1] is None, "GPT.forward(idx) without targets returns (logits, None)"


@pytest.mark.task02_5
@pytest.mark.checks("GPT.forward")
def test_gpt_forward_refuses_sequences_longer_than_block_size(model):
    gpt = tiny_gpt(model)
    assert gpt(torch.zeros(1, 4, dtype=torch.long))[0].shape == (1, 4, 10)  # block_size positions: fine
    with pytest.raises(ValueError, match="block_size"):
        gpt(torch.zeros(1, 5, dtype=torch.long))  # 5 positions, but block_size is 4


@pytest.mark.task02_5
@pytest.mark.checks("GPT.generate")
def test_gpt_generate_samples_like_a_loop_written_here(model):
    gpt = tiny_gpt(model)
    idx = torch.randint(10, (2, 3))
    out = gpt.generate(idx, 6, temperature=0.8, generator=torch.Generator().manual_seed(0))  # past block_size=4
    expected, g = idx, torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(6):
            logits = gpt(expected[:, -4:])[0][:, -1]  # the last block_size ids, the last position
            drawn = torch.multinomial(F.softmax(logits / 0.8, dim=-1), num_samples=1, generator=g)
            expected = torch.cat([expected, drawn], dim=1)
    assert out.shape == (2, 9) and torch.equal(out[:, :3], idx)
    assert torch.equal(out, expected)


@pytest.mark.task02_5
@pytest.mark.checks("GPT.generate")
def test_gpt_generate_divides_by_the_temperature(model):
    gpt = tiny_gpt(model)
    idx = torch.randint(10, (3, 4))
    with torch.no_grad():
        most_likely = gpt(idx)[0][:, -1].argmax(dim=-1)
    out = gpt.generate(idx, 1, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, -1], most_likely)  # logits / 1e-6: all the probability on the most likely id
