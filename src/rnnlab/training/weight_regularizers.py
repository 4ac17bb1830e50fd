"""The regularizer interface (:class:`Regularizer`) and the regularizers that act on the weights: the loss penalties
:class:`L1`, :class:`L2` and DropConnect on the recurrent matrices (:class:`WeightDrop`). Listed, with the ones
inside the recurrence, in :mod:`rnnlab.training.regularizers`."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch

import torch
from torch import nn
from torch.nn.utils import parametrize

from rnnlab.errors import ConfigError


def require_probability(key: str, value: float, *, allow_one: bool = False) -> None:
    """Raise ConfigError unless ``value`` is in [0, 1) ([0, 1] with ``allow_one``)."""
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value and upper_ok):
        raise ConfigError(key, f"must be in [0, {'1]' if allow_one else '1)'}, got {value!r}")


def keep_mask(like: torch.Tensor, p: float, shape: tuple[int, ...] | None = None, rescale: bool = True) -> torch.Tensor:
    """Bernoulli(1 - p) mask of ``shape`` (default ``like``'s), real, on ``like``'s device; divided by 1 - p
    (inverted dropout) when ``rescale``."""
    dtype = like.real.dtype if like.is_complex() else like.dtype
    mask = torch.empty(shape or like.shape, dtype=dtype, device=like.device).bernoulli_(1.0 - p)
    return mask.div_(1.0 - p) if rescale else mask


class Regularizer:
    """One regularizer. ``attach(model, name)`` adapts the model once, at construction, and raises ConfigError when the
    model cannot host it; ``penalty(module)`` is the term added to the training loss (None when there is none)."""

    def attach(self, model: nn.Module, name: str) -> None:
        self.name = name

    def penalty(self, module: nn.Module) -> torch.Tensor | None:
        return None


class _WeightPenalty(Regularizer):
    """``weight`` * sum over the module's weights of ``term(w)``; biases (any name part starting with ``bias``) only
    with ``biases: true``. Weight decay stays the optimizer's (``optimizer.weight_decay``)."""

    def __init__(self, weight: float = 1e-4, biases: bool = False):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError("weight", f"must be a number >= 0, got {weight!r}")
        self.weight = weight
        self.biases = biases

    def penalized(self, module: nn.Module) -> list[torch.Tensor]:
        return [
            parameter
            for name, parameter in module.named_parameters()
            if parameter.requires_grad and (self.biases or not any(p.startswith("bias") for p in name.split(".")))
        ]

    @staticmethod
    def term(parameter: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, module):
        terms = [self.term(parameter) for parameter in self.penalized(module)]
        return self.weight * torch.stack(terms).sum() if terms else None


class L1(_WeightPenalty):
    """L1 penalty, lambda * sum_w |w| (survey eq. 54), lambda = ``weight``."""

    @staticmethod
    def term(parameter):
        return parameter.abs().sum()


class L2(_WeightPenalty):
    """L2 penalty, lambda * sum_w w^2 (survey eq. 55), lambda = ``weight``."""

    @staticmethod
    def term(parameter):
        return parameter.square().sum()


class _DropConnect(nn.Module):
    """Parametrization W -> W * M in training mode, M = Bernoulli(1 - p) / (1 - p) drawn at the first use after
    :class:`WeightDrop` clears ``mask`` (before every forward of the model); W itself in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.mask: torch.Tensor | None = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return weight
        if self.mask is None:
            self.mask = keep_mask(weight, self.p)
        return weight * self.mask


class WeightDrop(Regularizer):
    """DropConnect on the recurrent weight matrices (Wan et al. 2013; AWD-LSTM, Merity et al. 2017, section 2):
    every element of W_hh is zeroed with probability ``p`` (kept ones scaled by 1 / (1 - p)), one mask per matrix per
    forward pass (per batch), shared by every step and sequence of that batch; W_hh itself at eval time.

    ``weights``: fnmatch patterns on the model's parameter names (``model.named_parameters()``). The defaults cover
    ``weight_hh`` of the fused families (elman, lstm, gru and their presets, which keep their fused kernel) and the
    ``recurrent`` matrices of clockwork, ctrnn, leaky, deep / dt / do RNN, drnn, scrn, mrnn, orthogonal, goru,
    mdrnn, mdlstm and rcnn; other families name theirs (jordan ``*feedback.weight``, rhn ``*highway*weight``).
    Implemented as a ``torch.nn.utils.parametrize`` parametrization (after any the family has, e.g. orthogonal), so
    checkpoints of such a model store ``<module>.parametrizations.<name>.original``.
    """

    def __init__(self, p: float = 0.5, weights: Sequence[str] = ("*weight_hh*", "*recurrent*weight*")):
        require_probability("p", p)
        self.p = p
        self.patterns = list(weights)
        self.drops: list[_DropConnect] = []

    def attach(self, model, name):
        super().attach(model, name)
        targets = []
        for parameter_name, _ in model.named_parameters():
            # an already parametrized tensor (<owner>.parametrizations.<leaf>.original) is dropped as <owner>.<leaf>
            owner_name, _, rest = parameter_name.rpartition("parametrizations.")
            tensor_name = owner_name + rest.removesuffix(".original") if owner_name else parameter_name
            if tensor_name not in targets and any(fnmatch(tensor_name, pattern) for pattern in self.patterns):
                targets.append(tensor_name)
        if not targets:
            raise ConfigError(
                f"regularizer.{name}.weights",
                f"no parameter of model {type(model).__name__} matches {self.patterns}; "
                "list its recurrent matrices (names as in model.named_parameters())",
                full=True,
            )
        for target in targets:
            owner_name, _, leaf = target.rpartition(".")
            owner = model.get_submodule(owner_name)
            drop = _DropConnect(self.p)
            parametrize.register_parametrization(owner, leaf, drop)
            self.drops.append(drop)
        model.register_forward_pre_hook(self.resample)

    def resample(self, model: nn.Module, args) -> None:
        """Forward pre-hook: every dropped matrix draws a new mask at its next use."""
        for drop in self.drops:
            drop.mask = None
