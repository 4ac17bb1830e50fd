"""Learning rules: how the gradient of a sequence's loss is computed and when the weights are updated.

``training.rule`` selects one (conf/training/default.yaml):

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

Here: the settings and the factory. The rules: :mod:`rnnlab.training.tbptt` and
:mod:`rnnlab.training.sensitivity_rules` (rtrl, gf, bu), on the base :class:`rnnlab.training.manual.ManualRule`; each
is a training strategy (:mod:`rnnlab.training.strategy`) and sees the task as a ``Learner``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Mapping

from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError, require_choice
from rnnlab.training.manual import ManualRule
from rnnlab.training.sensitivity_rules import RTRL, BlockUpdate, GreensFunction
from rnnlab.training.tbptt import TBPTT

if TYPE_CHECKING:
    from rnnlab.training.strategy import Learner

RULES = ("bptt", "tbptt", "rtrl", "bu", "gf")


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


def make_rule(training: Mapping | DictConfig | None, task: Learner) -> ManualRule | None:
    """The rule object for ``task``, or None for ``bptt`` (automatic optimization, :class:`~.strategy.BPTT`).

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


RULE_CLASSES: dict[str, type[ManualRule]] = {"tbptt": TBPTT, "rtrl": RTRL, "bu": BlockUpdate, "gf": GreensFunction}
