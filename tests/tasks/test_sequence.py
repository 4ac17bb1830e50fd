"""The heads and losses of the base LightningModule, checked by hand."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
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
    classifier = task("classification", per_step=True, output_size=5)
    loss, count = classifier.loss_and_count(logits, targets, torch.tensor([3, 1]))
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


def test_training_metrics_are_target_weighted_epoch_means_with_step_values_on_logging_steps(tmp_path):
    """train/loss is the epoch's mean over targets (the short last batch weighs less); train/loss_step reaches the
    CSV logger on every log_every_n_steps-th step with that step's loss."""
    import csv

    from rnnlab.bench.loop import compose_job
    from rnnlab.record import RunStats
    from rnnlab.wiring import build

    overrides = ["callbacks=minimal", "data.seq_len=5", "data.train_size=100", "data.batch_size=32",
                 "model.hidden_size=4", "trainer.max_epochs=1", "trainer.log_every_n_steps=2"]
    datamodule, module, _, trainer = build(compose_job(overrides, tmp_path), RunStats())
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((float(outputs["loss"]), len(batch["lengths"])))

    trainer.callbacks.append(Spy())
    trainer.fit(module, datamodule=datamodule)
    assert [count for _, count in seen] == [32, 32, 32, 4]
    expected = sum(loss * count for loss, count in seen) / 100
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(trainer.callback_metrics["train/mse"]) == pytest.approx(expected, rel=1e-6)
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/loss_step")]
    assert [float(row["train/loss_step"]) for row in rows] == pytest.approx([seen[1][0], seen[3][0]], rel=1e-6)
