"""Optimizers torch lacks, chosen as ``optimizer=<name>``: Hessian-free (:mod:`rnnlab.training.hessian_free`),
(decoupled) extended Kalman filter (:mod:`rnnlab.training.kalman`), CMA-ES and a genetic algorithm
(:mod:`rnnlab.training.evolutionary`). Here: what they share and the task's side of them.

They need more than the gradient of a scalar loss: Hessian-free multiplies by the loss's curvature through the model's
outputs, the Kalman filters need the Jacobian of every output, and the evolutionary searches set the weights and
compare losses. So their ``step`` takes a closure that returns a :class:`Prediction` — the model's outputs at the
current weights as rows that meet the targets, the targets, and the loss that joins them — and calls it as often as
it needs. They declare this with the class attribute ``needs_predictions``; the task then trains by manual
optimization with :class:`PredictionStrategy` (a training strategy, :mod:`rnnlab.training.strategy`), one optimizer
step per batch.

Supported losses: ``mse`` (regression data) and ``cross_entropy`` (classification data); other task kinds are refused
with a ConfigError naming ``optimizer``.

    rows N:  the batch's sequences (one target each), or its valid steps (per-step targets; padding, steps outside
             ``target_mask`` and class targets equal to IGNORE_INDEX dropped)
    mse:           L = 1/(N C) sum_{n,c} (z_nc - t_nc)^2            outputs z [N, C], targets t [N, C]
    cross_entropy: L = 1/N sum_n -log softmax(z_n)[t_n]             outputs z [N, C], targets t [N] class ids

Both are the task's own training loss (``SequenceTask.loss_and_count``) on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import nn

from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.errors import ConfigError
from rnnlab.models.base import valid_step_mask

if TYPE_CHECKING:
    from rnnlab.training.strategy import Learner

LOSS_FOR_KIND = {"regression": "mse", "classification": "cross_entropy"}


@dataclass
class Prediction:
    """A batch's outputs at the current weights, as rows that meet the targets.

    outputs: [N, C], a function of the parameters (autograd graph kept when grad mode is on)
    targets: [N, C] float (``mse``) or [N] long class ids (``cross_entropy``)
    loss:    ``mse`` or ``cross_entropy`` (module docstring)
    hidden:  the hidden states at the rows' valid steps [M, H], for structural damping (else None)
    """

    outputs: torch.Tensor
    targets: torch.Tensor
    loss: str
    hidden: torch.Tensor | None = None

    def value(self) -> torch.Tensor:
        """The mean loss L (scalar)."""
        if self.loss == "mse":
            return ((self.outputs - self.targets) ** 2).mean()
        return nn.functional.cross_entropy(self.outputs, self.targets)

    def loss_hessian_product(self, v: torch.Tensor) -> torch.Tensor:
        """H_L v with H_L = d^2 L / dz^2 [N C x N C], for v [N, C] (block diagonal over rows).

        mse: 2/(N C) v.   cross_entropy: (diag(p_n) - p_n p_n^T) v_n / N with p_n = softmax(z_n).
        """
        if self.loss == "mse":
            return v * (2.0 / self.outputs.numel())
        p = torch.softmax(self.outputs.detach(), dim=-1)
        return (p * v - p * (p * v).sum(-1, keepdim=True)) / self.outputs.shape[0]


Closure = Callable[[], Prediction]


class PredictionOptimizer(torch.optim.Optimizer):
    """Base: ``step(closure)`` with ``closure() -> Prediction``; parameters handled as one flat vector.

    ``stats`` holds the last step's diagnostics (floats), which the task logs as ``train/<name>``.
    """

    needs_predictions = True
    wants_hidden = False  # whether the closure must also return the hidden states

    def __init__(self, params: Iterable[torch.Tensor], defaults: dict):
        super().__init__(params, defaults)
        self.stats: dict[str, float] = {}

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def set_flat(self, vector: torch.Tensor) -> None:
        for p, piece in zip(self.params, vector.split([p.numel() for p in self.params])):
            p.copy_(piece.view_as(p))

    def flat_grad(self, outputs, grad_outputs=None, **kwargs) -> torch.Tensor:
        """d outputs / d params contracted with grad_outputs, flattened [n]; unused parameters give zeros."""
        grads = torch.autograd.grad(outputs, self.params, grad_outputs, allow_unused=True, **kwargs)
        return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(self.params, grads)])

    @torch.no_grad()
    def loss_at(self, weights: torch.Tensor, closure: Closure) -> float:
        """The batch loss with the parameters set to ``weights`` [n] (they stay set)."""
        self.set_flat(weights)
        return float(closure().value())


def needs_predictions(optimizer_factory) -> bool:
    """Whether the optimizer config (a class or a ``functools.partial`` of one) builds a PredictionOptimizer."""
    target = getattr(optimizer_factory, "func", optimizer_factory)
    return bool(getattr(target, "needs_predictions", False))


def check_prediction_optimizer(optimizer_factory, spec: TaskSpec, scheduler_factory=None, rule=None) -> bool:
    """True when ``optimizer_factory`` builds a :class:`PredictionOptimizer` that can train ``spec``'s data; raise
    ConfigError(``optimizer...``) for data it cannot train or a bad hyperparameter, and for a scheduler or a learning
    rule other than bptt (``rule``: the task's ``rnnlab.training.rules`` object, None for bptt)."""
    if not needs_predictions(optimizer_factory):
        return False
    name = getattr(optimizer_factory, "func", optimizer_factory).__name__
    if rule is not None:
        raise ConfigError(
            "training", f"{name} updates once per batch from the whole batch; use training=bptt", full=True
        )
    if spec.kind not in LOSS_FOR_KIND:
        raise ConfigError(
            "optimizer", f"{name} trains regression (MSE) and classification (cross-entropy) data; this data is "
            f"{spec.kind}. Supported: {', '.join(LOSS_FOR_KIND)}; use a gradient optimizer (adam, sgd, ...) for it"
        )
    if scheduler_factory is not None:
        raise ConfigError("scheduler", f"{name} has no learning rate to schedule; use scheduler=none")
    try:
        optimizer_factory(params=[torch.zeros(1, requires_grad=True)])  # checks the hyperparameters, allocates little
    except ConfigError as error:
        raise error.with_prefix("optimizer") from None
    return True


def batch_prediction(task: Learner, batch: dict, start_state, with_hidden: bool) -> Prediction:
    """The closure's body: the task's model on ``batch`` (stateful data from ``start_state``), as rows and targets."""
    spec = task.spec
    if spec.stateful:
        task.carried_state["train"] = start_state
    hidden = None
    if with_hidden:
        inputs = batch["inputs"] if task.embedding is None else task.embedding(batch["inputs"])
        layers, _ = task.model.run_layers(inputs, batch["lengths"], start_state if spec.stateful else None)
        outputs = task.model.readout(layers)
        hidden = layers[valid_step_mask(batch["lengths"], *layers.shape[:2], layers.device)]
    else:
        outputs = task.run_model(batch, "train")
    predictions = task.head(outputs, batch["lengths"])
    targets = batch["targets"]
    if spec.per_step:
        valid = valid_step_mask(batch["lengths"], *predictions.shape[:2], predictions.device)
        if batch.get("target_mask") is not None:
            valid = valid & batch["target_mask"]
        predictions, targets = predictions[valid], targets[valid]
    loss = LOSS_FOR_KIND[spec.kind]
    if loss == "cross_entropy":
        keep = targets != IGNORE_INDEX
        predictions, targets = predictions[keep], targets[keep]
    else:
        targets = targets.reshape(predictions.shape).to(predictions.dtype)
    return Prediction(predictions, targets, loss, hidden)


class PredictionStrategy:
    """The training strategy of a :class:`PredictionOptimizer`: manual optimization, one step per batch.

    Logs ``train/loss`` and the metrics at the weights before the step (as automatic optimization does), then lets
    the optimizer call the closure as often as it needs; its ``stats`` are logged as ``train/<name>``. The Lightning
    hooks around an optimizer step (``on_before_optimizer_step``) run after each closure call.
    """

    automatic = False
    needs_predictions = True

    def on_fit_start(self, task: Learner) -> None:
        pass

    def training_step(self, task: Learner, batch: dict) -> torch.Tensor | None:
        optimizer = task.optimizers()
        start_state = task.carried_state.get("train")
        with torch.no_grad():
            loss = task.shared_step(batch, "train")
        if not torch.isfinite(loss):
            task.stop_diverged()
            return None
        if task.penalty() is not None:
            raise ConfigError("regularizer", f"{type(optimizer.optimizer).__name__} minimises the data loss only; "
                              "penalties (l1, l2, norm_stabilizer) are not supported with it, hooks (dropout, ...) are")
        next_state = task.carried_state.get("train")
        with_hidden = optimizer.optimizer.wants_hidden
        readout = getattr(task.model, "readout", None)
        if with_hidden and not (hasattr(task.model, "run_layers") and isinstance(readout, nn.Module)):
            raise ConfigError("optimizer.structural_damping", "needs a model with run_layers and readout; set it to 0")
        optimizer.step(closure=lambda: batch_prediction(task, batch, start_state, with_hidden))
        if task.spec.stateful:
            task.carried_state["train"] = next_state
        for name, value in optimizer.optimizer.stats.items():
            task.log_step(f"train/{name}", float(value))
        return loss

    def on_train_epoch_end(self, task: Learner) -> None:
        pass
