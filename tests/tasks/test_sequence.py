"""The heads and losses of the base LightningModule, checked by hand."""

from __future__ import annotations

import functools

import torch

from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.models.gated import LSTM
from rnnlab.tasks.sequence import SequenceTask


def task(kind="regression", per_step=False, pooling="last", output_size=2):
    model = LSTM(3, output_size, hidden_size=4)
    spec = TaskSpec(kind=kind, per_step=per_step, metric="mse" if kind == "regression" else "acc")
    return SequenceTask(model, spec, optimizer=functools.partial(torch.optim.SGD, lr=0.1), pooling=pooling)


def test_last_pooling_reads_the_last_valid_step():
    outputs = torch.arange(24.0).view(2, 4, 3)
    picked = task().head(outputs, torch.tensor([4, 2]))
    assert torch.equal(picked, torch.stack([outputs[0, 3], outputs[1, 1]]))


def test_mean_pooling_averages_valid_steps_only():
    outputs = torch.arange(24.0).view(2, 4, 3)
    pooled = task(pooling="mean").head(outputs, torch.tensor([4, 2]))
    assert torch.equal(pooled, torch.stack([outputs[0].mean(0), outputs[1, :2].mean(0)]))


def test_per_step_cross_entropy_ignores_padding():
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]])
    loss, count = task("classification", per_step=True, output_size=5).loss_and_count(logits, targets, torch.tensor([3, 1]))
    by_hand = -torch.stack([logits[0, 0].log_softmax(-1)[1], logits[0, 1].log_softmax(-1)[2],
                            logits[0, 2].log_softmax(-1)[3], logits[1, 0].log_softmax(-1)[4]]).mean()
    assert count == 4
    torch.testing.assert_close(loss, by_hand)


def test_per_step_regression_averages_over_valid_steps():
    predictions = torch.zeros(2, 3, 1)
    targets = torch.tensor([[[1.0], [2.0], [3.0]], [[4.0], [99.0], [99.0]]])
    loss, count = task(per_step=True, output_size=1).loss_and_count(predictions, targets, torch.tensor([3, 1]))
    assert count == 4 and torch.isclose(loss, torch.tensor((1 + 4 + 9 + 16) / 4))


def test_optimizer_and_plateau_scheduler_are_wired():
    module = task()
    module.scheduler_factory = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=1)
    configured = module.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD)
    assert configured["lr_scheduler"]["monitor"] == "val/loss"
