"""Learning rules: how the gradient of a sequence's loss is computed and when the weights are updated.

``training.rule`` selects one (conf/training/default.yaml):

* ``bptt`` -- backpropagation through time over the whole batch, one update per batch (Werbos 1990; survey III.A).
  :class:`rnnlab.tasks.sequence.SequenceTask`'s automatic optimization; no rule object here.
* ``tbptt`` -- truncated BPTT(k2; k1) (Williams & Peng 1990; survey III): every ``k1`` steps an update of the loss
  of those k1 steps, backpropagated over the last ``k2`` >= k1 steps. The state carries from chunk to chunk within a
  batch (across batches too for stateful data), cut from the graph ``k2`` steps back.
* ``rtrl`` -- real-time recurrent learning (Williams & Zipser 1989): the sensitivities ds_t/dtheta are carried
  forward (:mod:`rnnlab.training.rtrl`), so each step's loss gradient is known at that step; an update every
  ``update_every`` steps. O(N^4) time per step and O(N^3) memory for N units; Elman and LSTM only.
* ``bu`` -- block update, Schmidhuber's (1992) O(N^3) BPTT/RTRL hybrid: blocks of ``block`` steps (default N) of
  BPTT, and the sensitivity at each block's start carried RTRL-style across block boundaries; an update every block.
* ``gf`` -- the Green's function method (Sun, Chen & Lee 1992): RTRL's gradients, with Q_t factored as G_t R_t (an
  N x N product of Jacobians and an O(N^3) sum), O(N^3) per step; an update every ``update_every`` steps. Elman
  (not relu) and LSTM only; G_t grows ill-conditioned within about ten steps (:class:`GreensFunction`).

Every manual rule splits a batch into *windows* (k1, update_every or block steps): the loss of a window is the
task's loss (``SequenceTask.loss_and_count``) over the targets whose steps lie in it, averaged over those targets, and
each window is one optimizer update, clipped like the automatic path (``trainer.gradient_clip_val``). With one window
per sequence (k1 = k2 = T, update_every >= T, block >= T) the update equals BPTT's. Sequence-level targets are scored
at their last valid step (``task.pooling: last``); ``pooling: mean`` and CTC need the whole sequence and are refused.
``trainer.global_step`` (and ``max_steps``) counts updates, several per batch. Loss penalties of the ``regularizer``
group join every update; tbptt runs the model's own forward, so regularizers inside the recurrence act as in BPTT,
while rtrl, bu and gf run their own recurrence and accept only the weight penalties (l1, l2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Callable, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rnnlab.data.base import IGNORE_INDEX
from rnnlab.errors import ConfigError, require_choice
from rnnlab.models.base import valid_step_mask
from rnnlab.training.regularizers import L1, L2
from rnnlab.training.rtrl import RecurrentSensitivity, check_supported

log = logging.getLogger(__name__)

RULES = ("bptt", "tbptt", "rtrl", "bu", "gf")

# update(objective, loss, count) -> False to stop: ``objective``'s gradient is the window's, ``loss`` its mean
# loss over ``count`` targets. The Lightning path steps the optimizer; tests and cost measurements pass their own.
Update = Callable[[torch.Tensor, torch.Tensor, int], bool]


@dataclass(frozen=True)
class TrainingSettings:
    """The ``training`` config group. ``k2: null`` means k2 = k1; ``block: null`` means the model's hidden_size."""

    rule: str = "bptt"
    k1: int = 10
    k2: int | None = None
    update_every: int = 1
    block: int | None = None

    @classmethod
    def from_config(cls, config: Mapping | DictConfig | None) -> "TrainingSettings":
        """Validated settings; ConfigError names the key relative to the group (``rule``, ``k1``)."""
        if config is None:
            return cls()
        values = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)
        allowed = [field.name for field in fields(cls)]
        for key in values:
            if key not in allowed:
                raise ConfigError(str(key), f"unknown key; allowed: {', '.join(allowed)}")
        settings = cls(**values)
        require_choice("rule", settings.rule, RULES)
        for key in ("k1", "update_every", "k2", "block"):
            value = getattr(settings, key)
            if value is None and key in ("k2", "block"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(key, f"must be a positive integer, got {value!r}")
        if settings.k2 is not None and settings.k2 < settings.k1:
            raise ConfigError("k2", f"must be >= k1={settings.k1} (reach over the scored steps), got {settings.k2}")
        return settings


def make_rule(training: Mapping | DictConfig | None, task) -> "ManualRule | None":
    """The rule object for ``task`` (a SequenceTask), or None for ``bptt`` (automatic optimization).

    ConfigError keys are relative to the task group (``pooling``), except those of the ``training`` group, which the
    task reads through an interpolation: they name the key the user types (``training.rule``, ``full=True``).
    """
    try:
        settings = TrainingSettings.from_config(training)
    except ConfigError as error:
        raise ConfigError(f"training.{error.key}", error.message, full=True) from None
    if settings.rule == "bptt":
        return None
    return RULE_CLASSES[settings.rule](settings, task)


def rule_error(message: str) -> ConfigError:
    """A refusal of the learning rule, named as the user types it."""
    return ConfigError("training.rule", message, full=True)


def window_loss(task, outputs: torch.Tensor, batch: dict, start: int) -> tuple[torch.Tensor, int] | None:
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
    """What every rule other than BPTT shares: the task checks and the Lightning glue (manual optimization).

    Lightning refuses ``Trainer(gradient_clip_val=...)`` with manual optimization, so the task turns automatic
    optimization off at ``on_fit_start`` (after Lightning's check) and each update clips with the Trainer's settings
    through ``configure_gradient_clipping``, the hook the automatic path calls. Schedulers are stepped here as the
    automatic loop would: ``interval: step`` after every update, ``interval: epoch`` at the end of the epoch
    (ReduceLROnPlateau reading its monitored metric).
    """

    name: str

    def __init__(self, settings: TrainingSettings, task):
        self.settings = settings
        spec = task.spec
        if spec.kind == "ctc":
            raise rule_error(f"{self.name} scores windows of steps; CTC needs whole sequences (bptt)")
        if not spec.per_step and task.pooling != "last":
            raise ConfigError(
                "pooling", f"{task.pooling} needs all steps before the loss; training.rule={self.name} needs last"
            )
        self.check(task.model, task.regularization.regularizers)

    @classmethod
    def check(cls, model: nn.Module, regularizers: Mapping) -> None:
        """Refuse (``training.rule``) a model or regularizers the rule cannot train: what is known before any data is
        read, so ``rnnlab-train`` checks it at start (``rnnlab.config_check``) on a model built for dummy sizes."""
        if getattr(model, "batch_keys", ()):
            raise rule_error(f"{cls.name} runs plain sequences; {type(model).__name__} reads extra batch keys")

    # ----- the rule: subclasses --------------------------------------------------------------------------------
    def run(self, task, batch: dict, update: Update) -> torch.Tensor | None:
        """Train on one batch, calling ``update`` once per window; returns the outputs [B, T, C] as computed along
        the way (detached), or None when ``update`` asked to stop."""
        raise NotImplementedError

    # ----- Lightning glue -----------------------------------------------------------------------------------------
    def on_fit_start(self, task) -> None:
        trainer = task.trainer
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError("trainer.accumulate_grad_batches", f"must be 1 with training.rule={self.name}")
        if getattr(trainer.precision_plugin, "scaler", None) is not None and trainer.gradient_clip_val:
            raise ConfigError("trainer.precision", f"fp16 with clipping is not supported by training.rule={self.name}")
        task.automatic_optimization = False

    def training_step(self, task, batch: dict):
        optimizer = task.optimizers()
        trainer = task.trainer

        def update(objective: torch.Tensor, loss: torch.Tensor, count: int) -> bool:
            penalty = task.regularization.penalty(task)  # of this window's forward (survey eqs. 54-55, 57)
            if penalty is not None:
                task.record("train", "penalty", penalty, count)
                objective = objective + penalty
            if not (torch.isfinite(loss) and torch.isfinite(objective)):
                task.diverged_at_step = task.global_step
                trainer.should_stop = True
                return False  # skip the update; the run ends with status "diverged"
            optimizer.zero_grad()
            task.manual_backward(objective)
            task.configure_gradient_clipping(optimizer, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)
            optimizer.step()
            step_schedulers(task, "step")
            return True

        outputs = self.run(task, batch, update)
        if outputs is None:
            return None
        return task.shared_step(batch, "train", outputs=outputs)  # the same logging as BPTT, on these outputs

    def on_train_epoch_end(self, task) -> None:
        step_schedulers(task, "epoch")


def step_schedulers(task, interval: str) -> None:
    """Step the schedulers of ``interval`` as Lightning's automatic loop does (frequency, plateau monitor)."""
    trainer = task.trainer
    for config in trainer.lr_scheduler_configs:
        if config.interval != interval:
            continue
        index = trainer.global_step if interval == "step" else trainer.current_epoch + 1
        if index % config.frequency:
            continue
        metric = None
        if config.reduce_on_plateau:
            metric = trainer.callback_metrics.get(config.monitor)
            if metric is None:
                log.warning("scheduler monitors %s, which is not available; learning rate unchanged", config.monitor)
                continue
        task.lr_scheduler_step(config.scheduler, metric)


class TBPTT(ManualRule):
    """Truncated BPTT(k2; k1) (Williams & Peng 1990): an update every k1 steps, backpropagated k2 steps back.

    The update at step e scores steps [e - k1, e) and backpropagates to max(0, e - k2): it re-runs the network from
    the (detached) state at e - k2 with the current weights, so the gradient is exactly that of the truncated graph
    at those weights. With k2 = k1 each step runs forward once (chunked BPTT); with k2 > k1 about k2 / k1 times.
    The last window of a batch may be shorter. Any model whose ``forward(x, lengths, state)`` carries ``state``
    works; sequences that ended before a chunk read one padding step there, which no loss sees.
    """

    name = "tbptt"

    def __init__(self, settings, task):
        super().__init__(settings, task)
        self.k1 = settings.k1
        self.k2 = settings.k2 or settings.k1

    @classmethod
    def check(cls, model, regularizers):
        super().check(model, regularizers)
        if getattr(model, "num_directions", 1) > 1 or getattr(model, "bidirectional", False):
            raise rule_error(f"tbptt runs forward in time; a bidirectional model ({type(model).__name__}) reads the "
                             "future")

    def forward(self, task, batch: dict, start: int, stop: int, state):
        """The model on steps [start, stop) from ``state``: outputs [B, stop - start, C] and the state at ``stop``."""
        inputs = batch["inputs"][:, start:stop]
        if task.embedding is not None:
            inputs = task.embedding(inputs)  # embedded per chunk: each update's graph is its own
        lengths = (batch["lengths"] - start).clamp(1, stop - start)
        return task.model(inputs, lengths, state=state)

    def run(self, task, batch, update):
        steps = batch["inputs"].shape[1]
        stateful = task.spec.stateful
        state = task.carried_state.get("train") if stateful else None  # the state at window start (detached)
        start, scored_from, collected = 0, 0, []
        while scored_from < steps:
            stop = min(scored_from + self.k1, steps)
            # the next window backpropagates from next_start (in [start, stop]): keep the state there
            next_start = max(0, min(stop + self.k1, steps) - self.k2) if stop < steps else stop
            parts, middle = [], state
            if next_start > start:
                outputs, middle = self.forward(task, batch, start, next_start, state)
                parts.append(outputs)
            final = middle
            if stop > next_start:
                outputs, final = self.forward(task, batch, next_start, stop, middle)
                parts.append(outputs)
            window = torch.cat(parts, dim=1)[:, scored_from - start :]
            scored = window_loss(task, window, batch, scored_from)
            if scored is not None and not update(scored[0], scored[0], scored[1]):
                return None
            collected.append(window.detach())
            state, start, scored_from = detached(middle), next_start, stop
        if stateful:
            task.carried_state["train"] = detached(final)
        return torch.cat(collected, dim=1)


class _SensitivityRule(ManualRule):
    """Shared by RTRL, GF and BU: the model's sensitivities, and their carry across batches of stateful data."""

    def __init__(self, settings, task):
        super().__init__(settings, task)
        if task.embedding is not None:
            raise rule_error(f"{self.name} cannot train embeddings of token inputs (use bptt, tbptt)")
        self.sensitivity = RecurrentSensitivity(task.model, self.name)
        self.carried_sensitivity: torch.Tensor | None = None

    @classmethod
    def check(cls, model, regularizers):
        super().check(model, regularizers)
        inside = [name for name, r in regularizers.items() if not isinstance(r, (L1, L2))]
        if inside:
            raise rule_error(
                f"{cls.name} runs its own recurrence, which regularizer {', '.join(inside)} cannot reach; use l1, l2 "
                "or training.rule=bptt, tbptt"
            )
        check_supported(model, cls.name)

    def start(self, task, inputs: torch.Tensor):
        """Initial (state, sensitivity [B, S, P]): zeros, or what the previous batch of a stateful stream left."""
        batch = inputs.shape[0]
        state, sensitivity = self.sensitivity.initial(batch, inputs)
        carried = task.carried_state.get("train") if task.spec.stateful else None
        if carried is not None:
            state = self.sensitivity.from_model_state(carried)
            if self.carried_sensitivity is not None and self.carried_sensitivity.shape == sensitivity.shape:
                sensitivity = self.carried_sensitivity
        return state, sensitivity

    def finish(self, task, state, sensitivity) -> None:
        if task.spec.stateful:
            task.carried_state["train"] = self.sensitivity.to_model_state(detached(state))
            self.carried_sensitivity = sensitivity


class RTRL(_SensitivityRule):
    """Real-time recurrent learning (Williams & Zipser 1989), exact for the weights in effect at each step.

    Each step updates Q_t = ds_t/dtheta (:meth:`RecurrentSensitivity.step`) and adds (dl_t/dh_t) Q_t of the step's
    loss l_t; every ``update_every`` steps the window's mean loss is the objective: its readout gradient by autograd,
    its recurrent gradient the accumulated sum (divided by the window's target count). What is carried from step to
    step is Q_t here; :class:`GreensFunction` carries another form of it through the same loop (the hooks below).
    """

    name = "rtrl"

    def begin(self, sensitivity: torch.Tensor):
        """What the rule carries from step to step, from Q_0 [B, S, P]."""
        return sensitivity

    def advance(self, x: torch.Tensor, keep: torch.Tensor, state, carried):
        """One step of the network and of what is carried: returns (state, carried)."""
        return self.sensitivity.step(x, keep, state, carried)

    def loss_gradient(self, grad_h: torch.Tensor, carried) -> torch.Tensor:
        """(dl_t/dh_t) Q_t [P], summed over the batch, for grad_h = dl_t/dh_t [B, N]."""
        return torch.einsum("bn,bnp->p", grad_h, carried[:, : self.sensitivity.hidden])

    def sensitivity_of(self, carried) -> torch.Tensor:
        """Q_t [B, S, P], carried to the next batch of a stateful stream."""
        return carried

    def run(self, task, batch, update):
        inputs, lengths = batch["inputs"], batch["lengths"]
        batch_size, steps = inputs.shape[:2]
        keep = valid_step_mask(lengths, batch_size, steps, inputs.device)
        state, sensitivity = self.start(task, inputs)
        carried = self.begin(sensitivity)
        readout = task.model.readout
        accumulated = inputs.new_zeros(self.sensitivity.num_parameters)  # sum_t (dl_t/dh_t) Q_t over the window
        emitted, collected, window_start = [], [], 0
        for t in range(steps):
            state, carried = self.advance(inputs[:, t], keep[:, t], state, carried)
            h = torch.where(keep[:, t, None], state[0], 0.0).requires_grad_()  # what the network emits at step t
            emitted.append(h)
            scored = window_loss(task, readout(h).unsqueeze(1), batch, t)
            if scored is not None:
                (grad_h,) = torch.autograd.grad(scored[0] * scored[1], h)
                accumulated += self.loss_gradient(grad_h, carried)
            if t + 1 - window_start < self.settings.update_every and t < steps - 1:
                continue
            outputs = readout(torch.stack(emitted, dim=1))
            scored = window_loss(task, outputs, batch, window_start)
            if scored is not None:
                loss, count = scored
                objective = loss + (self.sensitivity.flat_parameters() * accumulated).sum() / count
                if not update(objective, loss, count):
                    return None
            collected.append(outputs.detach())
            emitted, window_start = [], t + 1
            accumulated.zero_()
        self.finish(task, state, self.sensitivity_of(carried) if task.spec.stateful else None)
        return torch.cat(collected, dim=1)


class GreensFunction(RTRL):
    """The Green's function method (Sun, Chen & Lee 1992): RTRL's online gradient at O(N^3) per step instead of O(N^4).

    With J_t = ds_t/ds_{t-1} and b_t = ds_t/dtheta|_{s_{t-1} fixed}, RTRL's Q_t = J_t Q_{t-1} + b_t is
    Q_t = G(t, 0) Q_0 + sum_{s<=t} G(t, s) b_s with the Green's function G(t, s) = J_t ... J_{s+1}. GF carries

        G_t = J_t G_{t-1},    R_t = R_{t-1} + G_t^{-1} b_t,    G_0 = I,  R_0 = Q_0,    so that Q_t = G_t R_t,

    and the gradient of a step's loss l_t is ((dl_t/ds_t) G_t) R_t, an S-vector times the S x P matrix R_t; Q_t is
    never formed. G_t^{-1} b_t is one linear solve against A_t = ds_t/dz_t and an outer product with the inputs of the
    weights (:meth:`RecurrentSensitivity.green_step`). Time per step and sequence, for S = N (Elman) or 2N (LSTM)
    state entries and P = O(N^2) weights: J_t and A_t written out O(S G N^2), the product J_t G_{t-1} and the solve
    O(S^3), R_t and the gradient O(S P): O(N^3). Storage: R_t, O(N^3), like RTRL's Q_t. Updates every
    ``update_every`` steps as RTRL, and the gradients are RTRL's (to rounding), also across updates. A stateful stream
    carries Q_T = G_T R_T to the next batch (one O(N^4) product per batch), which restarts G at I.

    GF needs every J_t invertible: a relu unit at zero has slope 0 and makes J_t singular, so Elman relu (irnn) is
    refused. It is also ill-conditioned over long sequences, a known weakness of the method: when the J_t are
    contractive (the vanishing gradient), G_t's smallest singular values shrink geometrically with t, G_t^{-1} b_t
    grows as fast, and Q_t = G_t R_t is recovered by cancellation, losing about log10 cond(G_t) digits. On small
    random networks cond(G_t) grows 20-30-fold per step: an 8-unit tanh Elman network's relative gradient error is
    ~1e-11 over 8 steps in float64 but ~3e-3 in float32, and of order 1 over 12 steps in float32. LSTM is worse:
    while c is small, h_t = o_t tanh(c_t) makes the h-rows of J_t nearly a rescaling of its c-rows, so J_t itself is
    close to singular (8 units, float64: errors of 5-30% after 6 steps). Nothing is done about it here beyond the
    restart at batch boundaries of stateful streams: use short sequences in float64 (the tests: 6 steps), or rtrl /
    bu, whose recursions are stable. When G_t is singular to working precision (float32 Elman networks on 20-step
    sequences reach it) the gradient is NaN: the update is skipped and the run ends "diverged".
    """

    name = "gf"

    @classmethod
    def check(cls, model, regularizers):
        super().check(model, regularizers)
        if getattr(model, "activation", None) == "relu":
            raise rule_error("gf inverts ds_t/ds_{t-1}, which relu units at zero make singular; use rtrl or bu for "
                             "activation=relu")

    def begin(self, sensitivity):
        batch, size = sensitivity.shape[:2]
        identity = torch.eye(size, dtype=sensitivity.dtype, device=sensitivity.device)
        return identity.expand(batch, size, size), sensitivity.clone()  # (G_0, R_0); R is updated in place

    def advance(self, x, keep, state, carried):
        green, weighted = carried
        state, green = self.sensitivity.green_step(x, keep, state, green, weighted)
        return state, (green, weighted)

    def loss_gradient(self, grad_h, carried):
        green, weighted = carried
        along = torch.einsum("bn,bns->bs", grad_h, green[:, : self.sensitivity.hidden])  # (dl_t/ds_t) G_t
        return torch.einsum("bs,bsp->p", along, weighted)

    def sensitivity_of(self, carried):
        green, weighted = carried
        return torch.bmm(green, weighted)


class BlockUpdate(_SensitivityRule):
    """Block update: the O(N^3) BPTT/RTRL hybrid (Schmidhuber 1992), blocks of h steps, an update per block.

    Within a block BPTT gives the gradient of the block's loss through the block, and dL/ds_start at its start; the
    carried Q_start = ds_start/dtheta adds (dL/ds_start) Q_start, the part through all earlier blocks. At the block
    end Q_end = (ds_end/ds_start) Q_start + ds_end/dtheta|_{s_start} from S backward passes through the block
    (:meth:`RecurrentSensitivity.block_jacobians`): O(h N^3 + N^4) per block, O(N^3) per step for h = N.
    """

    name = "bu"

    def run(self, task, batch, update):
        inputs, lengths = batch["inputs"], batch["lengths"]
        batch_size, steps = inputs.shape[:2]
        keep = valid_step_mask(lengths, batch_size, steps, inputs.device)
        sens = self.sensitivity
        block = self.settings.block or sens.hidden
        state, sensitivity = self.start(task, inputs)
        collected = []
        for begin in range(0, steps, block):
            end = min(begin + block, steps)
            x, valid = inputs[:, begin:end], keep[:, begin:end]
            start = sens.flat_state(state).detach().requires_grad_()
            hs, final = sens.run_block(x, valid, sens.split_state(start))
            outputs = task.model.readout(hs)
            # the block's Jacobians at the weights it ran with, before this block's update changes them
            d_state, d_theta = sens.block_jacobians(x, valid, state)
            scored = window_loss(task, outputs, batch, begin)
            if scored is not None:
                loss, count = scored
                (grad_start,) = torch.autograd.grad(loss, start, retain_graph=True)
                earlier = torch.einsum("bs,bsp->p", grad_start, sensitivity)  # through the blocks before
                objective = loss + (sens.flat_parameters() * earlier).sum()
                if not update(objective, loss, count):
                    return None
            sensitivity = torch.baddbmm(d_theta, d_state, sensitivity)
            state = detached(final)
            collected.append(outputs.detach())
        self.finish(task, state, sensitivity)
        return torch.cat(collected, dim=1)


RULE_CLASSES: dict[str, type[ManualRule]] = {"tbptt": TBPTT, "rtrl": RTRL, "bu": BlockUpdate, "gf": GreensFunction}
