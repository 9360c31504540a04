"""Public tests for milestone 02, model.py: run `pytest milestones/02 -m task02_1` (then task02_2, ...).

Each compares your code with torch's own version of the same thing, on small inputs. The hidden tests that
grade you check the same things on more shapes, with gradients, and against a GPT built from torch's parts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmfs.testing import implementation_fixture

model = implementation_fixture("02", "model", default_root=Path(__file__).resolve().parents[1])


@pytest.mark.task02_1
def test_attention_matches_torch(model):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 6, 4, dtype=torch.float64) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(model.causal_self_attention(q, k, v), expected)
    head = model.Head(8, 4).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    assert head(x).shape == (2, 6, 4)


@pytest.mark.task02_2
def test_multi_head_attention_shapes_and_causality(model):
    torch.manual_seed(0)
    mha = model.MultiHeadAttention(8, 2).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    y = mha(x)
    assert y.shape == (2, 5, 8)
    x2 = x.clone()
    x2[:, 3:] += 1.0  # change the future: the first three outputs must not move
    torch.testing.assert_close(mha(x2)[:, :3], y[:, :3])


@pytest.mark.task02_3
def test_feed_forward(model):
    ff = model.FeedForward(6).eval()
    x = torch.randn(3, 6)
    expected = ff.proj(F.relu(ff.fc(x)))
    torch.testing.assert_close(ff(x), expected)
    assert ff.fc.out_features == 24


@pytest.mark.task02_4
def test_layer_norm_and_block(model):
    ln = model.LayerNorm(5).double()
    x = 4 * torch.randn(3, 5, dtype=torch.float64) + 1
    torch.testing.assert_close(ln(x), F.layer_norm(x, (5,)))
    block = model.Block(8, 2).eval()
    assert block(torch.randn(2, 4, 8)).shape == (2, 4, 8)


@pytest.mark.task02_5
def test_gpt_forward_and_generate(model):
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=8)).eval()
    idx = torch.randint(10, (2, 4))
    logits, loss = gpt(idx, idx)
    assert logits.shape == (2, 4, 10)
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(8, 10), idx.view(8)))
    out = gpt.generate(idx, 6, generator=torch.Generator().manual_seed(0))  # runs past block_size=4
    assert out.shape == (2, 10) and torch.equal(out[:, :4], idx)



def dropout_only_in_training(name, noisy, plain) -> torch.Tensor:
    """`noisy` (dropout=0.5) equals `plain` (no dropout, same weights) in eval mode, and is random in training
    mode; returns one training-mode output."""
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))
    plain.load_state_dict(noisy.state_dict())
    torch.testing.assert_close(noisy.eval()(x), plain.eval()(x), msg=f"{name} in eval mode: no dropout")
    noisy.train()
    assert not torch.allclose(noisy(x), noisy(x)), f"{name} in training mode: dropout makes outputs random"
    return noisy(x)


@pytest.mark.task02_1
def test_head_dropout_only_in_training_mode(model):
    torch.manual_seed(0)
    dropout_only_in_training("Head", model.Head(8, 4, dropout=0.5), model.Head(8, 4))


@pytest.mark.task02_2
def test_multi_head_dropout_only_in_training_mode(model):
    torch.manual_seed(0)
    y = dropout_only_in_training("MultiHeadAttention", model.MultiHeadAttention(8, 2, dropout=0.5),
                                 model.MultiHeadAttention(8, 2))
    assert (y == 0).any(), "MultiHeadAttention: resid_dropout after proj zeroes some outputs"


@pytest.mark.task02_3
def test_feed_forward_dropout_only_in_training_mode(model):
    torch.manual_seed(0)
    y = dropout_only_in_training("FeedForward", model.FeedForward(8, dropout=0.5), model.FeedForward(8))
    assert (y == 0).any(), "FeedForward: dropout after proj zeroes some outputs"


@pytest.mark.task02_5
def test_generate_divides_by_the_temperature(model):
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=8)).eval()
    idx = torch.randint(10, (3, 4))
    with torch.no_grad():
        most_likely = gpt(idx)[0][:, -1].argmax(dim=-1)
    out = gpt.generate(idx, 1, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, -1], most_likely)  # logits / 1e-6: all the probability on the most likely id
    with pytest.raises(ValueError, match="block_size"):
        gpt(torch.zeros(1, 5, dtype=torch.long))  # 5 positions, but block_size is 4
