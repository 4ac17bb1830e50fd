"""Structurally constrained recurrent network (Mikolov et al. 2014, "Learning Longer Memory in Recurrent Neural
Networks"; survey eqs. 51-53)."""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_positive
from rnnlab.models.base import RecurrentCell, RecurrentNetwork, State


class SCRNCell(RecurrentCell):
    """One SCRN layer and direction: a slow context state s [B, C] beside a fast hidden state h [B, H].

        s_t = (1 - alpha) B x_t + alpha s_{t-1}                 (eq. 51)
        h_t = sigmoid(P s_t + A x_t + R h_{t-1} + b)            (eq. 52)

    The layer emits [h_t; s_t] ([B, H + C]); the network's readout is eq. 53, y_t = f(U h_t + V s_t).
    alpha is a fixed scalar, or with ``learn_alpha`` a per-unit vector sigmoid(a) [C] initialised at ``alpha``.
    """

    def __init__(self, input_size: int, hidden_size: int, context_size: int, alpha: float, learn_alpha: bool):
        super().__init__()
        self.hidden_size = hidden_size
        self.context_size = context_size
        self.learn_alpha = learn_alpha
        self.input_to_context = nn.Linear(input_size, context_size, bias=False)  # B
        self.input_to_hidden = nn.Linear(input_size, hidden_size)  # A, b
        self.context_to_hidden = nn.Linear(context_size, hidden_size, bias=False)  # P
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)  # R
        if learn_alpha:
            self.alpha_logit = nn.Parameter(torch.full((context_size,), math.log(alpha / (1 - alpha))))
        else:
            self.register_buffer("fixed_alpha", torch.tensor(float(alpha)))

    @property
    def output_size(self) -> int:
        return self.hidden_size + self.context_size

    def alpha(self) -> torch.Tensor:
        """The context decay: a scalar, or [C] when learned."""
        return torch.sigmoid(self.alpha_logit) if self.learn_alpha else self.fixed_alpha

    def project(self, x):
        return torch.cat([(1 - self.alpha()) * self.input_to_context(x), self.input_to_hidden(x)], dim=-1)

    def initial_state(self, batch, reference):
        return reference.new_zeros(batch, self.hidden_size), reference.new_zeros(batch, self.context_size)

    def step(self, projected: torch.Tensor, state: State, t: int) -> State:
        h, s = state
        context_input, hidden_input = projected.split([self.context_size, self.hidden_size], dim=-1)
        s = context_input + self.alpha() * s
        h = torch.sigmoid(self.context_to_hidden(s) + hidden_input + self.recurrent(h))
        return h, s

    def output(self, state):
        return torch.cat(state, dim=-1)


class SCRN(RecurrentNetwork):
    """Structurally constrained recurrent network (Mikolov et al. 2014; survey eqs. 51-53).

    Each layer and direction is an :class:`SCRNCell`: a sigmoid hidden layer of ``hidden_size`` units plus a
    context layer of ``context_size`` units whose recurrent matrix is fixed to alpha * I (``alpha`` 0.95 as in the
    paper; ``learn_alpha`` learns a per-unit decay). Layer l > 0 and the readout read [h_t; s_t] of all directions.

    Shapes as in ``rnnlab.models.base``: x [B, T, input_size] -> outputs [B, T, output_size];
    state (h [layers*dirs, B, H], s [layers*dirs, B, C]).
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        context_size: int = 32,
        alpha: float = 0.95,
        learn_alpha: bool = False,
        **kwargs,
    ):
        require_positive(context_size=context_size)
        low_ok = 0.0 < alpha if learn_alpha else 0.0 <= alpha
        high_ok = alpha < 1.0 if learn_alpha else alpha <= 1.0
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (low_ok and high_ok):
            allowed = "(0, 1) with learn_alpha" if learn_alpha else "[0, 1]"
            raise ConfigError("alpha", f"must be in {allowed}, got {alpha!r}")
        self.context_size = context_size
        self.alpha = float(alpha)
        self.learn_alpha = learn_alpha
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size: int, layer: int, direction: int) -> RecurrentCell:
        return SCRNCell(input_size, self.hidden_size, self.context_size, self.alpha, self.learn_alpha)
