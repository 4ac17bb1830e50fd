"""Gated recurrent families: LSTM (survey eqs. 32-38) and GRU (survey eqs. 47-50)."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.models.base import FusedRecurrentNetwork


class LSTM(FusedRecurrentNetwork):
    """Long short-term memory with forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000; survey IV.F).

        i_t = sigma(W_xi x_t + W_hi h_{t-1} + b_i)        f_t = sigma(W_xf x_t + W_hf h_{t-1} + b_f)
        g_t = tanh(W_xc x_t + W_hc h_{t-1} + b_c)         o_t = sigma(W_xo x_t + W_ho h_{t-1} + b_o)
        c_t = f_t * c_{t-1} + i_t * g_t                   h_t = o_t * tanh(c_t)

    (survey eqs. 32-36 without the peephole terms; stacking as eqs. 37-38). Weights are those of ``nn.LSTM``
    (gate order i, f, g, o); the fused kernel and the hand-written cell compute the same function.
    Shapes as in ``rnnlab.models.base``; state (h, c), each [layers*dirs, B, H].
    """

    fused_class = nn.LSTM
    state_tensors = 2

    def cell_step(self, x_projected, state, weight_hh, bias_hh):
        h, c = state
        gates = x_projected + nn.functional.linear(h, weight_hh, bias_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class GRU(FusedRecurrentNetwork):
    """Gated recurrent unit (Cho et al. 2014; survey eqs. 47-50).

        z_t = sigma(W_xz x_t + W_hz h_{t-1} + b_z)                    (eq. 47, update gate)
        r_t = sigma(W_xr x_t + W_hr h_{t-1} + b_r)                    (eq. 48, reset gate)
        n_t = tanh(W_xn x_t + r_t * (W_hn h_{t-1} + b_hn) + b_in)     (eq. 49, candidate)
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}                         (eq. 50)

    The reset gate multiplies the projected previous state (torch's convention, which cuDNN implements).
    Weights are those of ``nn.GRU`` (gate order r, z, n). State h: [layers*dirs, B, H].
    """

    fused_class = nn.GRU

    def cell_step(self, x_projected, state, weight_hh, bias_hh):
        (h,) = state
        x_r, x_z, x_n = x_projected.chunk(3, dim=-1)
        h_r, h_z, h_n = nn.functional.linear(h, weight_hh, bias_hh).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return ((1 - z) * n + z * h,)
