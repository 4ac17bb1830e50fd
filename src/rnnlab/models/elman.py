"""Elman (simple) recurrent network, survey eqs. 1-3, and the Jordan network, whose recurrence runs through the
layer's output instead of its hidden state. The IRNN (Le et al. 2015) is the Elman network with ReLU units and
``init: identity`` (rnnlab.models.initialization; config ``irnn``)."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import require_choice
from rnnlab.models.base import FusedRecurrentNetwork, RecurrentCell, RecurrentNetwork

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class Elman(FusedRecurrentNetwork):
    """Simple recurrent network (Elman 1990; survey eqs. 1-3).

        h_t = f_H(W_IH x_t + W_HH h_{t-1} + b_h)          (eq. 1-2)
        y_t = f_O(W_HO h_t + b_o)                         (eq. 3; f_O is left to the task's loss)

    f_H is ``activation`` (tanh, relu or sigmoid). tanh and relu run on torch's fused ``nn.RNN``; sigmoid has no
    fused kernel and runs the hand-written cell. Shapes as in ``rnnlab.models.base``; state h: [layers*dirs, B, H].
    """

    fused_class = nn.RNN

    def __init__(
        self,
        input_size: int,
        output_size: int,
        activation: str = "tanh",
        **kwargs,
    ):
        require_choice("activation", activation, tuple(ACTIVATIONS))
        self.activation = activation
        fused_nonlinearity = activation if activation in ("tanh", "relu") else "tanh"
        super().__init__(input_size, output_size, nonlinearity=fused_nonlinearity, **kwargs)

    def fused_supported(self) -> bool:
        return super().fused_supported() and self.activation in ("tanh", "relu")

    def cell_step(self, x_projected, state, weight_hh, bias_hh):
        (h,) = state
        return (ACTIVATIONS[self.activation](x_projected + nn.functional.linear(h, weight_hh, bias_hh)),)


class JordanCell(RecurrentCell):
    """One Jordan layer: the previous output y_{t-1}, not h_{t-1}, feeds back. State (y,): [B, H]."""

    def __init__(self, input_size: int, hidden_size: int, activation: str):
        super().__init__()
        self.hidden_size = hidden_size
        self.activation = ACTIVATIONS[activation]
        self.input = nn.Linear(input_size, hidden_size)  # W, b
        self.feedback = nn.Linear(hidden_size, hidden_size, bias=False)  # U
        self.emit = nn.Linear(hidden_size, hidden_size)  # W_o, b_o

    def project(self, x):
        return self.input(x)

    def step(self, projected, state, t):
        (y,) = state
        h = self.activation(projected + self.feedback(y))
        return (self.emit(h),)


class Jordan(RecurrentNetwork):
    """Jordan network (Jordan 1986, "Serial order: a parallel distributed processing approach").

        h_t = f(W x_t + U y_{t-1} + b)
        y_t = W_o h_t + b_o

    Each layer feeds back its own output y (linear, size ``hidden_size``; Jordan fed back the network output, here
    every layer of a stack has its own y so layers stack like Elman layers). The layer emits y_t, which is also its
    carried state: outputs [B, T, H*dirs] into the readout, state [layers*dirs, B, H]. f is ``activation``.
    """

    def __init__(self, input_size: int, output_size: int, activation: str = "tanh", **kwargs):
        require_choice("activation", activation, tuple(ACTIVATIONS))
        self.activation = activation
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return JordanCell(input_size, self.hidden_size, self.activation)
