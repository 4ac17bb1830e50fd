"""Independently recurrent neural network (IndRNN), Li, Li, Cook, Zhu & Gao 2018 (CVPR), eq. 2."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import require_choice, require_positive
from rnnlab.models.base import RecurrentCell, RecurrentNetwork
from rnnlab.models.elman import ACTIVATIONS


class IndRNNCell(RecurrentCell):
    """One IndRNN layer: a diagonal recurrence, u [H], bounded by ``recurrent_max`` when set. State (h,): [B, H]."""

    def __init__(self, input_size: int, hidden_size: int, activation, recurrent_max: float | None):
        super().__init__()
        self.hidden_size = hidden_size
        self.activation = activation
        self.recurrent_max = recurrent_max
        self.input = nn.Linear(input_size, hidden_size)  # W, b
        self.u = nn.Parameter(torch.empty(hidden_size))
        with torch.no_grad():
            self.u.uniform_(0.0, 1.0)
            if recurrent_max is not None:
                self.u.clamp_(-recurrent_max, recurrent_max)

    def recurrent_weight(self) -> torch.Tensor:
        """u with the constraint |u_i| <= recurrent_max applied (the clamp passes no gradient past the bound)."""
        if self.recurrent_max is None:
            return self.u
        return self.u.clamp(-self.recurrent_max, self.recurrent_max)

    def project(self, x):
        return self.input(x)

    def step(self, projected, state, t):
        (h,) = state
        return (self.activation(projected + self.recurrent_weight() * h),)


class IndRNN(RecurrentNetwork):
    """IndRNN (Li et al. 2018, eq. 2): every unit has one recurrent weight, its own.

        h_t = relu(W x_t + u * h_{t-1} + b)          (* elementwise; u in R^H)

    The gradient through T steps scales as u_i^(T-1), so Li et al. bound |u_i| <= 2^(1/T) for ReLU units
    (``recurrent_max``; e.g. 1.014 for T = 50; null leaves u unbounded). u starts U(0, 1), clamped to the bound, and
    the bound is applied again in every forward pass. Layers stack as in the paper's deep IndRNN (without its batch
    normalisation). ``activation`` relu (the paper's) or tanh / sigmoid. Shapes as in ``rnnlab.models.base``;
    state h: [layers*dirs, B, H].
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        recurrent_max: float | None = None,
        activation: str = "relu",
        **kwargs,
    ):
        if recurrent_max is not None:
            require_positive(recurrent_max=recurrent_max)
        require_choice("activation", activation, tuple(ACTIVATIONS))
        self.recurrent_max = recurrent_max
        self.activation = ACTIVATIONS[activation]
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return IndRNNCell(input_size, self.hidden_size, self.activation, self.recurrent_max)
