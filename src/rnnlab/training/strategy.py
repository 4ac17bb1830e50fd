"""The one seam between a task and how it trains: a :class:`TrainingStrategy` trains a :class:`Learner`.

The task (a LightningModule) holds one strategy, made by :func:`make_strategy` from the ``training`` group and the
``optimizer`` / ``scheduler`` factories, and calls only its interface from its Lightning hooks:

* :class:`BPTT` -- ``training=bptt`` with a gradient optimizer: Lightning's automatic optimization of the
  task's own loss over the whole batch, one update per batch;
* a manual rule (``tbptt``, ``rtrl``, ``bu``, ``gf``; :mod:`rnnlab.training.rules`) -- several updates per batch,
  each through :meth:`Learner.manual_update`;
* :class:`rnnlab.training.prediction.PredictionStrategy` -- an optimizer that reads the model's predictions
  (``optimizer=hessian_free``, ``ekf``, ``dekf``, ``cmaes``, ``genetic``): one ``optimizer.step(closure)`` per batch.

A strategy sees the task only through :class:`Learner`, the narrow view listed there; the Trainer stays behind the
task's methods (``manual_update``, ``step_schedulers``, ``start_manual_optimization``, ``stop_diverged``,
``log_step``).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from rnnlab.data.base import TaskSpec
from rnnlab.training.prediction import PredictionStrategy, check_prediction_optimizer
from rnnlab.training.regularizers import Regularization
from rnnlab.training.rules import TrainingSettings


class Learner(Protocol):
    """What a training strategy may use of the task; the task implements it (``SequenceTask``)."""

    spec: TaskSpec  # the data: kind, per-step or sequence targets, stateful streams
    model: nn.Module  # the network the task trains (rules may run its recurrence and readout themselves)
    embedding: nn.Module | None  # the embedding of token inputs before the model, or None
    pooling: str  # how sequence-level targets meet the outputs: ``last`` or ``mean``
    regularization: Regularization  # the run's regularizers (``regularizers``: name -> Regularizer)
    carried_state: dict[str, object]  # stage -> the detached state a stateful stream carries to its next batch

    def head(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The outputs that meet the targets: [B, T, C] for per-step targets, else [B, C]."""

    def loss_and_count(
        self, predictions: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
        target_mask: torch.Tensor | None = None, target_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        """The task's mean loss over the targets, and their number."""

    def run_model(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """The model's outputs [B, T, C] for a batch (tokens embedded, a stateful stream's state carried)."""

    def shared_step(
        self, batch: dict[str, torch.Tensor], stage: str, outputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The batch's loss with its logged metrics; ``outputs`` given skips running the model."""

    def record(self, stage: str, name: str, value: torch.Tensor, count: int, prog_bar: bool = False) -> None:
        """Log ``<stage>/<name>``, a mean over ``count`` targets."""

    def penalty(self) -> torch.Tensor | None:
        """The regularizers' penalty for the latest training forward (None when none applies)."""

    def optimizers(self) -> Any:
        """The run's optimizer as Lightning wraps it (``.optimizer`` is the torch optimizer)."""

    def manual_update(self, objective: torch.Tensor) -> None:
        """One optimizer update on ``objective``'s gradient, clipped and scheduled as the automatic loop does."""

    def step_schedulers(self, interval: str) -> None:
        """Step the learning-rate schedulers of ``interval`` (``step``, ``epoch``) as the automatic loop does."""

    def start_manual_optimization(self, rule: str) -> None:
        """Refuse Trainer settings that ``rule``'s updates cannot honour, then turn automatic optimization off."""

    def stop_diverged(self) -> None:
        """Mark the run diverged at this step and stop training (the update is skipped)."""

    def log_step(self, name: str, value: float) -> None:
        """Log ``name`` at this step only (an optimizer's diagnostics)."""


class TrainingStrategy(Protocol):
    """How a task trains on a batch; the task calls only these."""

    automatic: bool  # Lightning's automatic optimization while the Trainer checks its settings, before fit starts
    needs_predictions: bool  # whether the optimizer reads the model's predictions (the head must be the model's own)

    def on_fit_start(self, task: Learner) -> None:
        """Before the first batch, after Lightning has checked the Trainer's settings."""

    def training_step(self, task: Learner, batch: dict) -> torch.Tensor | None:
        """Train on one batch; the loss to report (for automatic optimization: to minimise), None to skip."""

    def on_train_epoch_end(self, task: Learner) -> None:
        """After the training epoch's last batch."""


class BPTT:
    """Backpropagation through time over the whole batch (Werbos 1990; survey III.A) by Lightning's automatic
    optimization: the task's loss plus the regularizers' penalty, one update per batch, clipped by the Trainer."""

    automatic = True
    needs_predictions = False

    def on_fit_start(self, task: Learner) -> None:
        pass

    def training_step(self, task: Learner, batch: dict) -> torch.Tensor | None:
        loss = task.shared_step(batch, "train")
        penalty = task.penalty()  # survey eqs. 54-55, 57; train/loss stays the data loss
        if penalty is not None:
            task.record("train", "penalty", penalty, batch["lengths"].shape[0])
            loss = loss + penalty
        if not torch.isfinite(loss):
            task.stop_diverged()
            return None  # skip the update; the run ends with status "diverged"
        return loss

    def on_train_epoch_end(self, task: Learner) -> None:
        pass


def make_strategy(
    training: TrainingSettings | None, optimizer: Any, scheduler: Any, task: Learner
) -> TrainingStrategy:
    """The strategy for ``task``: the ``training`` group's rule (None: bptt; :mod:`rnnlab.training.rules`), unless
    ``optimizer`` (a factory of a torch optimizer) builds one that reads predictions, which needs ``bptt`` and no
    ``scheduler``. Raises ConfigError naming the key at fault (``training``, ``pooling``, ``optimizer...``)."""
    rule = (training or TrainingSettings()).make_rule(task)
    if check_prediction_optimizer(optimizer, task.spec, scheduler, rule):
        return PredictionStrategy()
    return BPTT() if rule is None else rule
