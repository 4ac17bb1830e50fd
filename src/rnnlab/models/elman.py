"""Elman (simple) recurrent network, survey eqs. 1-3."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import require_choice
from rnnlab.models.base import FusedRecurrentNetwork

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class Elman(FusedRecurrentNetwork):
    """Simple recurrent network (Elman 1990; survey eqs. 1-3).

        h_t = f_H(W_IH x_t + W_HH h_{t-1} + b_h)          (eq. 1-2)
        y_t = f_O(W_HO h_t + b_o)                         (eq. 3; f_O is left to the task's loss)

    f_H is ``activation`` (tanh, relu or sigmoid). tanh and relu run on torch's fused ``nn.RNN``; sigmoid has no
    fused kernel and runs the hand-written cell. Shapes as in ``rnnlab.models.base``; state h: [layers*dirs, B, H].
    """

    fused_class = nn.RNN

    def __init__(self, input_size: int, output_size: int, activation: str = "tanh", **kwargs):
        require_choice("activation", activation, tuple(ACTIVATIONS))
        self.activation = activation
        fused_nonlinearity = activation if activation in ("tanh", "relu") else "tanh"
        super().__init__(input_size, output_size, nonlinearity=fused_nonlinearity, **kwargs)

    def fused_supported(self) -> bool:
        return super().fused_supported() and self.activation in ("tanh", "relu")

    def cell_step(self, x_projected, state, weight_hh, bias_hh):
        (h,) = state
        return (ACTIVATIONS[self.activation](x_projected + nn.functional.linear(h, weight_hh, bias_hh)),)
