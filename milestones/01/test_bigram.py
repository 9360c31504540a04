"""Public tests for milestone 01: run `pytest milestones/01` (or `-m task01_1` for one task).

They check the shapes and rules on small inputs. The hidden tests that grade you check the same things
more thoroughly, on the whole of TinyShakespeare (see README.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmfs.testing import implementation_fixture

bigram = implementation_fixture("01", "bigram", default_root=Path(__file__).resolve().parents[1])


@pytest.mark.task01_1
def test_tokenizer_round_trip(bigram):
    tokenizer = bigram.CharTokenizer("hello world")
    assert tokenizer.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tokenizer.vocab_size == 8
    assert tokenizer.encode("hello") == [3, 2, 4, 4, 5]
    assert tokenizer.decode([7, 5, 6, 4, 1]) == "world"
    with pytest.raises(ValueError, match="z"):
        tokenizer.encode("zoo")


@pytest.mark.task01_1
def test_split_and_batch(bigram):
    train_data, val_data = bigram.train_val_split(torch.arange(100))
    assert len(train_data) == 90 and len(val_data) == 10
    x, y = bigram.get_batch(train_data, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y[:, :-1], x[:, 1:])  # targets are the inputs shifted by one
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # in 0, 1, 2, ... the next id is one more


@pytest.mark.task01_2
def test_counts_and_probabilities(bigram):
    data = torch.tensor([0, 1, 0, 1, 1])  # bigrams: 01, 10, 01, 11
    counts = bigram.count_bigrams(data, 2)
    assert counts.tolist() == [[0, 2], [1, 1]]
    probs = bigram.bigram_probabilities(counts, k=1.0)
    torch.testing.assert_close(probs, torch.tensor([[1 / 4, 3 / 4], [2 / 4, 2 / 4]]))
    expected = -(math.log(3 / 4) * 2 + math.log(2 / 4) * 2) / 4
    assert bigram.bigram_nll(probs, data) == pytest.approx(expected, rel=1e-5)


@pytest.mark.task01_3
def test_model_forward_and_generate(bigram):
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(10)
    idx = torch.randint(10, (2, 5))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 5, 10)
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(10, 10), idx.view(10)))
    out = model.generate(idx, 7, torch.Generator().manual_seed(0))
    assert out.shape == (2, 12) and torch.equal(out[:, :5], idx)


@pytest.mark.task01_4
def test_estimate_and_train(bigram):
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(5)
    data = torch.arange(500) % 5
    before = bigram.estimate_loss(model, {"train": data}, 4, 8, 3, torch.Generator().manual_seed(0))
    assert set(before) == {"train"} and model.training
    losses = bigram.train(model, data, max_iters=100, batch_size=4, block_size=8, learning_rate=0.1,
                          generator=torch.Generator().manual_seed(0), progress=False)
    assert len(losses) == 100
    after = bigram.estimate_loss(model, {"train": data}, 4, 8, 3, torch.Generator().manual_seed(0))
    assert after["train"] < before["train"] / 2
