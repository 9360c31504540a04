"""Public tests for milestone 05: run `pytest milestones/05 -m task05_1` (then task05_2, ...).

The hidden tests compare your model with `transformers.GPT2LMHeadModel` block by block (several shapes, the
124M configuration), your RoPE with Llama's, and your HellaSwag scores with ones computed from HF's logits.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llmfs.testing import implementation_fixture

here = Path(__file__).resolve().parents[1]
gpt2 = implementation_fixture("05", "gpt2", default_root=here)
hellaswag = implementation_fixture("05", "hellaswag", default_root=here)


def tiny_hf() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=50, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


@pytest.mark.task05_1
def test_fresh_model_shapes_names_and_loss(gpt2):
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32))
    assert set(model.state_dict()) == {k for k in tiny_hf().state_dict() if not k.endswith(".attn.bias")}
    idx = torch.randint(50, (2, 16))
    logits, loss = model(idx, torch.randint(50, (2, 16)))
    assert logits.shape == (2, 16, 50) and abs(loss.item() - math.log(50)) < 0.3


@pytest.mark.task05_2
def test_from_hf_gives_hugging_faces_logits(gpt2):
    hf = tiny_hf()
    ours = gpt2.GPT.from_hf(hf).eval()
    idx = torch.randint(50, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.task05_3
def test_rope_keeps_norms_and_rotates(gpt2):
    cos, sin = gpt2.rope_tables(8, 16)
    x = torch.randn(1, 1, 4, 8)
    y = gpt2.apply_rope(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])  # position 0 is not rotated


@pytest.mark.task05_7
def test_hellaswag_rows_and_losses(hellaswag):
    example = {"ctx": "A man", "endings": ["runs", "is a dog", "x", "sits down"], "label": 3}
    tokens, mask, label = hellaswag.render_example(example, lambda s: [ord(c) % 50 for c in s])
    assert tokens.shape == (4, 15) and label == 3 and mask[1].tolist() == [0] * 5 + [1] * 9 + [0]
    logits = torch.zeros(4, 15, 50)  # uniform: every ending token costs ln(50)
    summed, mean = hellaswag.ending_losses(logits, tokens, mask)
    torch.testing.assert_close(mean, torch.full((4,), math.log(50)))
    torch.testing.assert_close(summed, mask.sum(1).float() * math.log(50))


data = implementation_fixture("05", "data", default_root=here)


@pytest.mark.task05_4
def test_shards_and_one_epoch_of_the_loader(data, tmp_path):
    import numpy as np

    docs = [f"Document {i} counts {i * 7} sheep and {i * 13 + 1} goats." for i in range(60)]
    paths = data.write_shards(docs, tmp_path, "tiny", shard_tokens=100)
    tokens = np.concatenate([np.load(p) for p in paths])
    assert tokens.dtype == np.uint16 and tokens[0] == 50256 and (tokens == 50256).sum() == 60
    loader = data.ShardLoader(paths, batch_size=2, block_size=8, seed=0)
    seen = set()
    for _ in range(len(loader.all_windows) // 2):
        x, y = loader.next_batch()
        assert x.shape == (2, 8) and torch.equal(x[:, 1:], y[:, :-1])
        seen |= {tuple(row.tolist()) for row in x}
    assert len(seen) == 2 * (len(loader.all_windows) // 2)  # no window twice in an epoch
