"""SequenceTask's stateful carry (Zaremba et al. 2014), token-input embedding and perplexity metric."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from rnnlab.data.base import TaskSpec
from rnnlab.errors import ConfigError
from rnnlab.models.gated import GRU, LSTM
from rnnlab.tasks.sequence import EpochPerplexity, SequenceTask

STATEFUL = TaskSpec(kind="classification", per_step=True, metric="acc", stateful=True)


def make_task(model, spec=STATEFUL, **kwargs) -> SequenceTask:
    return SequenceTask(model=model, spec=spec, optimizer=partial(torch.optim.SGD, lr=0.1), **kwargs)


def batch(inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"inputs": inputs, "lengths": torch.full((inputs.shape[0],), inputs.shape[1])}


@pytest.mark.parametrize(
    "model",
    [
        LSTM(input_size=5, output_size=3, hidden_size=8, num_layers=2),
        GRU(input_size=5, output_size=3, hidden_size=8, implementation="cell"),
    ],
    ids=["lstm-fused-2-layers", "gru-cell"],
)
def test_carried_state_equals_one_long_sequence(model):
    torch.manual_seed(0)
    x = torch.randn(3, 14, 5)
    task = make_task(model)
    task.on_train_epoch_start()
    first = task.run_model(batch(x[:, :6]), "train")
    second = task.run_model(batch(x[:, 6:]), "train")
    whole, _ = model(x)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=0)
    fresh, _ = model(x[:, 6:])
    assert (second[:, 0] - fresh[:, 0]).abs().max() > 1e-3  # the second batch's first output saw the first batch


def test_state_is_detached_and_reset_per_epoch_and_stage():
    torch.manual_seed(0)
    model = LSTM(input_size=4, output_size=2, hidden_size=6)
    task = make_task(model)
    x1, x2 = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    task.run_model(batch(x1), "train")
    assert all(not part.requires_grad for part in task.carried_state["train"])  # truncated BPTT at the batch edge
    fresh, _ = model(x2)
    torch.testing.assert_close(task.run_model(batch(x2), "val"), fresh)  # val does not read train's state
    task.on_train_epoch_start()
    torch.testing.assert_close(task.run_model(batch(x2), "train"), fresh)
    task.run_model(batch(x1), "test")
    task.on_test_epoch_start()
    torch.testing.assert_close(task.run_model(batch(x2), "test"), fresh)


def test_stateless_spec_never_carries_state():
    torch.manual_seed(0)
    model = GRU(input_size=4, output_size=2, hidden_size=6)
    task = make_task(model, spec=TaskSpec(kind="classification", per_step=True, metric="acc"))
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(task.run_model(batch(x), "train"), task.run_model(batch(x), "train"))
    assert task.carried_state == {}


def test_token_inputs_are_embedded_before_the_model():
    torch.manual_seed(0)
    spec = TaskSpec(kind="classification", per_step=True, metric="ppl", input_vocab=11)
    model = LSTM(input_size=7, output_size=11, hidden_size=6)
    task = make_task(model, spec=spec, embedding_dim=7)
    ids = torch.randint(0, 11, (2, 9))
    expected, _ = model(task.embedding.weight[ids])
    torch.testing.assert_close(task.run_model(batch(ids), "train"), expected)
    assert task.embedding.weight.shape == (11, 7)
    with pytest.raises(ConfigError, match="embedding_dim"):
        make_task(model, spec=spec, embedding_dim=8)


def test_epoch_perplexity_is_exp_of_the_token_weighted_mean_loss():
    metric = EpochPerplexity()
    metric.update(torch.tensor(2.0), weight=3)
    metric.update(torch.tensor(1.0), weight=1)
    assert float(metric.compute()) == pytest.approx(math.exp((2.0 * 3 + 1.0) / 4))
