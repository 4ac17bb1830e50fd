"""Regularizers of recurrent networks, composed from config: ``regularizer=[l2,zoneout]`` selects several options of
the ``regularizer`` group, each with its own keys (``regularizer.l2.weight=1e-4``); the resolved config records them.

Kinds, by how they reach the model (``SequenceTask`` attaches them once, at construction, through
:class:`Regularization`):

* loss penalties, added to the training loss (``train/loss`` stays the data loss; ``train/penalty`` is logged):
  :class:`L1`, :class:`L2` (survey eqs. 54-55), :class:`NormStabilizer` (eq. 57);
* inside the recurrence, through the network's :class:`~rnnlab.models.base.RecurrenceHook`: :class:`Dropout`
  (non-recurrent connections), :class:`RNNDrop`, :class:`Variational`, :class:`Zoneout` (eq. 58) and the hidden states
  that :class:`NormStabilizer` reads. A network with one of these runs its hand-written cells, never a fused
  cuDNN / ``nn.LSTM`` kernel (``implementation: auto`` switches by itself; ``fused`` raises ConfigError);
* on the weights, through ``torch.nn.utils.parametrize``: :class:`WeightDrop` (DropConnect), which keeps the fused
  kernel.

Which models host which (``tests/training/test_regularizers.py`` builds every ``conf/model`` with each):
l1 and l2 work with every model; weight_drop with every model that has parameters matching its ``weights`` patterns
(by default the fused families' ``weight_hh`` and the ``recurrent`` matrices most other families name so; see
:class:`WeightDrop`); dropout, rnndrop, variational, zoneout and norm_stabilizer with every ``RecurrentNetwork``
family (elman, lstm, gru and their presets, stacked and bidirectional, and the rest of the zoo built on it) and
raise ConfigError for models that are not (hsrnn and models with their own loops: multidimensional, convolutional,
tree and memory models). rnndrop, variational and zoneout also need a cell that steps through
``RecurrentCell.step`` (checked at the first forward). Every regularizer except zoneout is off at eval time.

The classes live in :mod:`rnnlab.training.weight_regularizers` (the interface, l1, l2, weight_drop) and
:mod:`rnnlab.training.recurrence_regularizers` (the hook regularizers); here: :class:`Regularization`, and the names
the config group's ``_target_``s use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from rnnlab.errors import ConfigError
from rnnlab.training.recurrence_regularizers import (
    Dropout,
    NormStabilizer,
    RNNDrop,
    Variational,
    Zoneout,
    _HookChain,
    _HookRegularizer,
)
from rnnlab.training.weight_regularizers import L1, L2, Regularizer, WeightDrop

# the config group's classes (conf/regularizer/*.yaml ``_target_: rnnlab.training.regularizers.<name>``)
__all__ = [
    "L1", "L2", "WeightDrop", "Dropout", "RNNDrop", "Variational", "Zoneout", "NormStabilizer", "Regularizer",
    "Regularization",
]


class Regularization:
    """The regularizers of one run, attached to its model: what ``SequenceTask`` holds.

    ``regularizers``: name -> :class:`Regularizer` (the ``regularizer`` config group, instantiated), or a list; names
    appear in error messages.
    """

    def __init__(
        self, model: nn.Module, regularizers: Mapping[str, Regularizer] | Sequence[Regularizer] | None = None
    ):
        if isinstance(regularizers, Mapping):
            self.regularizers = dict(regularizers.items())
        else:
            self.regularizers = {type(r).__name__.lower(): r for r in regularizers or ()}
        for name, regularizer in self.regularizers.items():
            if not isinstance(regularizer, Regularizer):
                raise ConfigError(f"regularizer.{name}", f"is {regularizer!r}, not a rnnlab Regularizer", full=True)
            regularizer.attach(model, name)
        hooks = [r for r in self.regularizers.values() if isinstance(r, _HookRegularizer)]
        if hooks:
            model.set_hook(_HookChain(hooks))

    def __bool__(self) -> bool:
        return bool(self.regularizers)

    def penalty(self, module: nn.Module) -> torch.Tensor | None:
        """The sum of every penalty for the latest training forward of ``module`` (None when none applies)."""
        terms = [term for r in self.regularizers.values() if (term := r.penalty(module)) is not None]
        return sum(terms[1:], terms[0]) if terms else None
