"""Learning rules: how the gradient of a sequence's loss is computed and when the weights are updated.

The ``training`` group selects one, a file per rule (conf/training/<rule>.yaml; ``training=tbptt training.k1=5``):

* ``bptt`` -- backpropagation through time over the whole batch, one update per batch (Werbos 1990; survey III.A).
  The task's automatic optimization (:class:`rnnlab.training.strategy.BPTT`); no rule object here.
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

Here: each rule's settings, the ``_target_`` of its file, which makes the rule. The rules:
:mod:`rnnlab.training.tbptt` and :mod:`rnnlab.training.sensitivity_rules` (rtrl, gf, bu), on the base
:class:`rnnlab.training.manual.ManualRule`; each is a training strategy (:mod:`rnnlab.training.strategy`) and sees
the task as a ``Learner``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

from rnnlab.errors import ConfigError
from rnnlab.training.manual import ManualRule
from rnnlab.training.sensitivity_rules import RTRL, BlockUpdate, GreensFunction
from rnnlab.training.tbptt import TBPTT

if TYPE_CHECKING:
    from rnnlab.training.strategy import Learner


@dataclass(frozen=True)
class TrainingSettings:
    """``training=bptt`` (conf/training/bptt.yaml), which has no settings, and the base of every rule's settings.

    Each rule's file in conf/training names its settings class as ``_target_``; the class validates its keys
    (ConfigError names the key relative to the group: ``k1``) and makes the rule for a task (:meth:`make_rule`).
    """

    rule: ClassVar[str] = "bptt"  # the rule's name in records, reports and messages
    rule_class: ClassVar[type[ManualRule] | None] = None  # None: the task's automatic optimization

    def __post_init__(self):
        for setting in fields(self):
            value = getattr(self, setting.name)
            if value is None and setting.default is None:
                continue  # an optional setting left to its rule (k2: k1, block: hidden_size)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(setting.name, f"must be a positive integer, got {value!r}")

    def make_rule(self, task: Learner) -> ManualRule | None:
        """The rule object for ``task``, or None for BPTT (automatic optimization, :class:`~.strategy.BPTT`)."""
        return None if self.rule_class is None else self.rule_class(self, task)


@dataclass(frozen=True)
class TBPTTSettings(TrainingSettings):
    """``training=tbptt``: an update every ``k1`` steps, backpropagated over the last ``k2`` >= k1 (null: k1)."""

    rule: ClassVar[str] = "tbptt"
    rule_class: ClassVar[type[ManualRule]] = TBPTT
    k1: int = 10
    k2: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.k2 is not None and self.k2 < self.k1:
            raise ConfigError("k2", f"must be >= k1={self.k1} (reach over the scored steps), got {self.k2}")


@dataclass(frozen=True)
class RTRLSettings(TrainingSettings):
    """``training=rtrl``: an update every ``update_every`` steps."""

    rule: ClassVar[str] = "rtrl"
    rule_class: ClassVar[type[ManualRule]] = RTRL
    update_every: int = 1


@dataclass(frozen=True)
class GreensFunctionSettings(RTRLSettings):
    """``training=gf``: RTRL's gradients by Green's functions, an update every ``update_every`` steps."""

    rule: ClassVar[str] = "gf"
    rule_class: ClassVar[type[ManualRule]] = GreensFunction


@dataclass(frozen=True)
class BlockUpdateSettings(TrainingSettings):
    """``training=bu``: blocks of ``block`` steps (null: the model's hidden_size, Schmidhuber's choice), an update
    per block."""

    rule: ClassVar[str] = "bu"
    rule_class: ClassVar[type[ManualRule]] = BlockUpdate
    block: int | None = None


SETTINGS_OF_RULE: dict[str, type[TrainingSettings]] = {
    settings.rule: settings
    for settings in (TrainingSettings, TBPTTSettings, RTRLSettings, BlockUpdateSettings, GreensFunctionSettings)
}
RULES = tuple(SETTINGS_OF_RULE)  # the rules' names, in the survey's order (conf/training has a file for each)
RULE_OF_TARGET = {f"{settings.__module__}.{settings.__qualname__}": rule for rule, settings in SETTINGS_OF_RULE.items()}
"""A record's ``config.training._target_`` -> its rule's name (:func:`rnnlab.report.collect.training_rule`)."""
