"""Clockwork RNN, Koutnik, Greff, Gomez & Schmidhuber 2014, "A Clockwork RNN" (ICML), eqs. 1-2 and section 3."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_positive
from rnnlab.models.base import RecurrentCell, RecurrentNetwork


def module_sizes(hidden_size: int, modules: int) -> list[int]:
    """Units per module: ``hidden_size`` split as evenly as possible, the first modules one larger.

    With fewer units than modules the last modules are empty (0), which only small parameter budgets ask for.
    """
    return [hidden_size // modules + (1 if i < hidden_size % modules else 0) for i in range(modules)]


class ClockworkCell(RecurrentCell):
    """One clockwork layer. State (h [B, H], clock [B] long): the clock is each sequence's step index, 0 at its start.

    Module i (units ``starts[i]:starts[i+1]``) has a row block of the recurrent matrix that reads only modules
    j >= i (as slow or slower), stored as one ``nn.Linear`` per module, so the parameter count is that of the block
    upper-triangular matrix.
    """

    def __init__(self, input_size: int, hidden_size: int, periods: list[int]):
        super().__init__()
        self.hidden_size = hidden_size
        sizes = [size for size in module_sizes(hidden_size, len(periods)) if size > 0]
        periods = periods[: len(sizes)]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.starts = starts
        self.input = nn.Linear(input_size, hidden_size)  # W_I, b
        self.recurrent = nn.ModuleList(
            nn.Linear(hidden_size - start, size, bias=False) for start, size in zip(starts, sizes)
        )  # row blocks of W_H
        unit_period = torch.cat([torch.full((size,), period) for size, period in zip(sizes, periods)])
        self.register_buffer("unit_period", unit_period, persistent=False)

    def project(self, x):
        return self.input(x)

    def initial_state(self, batch, reference):
        clock = torch.zeros(batch, dtype=torch.long, device=reference.device)
        return reference.new_zeros(batch, self.hidden_size), clock

    def step(self, projected, state, t):
        h, clock = state
        recurrent = torch.cat([block(h[:, start:]) for block, start in zip(self.recurrent, self.starts)], dim=-1)
        active = clock[:, None] % self.unit_period == 0  # [B, H]
        return torch.where(active, torch.tanh(projected + recurrent), h), clock + 1


class ClockworkRNN(RecurrentNetwork):
    """Clockwork RNN (Koutnik et al. 2014): hidden units in ``modules`` groups with periods T_1 <= T_2 <= ...

        h_t^(i) = tanh(W_H^(i) h_{t-1} + W_I^(i) x_t + b^(i))    if t mod T_i == 0      (eqs. 1-2)
        h_t^(i) = h_{t-1}^(i)                                     otherwise

    W_H is block upper triangular: module i reads modules j >= i, so slower modules feed faster ones and not the
    reverse. ``periods`` defaults to 1, 2, 4, ..., 2^(modules-1) (the paper's exponential series). t counts from 0 at
    each sequence's first step and is carried in the state, so a sequence split into chunks keeps its clock
    (truncated BPTT, stateful training); the backward direction's clock starts at each sequence's last valid step.
    Shapes as in ``rnnlab.models.base``; state (h [layers*dirs, B, H], clock [layers*dirs, B]).
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        modules: int = 4,
        periods: Sequence[int] | None = None,
        **kwargs,
    ):
        require_positive(modules=modules)
        periods = [2**i for i in range(modules)] if periods is None else list(periods)
        if (
            len(periods) != modules
            or not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in periods)
            or periods != sorted(periods)
        ):
            raise ConfigError("periods", f"must be {modules} positive integers in increasing order, got {periods!r}")
        self.periods = periods
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return ClockworkCell(input_size, self.hidden_size, self.periods)
