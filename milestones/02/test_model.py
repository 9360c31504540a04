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
