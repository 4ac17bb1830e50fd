"""Grid LSTM over time and depth (Kalchbrenner et al. 2016; survey eqs. 40-41), one of the multi-dimensional
family (``rnnlab.models.multidim``): reads ordinary sequences [B, T, F]. Each direction runs as one autograd node
with a hand-written backward, by anti-diagonals of its time x depth grid (``rnnlab.models.multidim_kernels``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlab.errors import require_positive
from rnnlab.models.base import reverse_padded, valid_step_mask
from rnnlab.models.multidim_kernels import grid_lstm_sequence


class _GridLSTMColumn(nn.Module):
    """One direction of a 2-D Grid LSTM (time x depth): the input projection and the per-layer block weights.

    ``weight`` [L, 8H, 2H] and ``bias`` [L, 8H]: rows 0..4H the time LSTM's gates (i, f, g, o), rows 4H..8H the depth
    LSTM's; columns 0..H read h^time, columns H..2H read h^depth (H = [h^time; h^depth], eq. 40).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.input = nn.Linear(input_size, hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight = nn.Parameter(torch.empty(num_layers, 8 * hidden_size, 2 * hidden_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_layers, 8 * hidden_size).uniform_(-bound, bound))

    def block(self, layer: int, h_time, m_time, h_depth, m_depth):
        """One Grid LSTM block (eqs. 40-41): both transforms read the same H = [h^time; h^depth]; their
        LSTM(H, m, W) updates run as one set of elementwise ops on [B, 2, H] (time, depth)."""
        batch = h_time.shape[0]
        gates = torch.addmm(self.bias[layer], torch.cat([h_time, h_depth], dim=-1), self.weight[layer].T)
        i, f, g, o = gates.view(batch, 2, 4, self.hidden_size).unbind(2)  # each [B, 2, H]
        memory = torch.sigmoid(f) * torch.stack([m_time, m_depth], dim=1) + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(memory)
        return hidden[:, 0], memory[:, 0], hidden[:, 1], memory[:, 1]

    def run(self, x: torch.Tensor, mask: torch.Tensor | None, state: tuple[torch.Tensor, torch.Tensor]):
        """x [B, T, in], mask [B, T] (a prefix: padding at the end) or None, state (h^time, m^time) [L, B, H] ->
        (top h^depth [B, T, H], state).

        Every block runs in one autograd node (``multidim_kernels.grid_lstm_sequence``, hand-written backward),
        padded steps included: they come after a sequence's valid steps, so they never reach them; each sequence's
        time state after its last valid step is picked out and padded outputs are zeroed. Under autocast (mixed
        precision) the block loop of :meth:`run_blocks` runs instead, as the kernel computes in one dtype.
        """
        if torch.is_autocast_enabled(x.device.type):
            return self.run_blocks(x, mask, state)
        top, h_time, m_time = grid_lstm_sequence(self.input(x.transpose(0, 1)), *state, self.weight, self.bias)
        outputs = top.transpose(0, 1)  # [B, T, H]
        if mask is None:
            return outputs, (h_time[:, -1], m_time[:, -1])
        lengths = mask.sum(1)
        batch = torch.arange(lengths.shape[0], device=lengths.device)
        state = (h_time[:, lengths, batch], m_time[:, lengths, batch])
        return outputs.masked_fill(~mask.unsqueeze(-1), 0.0), state

    def run_blocks(self, x: torch.Tensor, mask: torch.Tensor | None, state: tuple[torch.Tensor, torch.Tensor]):
        """:meth:`run` as a Python loop over the blocks, each :meth:`block` recorded by autograd."""
        h_time, m_time = list(state[0].unbind(0)), list(state[1].unbind(0))
        outputs = []
        keeps = mask.unbind(1) if mask is not None else [None] * x.shape[1]
        for projected, keep in zip(self.input(x).unbind(1), keeps):  # h^depth_{t,0} = W_in x_t + b_in, m^depth = 0
            h_depth, m_depth = projected, torch.zeros_like(projected)
            for layer in range(self.num_layers):
                h, m, h_depth, m_depth = self.block(layer, h_time[layer], m_time[layer], h_depth, m_depth)
                if keep is not None:  # padded steps keep the time state
                    h, m = torch.where(keep[:, None], h, h_time[layer]), torch.where(keep[:, None], m, m_time[layer])
                h_time[layer], m_time[layer] = h, m
            outputs.append(h_depth if keep is None else torch.where(keep[:, None], h_depth, 0.0))
        return torch.stack(outputs, dim=1), (torch.stack(h_time), torch.stack(m_time))


class GridLSTM(nn.Module):
    """2-D Grid LSTM over time and depth (Kalchbrenner et al. 2016; survey eqs. 40-41).

    Block (t, l) holds an LSTM along time (h^time, m^time, passed from (t - 1, l)) and one along depth (h^depth,
    m^depth, passed from (t, l - 1)); both read the same concatenated hidden vector:

        H = [h^time_{t-1,l}; h^depth_{t,l-1}]                                            (eq. 40)
        (h^time_{t,l}, m^time_{t,l})   = LSTM(H, m^time_{t-1,l},  W^time_l)              (eq. 41)
        (h^depth_{t,l}, m^depth_{t,l}) = LSTM(H, m^depth_{t,l-1}, W^depth_l)
        LSTM(H, m, W): [i; f; g; o] = W H + b,  m' = sigma(f) * m + sigma(i) * tanh(g),  h' = sigma(o) * tanh(m')

    (the paper prints h' = tanh(sigma(o) * m'); the standard LSTM output is used here, and biases are explicit). The
    input enters at the bottom of the depth dimension: h^depth_{t,0} = W_in x_t + b_in, m^depth_{t,0} = 0; the output
    is read from the top: y_t = W_y h^depth_{t,L} + b_y. Weights are untied across layers. ``bidirectional`` adds a
    second grid reading each sequence reversed within its length; the two top outputs are concatenated.

    Shapes: x [B, T, input_size], lengths [B] or None; outputs [B, T, output_size]; state (h^time, m^time), each
    [num_layers * directions, B, H] ordered (layer, direction). Padded steps keep the time state and emit the readout
    of zeros.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        bidirectional: bool = False,
    ):
        super().__init__()
        require_positive(input_size=input_size, output_size=output_size, hidden_size=hidden_size, num_layers=num_layers)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.columns = nn.ModuleList(
            _GridLSTMColumn(input_size, hidden_size, num_layers) for _ in range(self.num_directions)
        )
        self.readout = nn.Linear(self.num_directions * hidden_size, output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        batch, steps, _ = x.shape
        mask = None if lengths is None else valid_step_mask(lengths, batch, steps, x.device)
        if mask is not None and bool(mask.all()):
            mask = None
        if state is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            state = (zeros, zeros)
        directions = self.num_directions
        outputs, finals = [], []
        for direction, column in enumerate(self.columns):
            initial = tuple(s[direction::directions] for s in state)  # this direction's layers
            seq = reverse_padded(x, lengths) if direction else x
            out, final = column.run(seq, mask, initial)
            outputs.append(reverse_padded(out, lengths) if direction else out)
            finals.append(final)
        h, m = (torch.stack([f[k] for f in finals], dim=1).flatten(0, 1) for k in range(2))  # (layer, direction)
        return self.readout(torch.cat(outputs, dim=-1)), (h, m)
