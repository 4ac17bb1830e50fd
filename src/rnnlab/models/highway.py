"""Recurrent highway network (Zilly, Srivastava, Koutnik & Schmidhuber 2017, "Recurrent Highway Networks")."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import require_positive
from rnnlab.models.base import RecurrentCell, RecurrentNetwork, State


class RHNCell(RecurrentCell):
    """One RHN layer and direction: ``depth`` highway layers per time step, with coupled carry gates.

        s_0^t = s_L^{t-1}
        h_l^t = tanh(W_H x_t [l = 1] + R_Hl s_{l-1}^t + b_Hl)
        t_l^t = sigmoid(W_T x_t [l = 1] + R_Tl s_{l-1}^t + b_Tl)
        s_l^t = h_l^t * t_l^t + s_{l-1}^t * (1 - t_l^t)          for l = 1..L

    (Zilly et al. 2017, eqs. 6-8 with c = 1 - t). The input enters only the first highway layer; the layer emits
    and carries y_t = s_L^t [B, H].
    """

    def __init__(self, input_size: int, hidden_size: int, depth: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input = nn.Linear(input_size, 2 * hidden_size, bias=False)  # W_H, W_T
        self.highway = nn.ModuleList(nn.Linear(hidden_size, 2 * hidden_size) for _ in range(depth))  # R_l, b_l

    def project(self, x):
        return self.input(x)

    def step(self, projected: torch.Tensor, state: State, t: int) -> State:
        (s,) = state
        for index, layer in enumerate(self.highway):
            pre = layer(s) + projected if index == 0 else layer(s)
            pre_h, pre_t = pre.chunk(2, dim=-1)
            transform = torch.sigmoid(pre_t)
            s = torch.tanh(pre_h) * transform + s * (1 - transform)
        return (s,)


class RHN(RecurrentNetwork):
    """Recurrent highway network (Zilly et al. 2017): a stack of :class:`RHNCell` layers of ``recurrence_depth``.

    Shapes as in ``rnnlab.models.base``: x [B, T, input_size] -> outputs [B, T, output_size];
    state s [layers*dirs, B, H].
    """

    def __init__(self, input_size: int, output_size: int, recurrence_depth: int = 3, **kwargs):
        require_positive(recurrence_depth=recurrence_depth)
        self.recurrence_depth = recurrence_depth
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size: int, layer: int, direction: int) -> RecurrentCell:
        return RHNCell(input_size, self.hidden_size, self.recurrence_depth)
