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


@pytest.mark.task05_1
def test_mlp_uses_gpt2s_tanh_gelu(gpt2):
    torch.manual_seed(0)
    mlp = gpt2.GPT(gpt2.GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=32)).transformer.h[0].mlp
    mlp = mlp.double()
    x = 20 * torch.randn(2, 5, 32, dtype=torch.float64)  # c_fc's outputs around +-2, where the two GELUs differ most
    h = mlp.c_fc(x)
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))  # GPT-2's tanh approximation
    torch.testing.assert_close(mlp(x), mlp.c_proj(gelu), atol=1e-10, rtol=1e-10)


@pytest.mark.task05_1
@pytest.mark.parametrize("flash", [False, True])
def test_no_position_sees_the_future(gpt2, flash):
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32, flash=flash)).eval()
    idx = torch.randint(50, (2, 16), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 50  # another last token
    with torch.no_grad():
        logits, other = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(other[:, :-1], logits[:, :-1], atol=1e-6, rtol=0)  # earlier positions unchanged
    assert not torch.allclose(other[:, -1], logits[:, -1])


@pytest.mark.task05_2
def test_from_hf_gives_hugging_faces_logits(gpt2):
    hf = tiny_hf()
    ours = gpt2.GPT.from_hf(hf).eval()
    idx = torch.randint(50, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.task05_2
def test_from_hf_takes_gpt2models_keys(gpt2):
    hf = tiny_hf()  # GPT2Model's state_dict: no "transformer." prefix and no lm_head (it is wte)
    bare = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    config = gpt2.GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32)
    ours = gpt2.GPT.from_hf(bare, config).eval()
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


@pytest.mark.task05_3
def test_a_lone_token_is_the_same_at_any_offset_with_rope(gpt2):
    torch.manual_seed(0)
    model = gpt2.GPT(gpt2.GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32, rope=True)).eval()
    idx = torch.randint(50, (3, 1))
    with torch.no_grad():  # it attends only to itself, and RoPE turns q and k (never v) by the same angle
        torch.testing.assert_close(model(idx, offset=7)[0], model(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.task05_3
def test_rope_turns_channel_pairs_by_position_times_frequency(gpt2):
    """Channels i and i + hs/2 form a pair, turned by (offset + t) * 10000 ** (-2i / hs) at row t."""
    hs, T, offset = 8, 5, 3
    cos, sin = gpt2.rope_tables(hs, 16)
    x = torch.randn(1, 1, T, hs, generator=torch.Generator().manual_seed(0))
    y = gpt2.apply_rope(x, cos, sin, offset)
    for t in range(T):
        for i in range(hs // 2):
            angle = (offset + t) * 10000 ** (-2 * i / hs)
            a, b = x[0, 0, t, i].item(), x[0, 0, t, i + hs // 2].item()
            turned = [a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle)]
            assert y[0, 0, t, [i, i + hs // 2]].tolist() == pytest.approx(turned, abs=1e-5), (
                f"apply_rope(offset={offset}): row {t} is position {offset + t}; its pair ({i}, {i + hs // 2}) "
                f"must turn by {angle:.4f} rad")


@pytest.mark.task05_7
def test_hellaswag_rows_and_losses(hellaswag):
    example = {"ctx": "A man", "endings": ["runs", "is a dog", "x", "sits down"], "label": 3}
    tokens, mask, label = hellaswag.render_example(example, lambda s: [ord(c) % 50 for c in s])
    assert tokens.shape == (4, 15) and label == 3 and mask[1].tolist() == [0] * 5 + [1] * 9 + [0]
    logits = torch.zeros(4, 15, 50)  # uniform: every ending token costs ln(50)
    summed, mean = hellaswag.ending_losses(logits, tokens, mask)
    torch.testing.assert_close(mean, torch.full((4,), math.log(50)))
    torch.testing.assert_close(summed, mask.sum(1).float() * math.log(50))


@pytest.mark.task05_7
def test_evaluate_picks_the_ending_with_the_lowest_loss(hellaswag):
    # a "model" that predicts "a" with logit 5 everywhere (vocabulary: printable ASCII): "a" costs 0.49, others 5.49
    def encode(s: str) -> list[int]:
        return [ord(c) - 32 for c in s]

    def logits_of(tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, 95)
        logits[..., ord("a") - 32] = 5.0
        return logits

    examples = [{"ctx": "A man", "endings": ["aaaa", "bcd", "xyz", "aab"], "label": 0},
                # " b" sums to 2 x 5.49, 20 a's to 5.49 + 20 x 0.49 (more) but average 0.73 (less): acc misses it
                {"ctx": "A man", "endings": ["b", "c", "a" * 20, "d"], "label": 2}]
    scores = hellaswag.evaluate(logits_of, examples, encode)
    assert scores == pytest.approx({"acc": 0.5, "acc_norm": 1.0, "n": 2})


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


@pytest.mark.task05_4
def test_loader_windows_epochs_and_restore(data, tmp_path):
    import numpy as np

    np.save(tmp_path / "a.npy", np.arange(33, dtype=np.uint16))  # T = 8: windows at 0, 8, 16 and 24 (24 + 9 = 33)
    np.save(tmp_path / "b.npy", np.arange(100, 120, dtype=np.uint16))  # 20 tokens: windows at 0 and 8
    shards = [tmp_path / "a.npy", tmp_path / "b.npy"]
    loader = data.ShardLoader(shards, batch_size=2, block_size=8, seed=0)
    assert loader.windows() == [(0, 0), (0, 8), (0, 16), (0, 24), (1, 0), (1, 8)]
    epochs = []
    for _ in range(2):  # 6 windows: 3 batches of 2 per epoch
        epochs.append([int(x[row, 0]) for x, _ in (loader.next_batch() for _ in range(3)) for row in range(2)])
    assert sorted(epochs[0]) == sorted(epochs[1]) == [0, 8, 16, 24, 100, 108]  # every window once per epoch
    assert epochs[0] != epochs[1]  # each epoch in a fresh order
    loader.next_batch()
    state = loader.state_dict()
    expected = [loader.next_batch()[0] for _ in range(3)]  # crossing into the next epoch
    restored = data.ShardLoader(shards, batch_size=2, block_size=8, seed=0)
    restored.load_state_dict(state)
    for x in expected:
        assert torch.equal(restored.next_batch()[0], x)
