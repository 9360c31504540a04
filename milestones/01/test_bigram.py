"""Public tests for milestone 01: one test (or more) per function you write, in the order you write them.

    pytest milestones/01                  # everything
    pytest milestones/01 -m task01_1      # one task
    pytest milestones/01 -k encode        # one function (each test is marked @pytest.mark.checks("...") too)

A test of a function uses only that function and the ones before it, so each passes as soon as you have
written it. Expected values come from a formula, a hand count or torch itself, never from the reference
solution. The hidden tests that grade you check the same things on the whole of TinyShakespeare.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmfs.testing import implementation_fixture

bigram = implementation_fixture("01", "bigram", default_root=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------------------------- task01_1


@pytest.mark.task01_1
@pytest.mark.checks("CharTokenizer.__init__")
def test_init_builds_the_sorted_vocabulary(bigram):
    tokenizer = bigram.CharTokenizer("hello world")
    assert tokenizer.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]  # sorted(set(...)), by hand
    assert tokenizer.vocab_size == 8
    assert bigram.CharTokenizer("ba").chars == bigram.CharTokenizer("ab").chars == ["a", "b"]
    with pytest.raises(ValueError):
        bigram.CharTokenizer("")  # (a given check)


@pytest.mark.task01_1
@pytest.mark.checks("CharTokenizer.encode")
def test_encode_gives_each_characters_index_in_the_vocabulary(bigram):
    tokenizer = bigram.CharTokenizer("hello world")  # vocabulary " dehlorw"
    assert tokenizer.encode("hello") == [3, 2, 4, 4, 5]
    assert tokenizer.encode("") == []
    assert tokenizer.encode("world hello") == [" dehlorw".index(ch) for ch in "world hello"]
    with pytest.raises(ValueError, match="z"):
        tokenizer.encode("zoo")  # (a given check)


@pytest.mark.task01_1
@pytest.mark.checks("CharTokenizer.decode")
def test_decode_turns_ids_back_into_text(bigram):
    tokenizer = bigram.CharTokenizer("hello world")
    assert tokenizer.decode([7, 5, 6, 4, 1]) == "world"
    assert tokenizer.decode(torch.tensor([3, 2, 4, 4, 5])) == "hello"  # a 1-D tensor works too
    text = "hello world"
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.task01_1
@pytest.mark.checks("train_val_split")
def test_train_val_split_cuts_in_order_with_int(bigram):
    train_data, val_data = bigram.train_val_split(torch.arange(100))
    assert train_data.tolist() == list(range(90)) and val_data.tolist() == list(range(90, 100))
    train_data, _ = bigram.train_val_split(torch.arange(1000), train_fraction=0.6667)
    assert len(train_data) == 666  # int(666.7): cut with int(), not round()
    with pytest.raises(ValueError):
        bigram.train_val_split(torch.zeros(4, 4, dtype=torch.long))  # ids must be 1-D (a given check)


@pytest.mark.task01_1
@pytest.mark.checks("get_batch")
def test_get_batch_cuts_the_specified_windows(bigram):
    x, y = bigram.get_batch(torch.arange(90), 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])  # targets are the inputs shifted by one
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # in 0, 1, 2, ... the next id is one more
    x, y = bigram.get_batch(torch.arange(10), 2, 9)  # 9 plus a target fit exactly once
    assert x.tolist() == [list(range(9))] * 2 and y.tolist() == [list(range(1, 10))] * 2
    first, _ = bigram.get_batch(torch.arange(1000), 4, 8, torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global seed must not matter: draw with the generator you are given
    again, _ = bigram.get_batch(torch.arange(1000), 4, 8, torch.Generator().manual_seed(3))
    starts = torch.randint(1000 - 8, (4,), generator=torch.Generator().manual_seed(3))  # the one specified draw
    assert torch.equal(first, again) and first[:, 0].tolist() == starts.tolist()


# ---------------------------------------------------------------------------------------------- task01_2


@pytest.mark.task01_2
@pytest.mark.checks("count_bigrams")
def test_count_bigrams_matches_a_count_by_hand(bigram):
    data = torch.tensor([0, 1, 0, 1, 1])  # bigrams: 01, 10, 01, 11
    assert bigram.count_bigrams(data, 2).tolist() == [[0, 2], [1, 1]]
    data = torch.randint(5, (300,), generator=torch.Generator().manual_seed(0))
    expected = [[0] * 5 for _ in range(5)]
    for a, b in zip(data.tolist(), data.tolist()[1:], strict=False):
        expected[a][b] += 1
    counts = bigram.count_bigrams(data, 5)
    assert counts.dtype == torch.int64 and counts.tolist() == expected
    with pytest.raises(ValueError):
        bigram.count_bigrams(torch.tensor([0, 1, 2]), 2)  # id 2 is outside [0, 2) (a given check)


@pytest.mark.task01_2
@pytest.mark.checks("bigram_probabilities")
def test_bigram_probabilities_smooth_with_add_k(bigram):
    counts = torch.tensor([[0, 2], [1, 1]])
    torch.testing.assert_close(bigram.bigram_probabilities(counts, k=1.0),
                               torch.tensor([[1 / 4, 3 / 4], [2 / 4, 2 / 4]]))
    probs = bigram.bigram_probabilities(counts, k=0.5)  # (c + k) / (n + kV)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.tensor([[0.5 / 3, 2.5 / 3], [1.5 / 3, 1.5 / 3]]))
    torch.testing.assert_close(bigram.bigram_probabilities(counts, k=0.0), torch.tensor([[0.0, 1.0], [0.5, 0.5]]))


@pytest.mark.task01_2
@pytest.mark.checks("bigram_nll")
def test_bigram_nll_is_the_mean_negative_log_probability(bigram):
    probs = torch.tensor([[1 / 4, 3 / 4], [2 / 4, 2 / 4]])
    data = torch.tensor([0, 1, 0, 1, 1])  # bigrams: 01, 10, 01, 11
    expected = -(math.log(3 / 4) * 2 + math.log(2 / 4) * 2) / 4
    assert bigram.bigram_nll(probs, data) == pytest.approx(expected, rel=1e-5)
    uniform = torch.full((7, 7), 1 / 7)
    assert bigram.bigram_nll(uniform, torch.arange(7)) == pytest.approx(math.log(7), rel=1e-5)


# ---------------------------------------------------------------------------------------------- task01_3


@pytest.mark.task01_3
@pytest.mark.checks("BigramLanguageModel.forward")
def test_forward_returns_table_rows_and_cross_entropy(bigram):
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(10)
    idx = torch.randint(10, (2, 5))
    targets = torch.randint(10, (2, 5))
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 5, 10)
    torch.testing.assert_close(logits, model.token_embedding_table.weight[idx])
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(10, 10), targets.view(10)))
    logits, loss = model(idx)
    assert logits.shape == (2, 5, 10) and loss is None


@pytest.mark.task01_3
@pytest.mark.checks("BigramLanguageModel.generate")
def test_generate_samples_from_each_rows_last_id(bigram):
    model = bigram.BigramLanguageModel(5)
    with torch.no_grad():  # row a puts (almost) all probability on (a + 1) mod 5
        model.token_embedding_table.weight.copy_(torch.roll(torch.eye(5), 1, dims=1) * 100)
    out = model.generate(torch.tensor([[0, 2], [4, 1]]), 3, torch.Generator().manual_seed(0))
    assert out.tolist() == [[0, 2, 3, 4, 0], [4, 1, 2, 3, 4]]
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(30)
    prompt = torch.zeros(2, 1, dtype=torch.long)
    first = model.generate(prompt, 50, torch.Generator().manual_seed(1))
    assert first.shape == (2, 51) and torch.equal(first[:, :1], prompt)
    torch.manual_seed(99)  # the global seed must not matter: pass the generator to torch.multinomial
    assert torch.equal(model.generate(prompt, 50, torch.Generator().manual_seed(1)), first)
    assert not torch.equal(model.generate(prompt, 50, torch.Generator().manual_seed(2)), first)  # sampled, not argmax


# ---------------------------------------------------------------------------------------------- task01_4


class ModeRecorder(torch.nn.Module):
    """A model whose loss is the first input id, remembering whether each call ran in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, idx, targets=None):
        self.modes.append(self.training)
        return None, idx[:, 0].float().mean()


