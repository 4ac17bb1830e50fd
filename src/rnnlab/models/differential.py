"""Differential recurrent neural network (Veeriah, Zhuang & Qi 2015, "Differential Recurrent Neural Networks for
Action Recognition"; survey eqs. 42-46)."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import require_choice
from rnnlab.models.base import RecurrentCell, RecurrentNetwork, State, kernel_result
from rnnlab.models.differential_kernels import drnn_sequence

ORDERS = (1, 2)


class DRNNCell(RecurrentCell):
    """One dRNN layer and direction: an LSTM whose gates read the derivatives of its cell state (DoS).

        D_t = [d^(1) s_t; ...; d^(R) s_t],  d^(1) s_t = s_t - s_{t-1},  d^(2) s_t = d^(1) s_t - d^(1) s_{t-1}
                                                                              (eqs. 45-46, R = ``order``)
        i_t = sigma(W_di D_{t-1} + W_xi x_t + W_hi h_{t-1} + b_i)            (eq. 42)
        f_t = sigma(W_df D_{t-1} + W_xf x_t + W_hf h_{t-1} + b_f)            (eq. 43)
        s_t = f_t * s_{t-1} + i_t * tanh(W_xs x_t + W_hs h_{t-1} + b_s)
        o_t = sigma(W_do D_t + W_xo x_t + W_ho h_{t-1} + b_o)                (eq. 44)
        h_t = o_t * tanh(s_t)

    The sums over orders r = 1..R of the paper are one full matrix W_d* [H, R*H] per gate. Input and forget gates
    read the DoS of the previous step, the output gate that of the current step, as in the paper. State:
    (h, s, d^(1) s[, d^(2) s]), each [B, H], zero at the start (so s_{-1} = s_{-2} = 0).
    """

    def __init__(self, input_size: int, hidden_size: int, order: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.order = order
        self.input = nn.Linear(input_size, 4 * hidden_size)  # W_x{i,f,s,o}, b
        self.recurrent = nn.Linear(hidden_size, 4 * hidden_size, bias=False)  # W_h{i,f,s,o}
        self.dos_input_forget = nn.Linear(order * hidden_size, 2 * hidden_size, bias=False)  # W_di, W_df
        self.dos_output = nn.Linear(order * hidden_size, hidden_size, bias=False)  # W_do

    def project(self, x):
        return self.input(x)

    def run(self, x, mask, state):
        """All steps as one autograd node (``rnnlab.models.differential_kernels``, same math as :meth:`step`).

        The kernel runs every step, padding included: padding is at the end (``mask`` [B, T] is a prefix), so steps
        past a sequence's length never reach its valid steps; the state after its last valid step is picked out
        and padded outputs are zeroed. Under autocast (mixed precision), or with a ``step_hook``, the step loop of
        :meth:`RecurrentCell.run` runs instead, as the kernel computes in one dtype and never calls ``step``.
        """
        if torch.is_autocast_enabled(x.device.type) or self.step_hook is not None:
            return super().run(x, mask, state)
        h, s, *dos = state
        hs, ss, all_dos = drnn_sequence(
            self.project(x.transpose(0, 1)), h, s, torch.cat(dos, dim=-1), self.recurrent.weight,
            self.dos_input_forget.weight, self.dos_output.weight,
        )  # time-major [T + 1, B, ...]
        states = (hs, ss, *all_dos.split(self.hidden_size, dim=-1))
        outputs = hs[1:].transpose(0, 1)  # [B, T, H]
        return kernel_result(outputs, states, mask)

    def initial_state(self, batch, reference):
        return tuple(reference.new_zeros(batch, self.hidden_size) for _ in range(2 + self.order))

    def step(self, projected: torch.Tensor, state: State, t: int) -> State:
        h, s, *dos = state
        pre_i, pre_f, pre_s, pre_o = (projected + self.recurrent(h)).chunk(4, dim=-1)
        dos_i, dos_f = self.dos_input_forget(torch.cat(dos, dim=-1)).chunk(2, dim=-1)
        i = torch.sigmoid(pre_i + dos_i)
        f = torch.sigmoid(pre_f + dos_f)
        new_s = f * s + i * torch.tanh(pre_s)
        new_dos = [new_s - s]
        if self.order == 2:
            new_dos.append(new_dos[0] - dos[0])
        o = torch.sigmoid(pre_o + self.dos_output(torch.cat(new_dos, dim=-1)))
        return (o * torch.tanh(new_s), new_s, *new_dos)


class DRNN(RecurrentNetwork):
    """Differential RNN (Veeriah et al. 2015; survey eqs. 42-46): a stack of :class:`DRNNCell` layers.

    ``order`` 1 drives the gates with the first-order DoS, ``order`` 2 with the first and second orders.
    Shapes as in ``rnnlab.models.base``: x [B, T, input_size] -> outputs [B, T, output_size];
    state (h, s, d^(1) s[, d^(2) s]), each [layers*dirs, B, H].
    """

    def __init__(self, input_size: int, output_size: int, order: int = 1, **kwargs):
        require_choice("order", order, ORDERS)
        self.order = order
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size: int, layer: int, direction: int) -> RecurrentCell:
        return DRNNCell(input_size, self.hidden_size, self.order)
