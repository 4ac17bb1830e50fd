"""What every learning rule other than BPTT shares (:mod:`rnnlab.training.rules`): the windows' losses, the refusals
and the strategy glue (manual optimization, one update per window)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

import torch
from torch import nn

from rnnlab.data.base import IGNORE_INDEX
from rnnlab.errors import ConfigError

if TYPE_CHECKING:
    from rnnlab.training.rules import TrainingSettings
    from rnnlab.training.strategy import Learner

# update(objective, loss, count) -> False to stop: ``objective``'s gradient is the window's, ``loss`` its mean
# loss over ``count`` targets. The Lightning path steps the optimizer; tests and cost measurements pass their own.
Update = Callable[[torch.Tensor, torch.Tensor, int], bool]


def rule_error(message: str) -> ConfigError:
    """A refusal of the learning rule, named as the user types it."""
    return ConfigError("training", message, full=True)


def window_loss(task: Learner, outputs: torch.Tensor, batch: dict, start: int) -> tuple[torch.Tensor, int] | None:
    """The task's mean loss over the targets of steps [start, start + L), and their count; None when there are none.

    outputs [B, L, C] are the model's outputs of those steps. Per-step targets are sliced like the outputs (with
    ``target_mask``, as ``SequenceTask.shared_step`` applies it); a sequence-level target counts in the window that
    holds its sequence's last valid step. Summing ``loss * count`` over windows gives the batch's loss * count.
    """
    steps = outputs.shape[1]
    lengths = batch["lengths"].to(outputs.device)
    if task.spec.per_step:
        targets = batch["targets"][:, start : start + steps]
        mask = batch.get("target_mask")
        mask = None if mask is None else mask[:, start : start + steps]
        if mask is not None and task.spec.kind == "classification":
            targets = targets.masked_fill(~mask, IGNORE_INDEX)
        loss, count = task.loss_and_count(outputs, targets, (lengths - start).clamp(0, steps), mask)
    else:
        last = lengths - 1 - start
        rows = (last >= 0) & (last < steps)
        if not bool(rows.any()):
            return None
        loss, count = task.loss_and_count(outputs[rows, last[rows]], batch["targets"][rows], lengths[rows])
    return None if count == 0 else (loss, count)


def detached(state):
    """A model state (tensor or tuple of them, or None) cut from the graph."""
    if isinstance(state, tuple):
        return tuple(detached(part) for part in state)
    return None if state is None else state.detach()


class ManualRule:
    """What every rule other than BPTT shares: the task checks and the strategy glue (manual optimization).

    Lightning refuses ``Trainer(gradient_clip_val=...)`` with manual optimization, so the task turns automatic
    optimization off at ``on_fit_start`` (after Lightning's check, :meth:`Learner.start_manual_optimization`) and
    each update clips with the Trainer's settings (:meth:`Learner.manual_update`), as the automatic path does.
    Schedulers are stepped as the automatic loop would: ``interval: step`` after every update, ``interval: epoch``
    at the end of the epoch (ReduceLROnPlateau reading its monitored metric).
    """

    name: str
    automatic = True  # until on_fit_start: Lightning checks clipping against automatic optimization first
    needs_predictions = False

    def __init__(self, settings: TrainingSettings, task: Learner):
        self.settings = settings
        spec = task.spec
        if spec.kind == "ctc":
            raise rule_error(f"{self.name} scores windows of steps; CTC needs whole sequences (bptt)")
        if not spec.per_step and task.pooling != "last":
            raise ConfigError(
                "pooling", f"{task.pooling} needs all steps before the loss; training={self.name} needs last"
            )
        self.check(task.model, task.regularization.regularizers)

    @classmethod
    def check(cls, model: nn.Module, regularizers: Mapping) -> None:
        """Refuse (``training``) a model or regularizers the rule cannot train: what is known before any data is
        read, so ``rnnlab-train`` checks it at start (``rnnlab.config_values``) on a model built for dummy sizes."""
        if getattr(model, "batch_keys", ()):
            raise rule_error(f"{cls.name} runs plain sequences; {type(model).__name__} reads extra batch keys")

    # ----- the rule: subclasses --------------------------------------------------------------------------------
    def run(self, task: Learner, batch: dict, update: Update) -> torch.Tensor | None:
        """Train on one batch, calling ``update`` once per window; returns the outputs [B, T, C] as computed along
        the way (detached), or None when ``update`` asked to stop."""
        raise NotImplementedError

    # ----- the strategy (rnnlab.training.strategy.TrainingStrategy) ----------------------------------------------
    def on_fit_start(self, task: Learner) -> None:
        task.start_manual_optimization(self.name)

    def training_step(self, task: Learner, batch: dict):
        def update(objective: torch.Tensor, loss: torch.Tensor, count: int) -> bool:
            penalty = task.penalty()  # of this window's forward (survey eqs. 54-55, 57)
            if penalty is not None:
                task.record("train", "penalty", penalty, count)
                objective = objective + penalty
            if not (torch.isfinite(loss) and torch.isfinite(objective)):
                task.stop_diverged()
                return False  # skip the update; the run ends with status "diverged"
            task.manual_update(objective)
            return True

        outputs = self.run(task, batch, update)
        if outputs is None:
            return None
        return task.shared_step(batch, "train", outputs=outputs)  # the same logging as BPTT, on these outputs

    def on_train_epoch_end(self, task: Learner) -> None:
        task.step_schedulers("epoch")