@pytest.mark.task01_4
@pytest.mark.checks("estimate_loss")
def test_estimate_loss_averages_in_eval_mode(bigram):
    data = torch.arange(200)
    g = torch.Generator().manual_seed(0)  # the same five draws, the one specified way
    expected = sum(torch.randint(200 - 8, (4,), generator=g).float().mean().item() for _ in range(5)) / 5
    for training in (True, False):
        recorder = ModeRecorder().train(training)
        out = bigram.estimate_loss(recorder, {"val": data}, 4, 8, 5, torch.Generator().manual_seed(0))
        assert set(out) == {"val"}
        assert out["val"] == pytest.approx(expected)  # the mean of all eval_iters batches, not the last one
        assert recorder.modes == [False] * 5  # every batch in eval mode (no dropout) ...
        assert recorder.training == training  # ... and the model left in the mode it was in


@pytest.mark.task01_4
@pytest.mark.checks("train")
def test_training_is_the_specified_loop(bigram, capsys):
    data = torch.arange(300) % 7
    torch.manual_seed(0)
    model, again = bigram.BigramLanguageModel(7), bigram.BigramLanguageModel(7)
    again.load_state_dict(model.state_dict())
    losses = bigram.train(model, data, max_iters=5, batch_size=4, block_size=8, learning_rate=0.05,
                          generator=torch.Generator().manual_seed(0), progress=False)
    assert capsys.readouterr().err == ""  # progress=False shows no progress bar
    assert all(type(loss) is float for loss in losses)  # loss.item(), not the tensor (it holds the graph)
    optimizer = torch.optim.AdamW(again.parameters(), lr=0.05)
    g, expected = torch.Generator().manual_seed(0), []
    for _ in range(5):  # the loop the docstring specifies
        ix = torch.randint(300 - 8, (4,), generator=g)
        x, y = torch.stack([data[i : i + 8] for i in ix]), torch.stack([data[i + 1 : i + 9] for i in ix])
        _, loss = again(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        expected.append(loss.item())
    assert losses == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(model.token_embedding_table.weight, again.token_embedding_table.weight)


@pytest.mark.task01_4
@pytest.mark.checks("train")
def test_training_learns_a_predictable_sequence(bigram):
    torch.manual_seed(0)
    model = bigram.BigramLanguageModel(5)
    data = torch.arange(500) % 5  # every next id is certain
    before = bigram.estimate_loss(model, {"train": data}, 4, 8, 3, torch.Generator().manual_seed(0))
    losses = bigram.train(model, data, max_iters=100, batch_size=4, block_size=8, learning_rate=0.1,
                          generator=torch.Generator().manual_seed(0), progress=False)
    assert len(losses) == 100
    after = bigram.estimate_loss(model, {"train": data}, 4, 8, 3, torch.Generator().manual_seed(0))
    assert after["train"] < before["train"] / 2
