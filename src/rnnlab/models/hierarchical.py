"""Hierarchical subsampling recurrent network (Graves 2012, "Supervised Sequence Labelling with Recurrent Neural
Networks", chapter 9)."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import require_positive
from rnnlab.models.base import valid_step_mask
from rnnlab.models.gated import LSTM


def subsample(x: torch.Tensor, window: int) -> torch.Tensor:
    """Concatenate each ``window`` consecutive steps: [B, T, F] -> [B, ceil(T / window), window * F].

    The last window is completed with zero steps; step k of the result is [x_{k w}; x_{k w + 1}; ...].
    """
    batch, steps, features = x.shape
    pad = -steps % window
    if pad:
        x = nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(batch, (steps + pad) // window, window * features)


class HSRNN(nn.Module):
    """Hierarchical subsampling RNN (Graves 2012, ch. 9): ``levels`` recurrent levels, each followed by subsampling.

        level k:  H^k = LSTM_k(dropout(X^k))              [B, T_k, dirs*H]   (an LSTM network of ``num_layers``)
                  X^{k+1} = subsample(H^k, window)        [B, ceil(T_k / w), w*dirs*H],  T_{k+1} = ceil(T_k / w)
        output:   y_t = W X^{levels}_{floor(t / w^levels)} + b     for t < T

    Each level is a (bidirectional with ``bidirectional``) :class:`rnnlab.models.gated.LSTM` network (Graves used
    LSTM) with ``num_layers``, ``dropout`` and ``residual`` inside it; ``dropout`` also applies between levels.
    Lengths shrink with ceil division, so each window holds at least one valid step and padded steps enter
    windows only as the zeros the levels emit there: padding never reaches a valid output.

    The top sequence is shorter than the input; to keep the interface, it is upsampled back by repeating each of
    its steps ``window**levels`` times and cutting to T, so outputs are [B, T, output_size], and step t reads the
    window that contains it. Outputs at padded steps are the readout of a zero vector, as in ``rnnlab.models.base``.

    State: (h, c), each [levels*layers*dirs, B, H], level-major. Carrying it between calls continues the same
    computation only when each call's length is a multiple of ``window**levels`` (the windows then line up).
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        residual: bool = False,
        levels: int = 2,
        window: int = 2,
        implementation: str = "auto",
    ):
        super().__init__()
        require_positive(output_size=output_size, levels=levels, window=window)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size
        self.levels = levels
        self.window = window
        self.dropout = dropout
        self.stack = nn.ModuleList()
        level_input = input_size
        for _ in range(levels):
            level = LSTM(
                level_input,
                output_size,
                hidden_size=hidden_size,
                num_layers=num_layers,
                bidirectional=bidirectional,
                dropout=dropout,
                residual=residual,
                implementation=implementation,
            )
            level.readout = nn.Identity()  # a level emits its hidden sequence; only the top readout is learned
            self.stack.append(level)
            level_input = window * level.num_directions * hidden_size
        self.readout = nn.Linear(level_input, output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        batch, steps, _ = x.shape
        if state is None:
            level_states = [None] * self.levels
        else:
            per_level = [component.chunk(self.levels) for component in state]
            level_states = list(zip(*per_level))
        hidden, level_lengths, final = x, lengths, []
        for k, level in enumerate(self.stack):
            if k > 0 and self.dropout > 0:
                hidden = nn.functional.dropout(hidden, self.dropout, self.training)
            hidden, level_state = level.run_layers(hidden, level_lengths, level_states[k])
            final.append(level_state)
            hidden = subsample(hidden, self.window)
            if level_lengths is not None:
                level_lengths = (level_lengths + self.window - 1) // self.window
        hidden = hidden.repeat_interleave(self.window**self.levels, dim=1)[:, :steps]
        if lengths is not None:
            hidden = hidden * valid_step_mask(lengths, batch, steps, x.device).unsqueeze(-1)
        state = tuple(torch.cat(component) for component in zip(*final))
        return self.readout(hidden), state
