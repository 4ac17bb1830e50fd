"""Parameter matching (CONTRIBUTING.md, 'Identical conditions'): choose ``hidden_size`` so a model has about N
trainable parameters."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from rnnlab.errors import ConfigError

TOLERANCE = 0.05
BUDGET_KEY = "param_budget"  # the model config's key beside its constructor's (conf/model_keys.yaml)
MAX_HIDDEN = 1 << 14


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _count_for(factory: Callable[..., nn.Module], hidden_size: int) -> int:
    """Trainable parameters at ``hidden_size``, built on the meta device when the family allows (no memory)."""
    try:
        with torch.device("meta"):
            return count_parameters(factory(hidden_size=hidden_size))
    except (NotImplementedError, RuntimeError):
        return count_parameters(factory(hidden_size=hidden_size))


def hidden_size_for_budget(factory: Callable[..., nn.Module], budget: int) -> int:
    """The hidden size whose parameter count is closest to ``budget``; ConfigError if not within 5%.

    ``factory(hidden_size=h)`` builds the model; counts grow with h, so a doubling search then bisection finds
    the two sizes around the budget.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ConfigError("param_budget", f"must be a positive integer, got {budget!r}")
    low, high = 1, 1
    while _count_for(factory, high) < budget:
        low, high = high, high * 2
        if high > MAX_HIDDEN:
            raise ConfigError("param_budget", f"{budget} needs hidden_size > {MAX_HIDDEN}")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _count_for(factory, middle) < budget else (low, middle)
    best = min((low, high), key=lambda h: abs(_count_for(factory, h) - budget))
    count = _count_for(factory, best)
    if abs(count - budget) > TOLERANCE * budget:
        raise ConfigError(
            "param_budget", f"closest count is {count} at hidden_size {best}, more than 5% from {budget}"
        )
    return best
