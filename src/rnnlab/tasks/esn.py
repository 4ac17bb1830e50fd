"""The echo state task: fit a network's linear readout in closed form by ridge regression (Lukosevicius 2012).

One pass over the training set collects the readout's inputs (the last layer's states, pooled like the
:class:`SequenceTask` head) and the targets as the sufficient statistics X^T X and X^T Y; the readout is then

    [W_out ; b_out] = (X^T X + lambda I)^-1 X^T Y,    X = [features, 1]  (n x (F + 1)),  Y (n x C)

(ridge regression; lambda = ``ridge`` also shrinks the bias, as in Lukosevicius 2012; lambda = 0 takes the
pseudo-inverse, Jaeger 2001). Classification targets become one-hot rows, so the readout regresses the class
indicators and its outputs are read as logits by the usual cross-entropy / accuracy. Validation and test are those of
:class:`SequenceTask`.

Training runs through the ordinary Trainer with no optimizer steps (manual optimization, ``configure_optimizers``
returns None): ``training_step`` accumulates, the solve happens before the first validation after the pass (or at
the end of the epoch when there is no validation), and training stops after that epoch, so any
``trainer.max_epochs >= 1`` gives the same readout. ``steps`` in the run record is 0 and no checkpoint is written
(Lightning checkpoints after optimizer steps); the test uses the fitted readout.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.errors import ConfigError
from rnnlab.models.base import valid_step_mask
from rnnlab.tasks.sequence import SequenceTask, detach_state


class EchoStateTask(SequenceTask):
    """:class:`SequenceTask` whose training fits ``model.readout`` (an ``nn.Linear``) by ridge regression on the
    features from ``model.run_layers``; every other weight stays as initialised (an echo state network's reservoir).

    ``optimizer`` and ``scheduler`` are accepted for the common constructor and unused. Token inputs pass through
    the task's embedding, which stays random like the reservoir; stateful data carries the reservoir state across
    training batches as in :class:`SequenceTask`. Per-step regression targets respect ``target_mask``; CTC targets
    have no closed-form readout and are refused.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: TaskSpec,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
        embedding_dim: int = 128,
        ridge: float = 1e-4,
    ):
        super().__init__(model, spec, optimizer, scheduler, pooling, embedding_dim)
        if spec.kind == "ctc":
            raise ConfigError("_target_", "a CTC readout has no closed form; train this data with task=sequence")
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or ridge < 0:
            raise ConfigError("ridge", f"must be a number >= 0, got {ridge!r}")
        readout = getattr(model, "readout", None)
        if not isinstance(readout, nn.Linear) or readout.bias is None:
            raise ConfigError(
                "_target_", "EchoStateTask needs a model with `run_layers` and an nn.Linear `readout` with bias"
            )
        self.ridge = float(ridge)
        self.automatic_optimization = False
        self.gram: torch.Tensor | None = None  # X^T X, float64 [F + 1, F + 1]
        self.cross: torch.Tensor | None = None  # X^T Y, float64 [F + 1, C]
        self.pending = False  # statistics collected since the last solve

    def features_and_targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The readout's inputs and targets as rows: features [n, F] and targets [n, C] (one-hot for classes).

        n is the batch size for sequence targets (features pooled by ``head``), the number of valid steps (with a
        target) for per-step targets.
        """
        inputs = batch["inputs"] if self.embedding is None else self.embedding(batch["inputs"])
        state = self.carried_state.get("train") if self.spec.stateful else None
        hidden, state = self.model.run_layers(inputs, batch["lengths"], state)
        if self.spec.stateful:
            self.carried_state["train"] = detach_state(state)
        features = self.head(hidden, batch["lengths"])
        targets = batch["targets"]
        if self.spec.per_step:
            keep = valid_step_mask(batch["lengths"], *hidden.shape[:2], hidden.device)
            if "target_mask" in batch:
                keep = keep & batch["target_mask"]
            features, targets = features[keep], targets[keep]
        if self.spec.kind == "classification":
            keep = targets != IGNORE_INDEX
            features = features[keep]
            targets = nn.functional.one_hot(targets[keep], self.model.readout.out_features)
        return features, targets.reshape(features.shape[0], -1)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.gram = self.cross = None
        self.pending = False

    def training_step(self, batch, batch_idx):
        with torch.no_grad():
            features, targets = self.features_and_targets(batch)
        x = torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1).double()
        gram, cross = x.T @ x, x.T @ targets.double()
        self.gram = gram if self.gram is None else self.gram + gram
        self.cross = cross if self.cross is None else self.cross + cross
        self.pending = True

    def fit_readout(self) -> None:
        """Solve the ridge system on the statistics gathered so far (all ranks) and write the readout."""
        if not self.pending:
            return
        gram = self.trainer.strategy.reduce(self.gram, reduce_op="sum")
        cross = self.trainer.strategy.reduce(self.cross, reduce_op="sum")
        if self.ridge > 0:
            identity = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
            solution = torch.linalg.solve(gram + self.ridge * identity, cross)
        else:
            solution = torch.linalg.pinv(gram, hermitian=True) @ cross
        self.pending = False
        if not torch.isfinite(solution).all():
            self.diverged_at_step = self.global_step
            self.trainer.should_stop = True
            return
        with torch.no_grad():
            self.model.readout.weight.copy_(solution[:-1].T)
            self.model.readout.bias.copy_(solution[-1])

    def on_validation_start(self):
        self.fit_readout()  # Lightning validates before on_train_epoch_end: solve first

    def on_train_epoch_end(self):
        self.fit_readout()
        self.trainer.should_stop = True  # one pass determines the readout

    def configure_optimizers(self):
        return None
