"""Deep RNNs in the sense of Pascanu, Gulcehre, Cho & Bengio 2014, "How to Construct Deep Recurrent Neural
Networks" (ICLR; survey section IV.A, Fig. 5): depth inside one time step rather than stacked layers."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice
from rnnlab.models.base import RecurrentCell, RecurrentNetwork
from rnnlab.models.elman import ACTIVATIONS


def _require_depth(key: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, f"must be an integer >= {minimum}, got {value!r}")


class DeepTransitionCell(RecurrentCell):
    """One layer and direction: an optional input MLP, then a deep transition, optionally with shortcuts.

        x'_t = g(x_t)                                          (input MLP, ``input_mlp`` layers; identity if 0)
        z_1  = phi(W_1 h_{t-1} + U x'_t + b_1)                  (transition_depth L = 1: h_t = z_1, a plain RNN)
        z_l  = phi(W_l z_{l-1} + b_l),  l = 2 .. L-1
        h_t  = phi(W_L z_{L-1} + b_L [+ Wbar h_{t-1} + Ubar x'_t])   (DT-RNN; the bracket is DT(S)'s shortcut)

    Every intermediate layer has ``hidden_size`` units. g's layers are phi(A x + a). State (h,): [B, H].
    The input MLP, U x'_t + b_1 and Ubar x'_t are computed for all steps before the loop.
    """

    def __init__(
        self, input_size: int, hidden_size: int, input_mlp: int, transition_depth: int, shortcut: bool, activation
    ):
        super().__init__()
        self.hidden_size = hidden_size
        self.activation = activation
        self.shortcut = shortcut
        sizes = [input_size] + [hidden_size] * input_mlp
        self.input_mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        # [U; Ubar] in one matrix, biases [b_1; b_L]: with a shortcut b_L joins the input part of the last layer
        self.input = nn.Linear(sizes[-1], hidden_size * (2 if shortcut else 1))
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)  # W_1
        depth = transition_depth - 1
        self.transition = nn.ModuleList(
            nn.Linear(hidden_size, hidden_size, bias=not (shortcut and i == depth - 1)) for i in range(depth)
        )
        self.recurrent_shortcut = nn.Linear(hidden_size, hidden_size, bias=False) if shortcut else None  # Wbar

    def project(self, x):
        for layer in self.input_mlp:
            x = self.activation(layer(x))
        return self.input(x)

    def step(self, projected, state, t):
        (h,) = state
        first, skip = projected.split(self.hidden_size, dim=-1) if self.shortcut else (projected, None)
        z = first + self.recurrent(h)
        for layer in self.transition:
            z = layer(self.activation(z))
        if self.shortcut:
            z = z + skip + self.recurrent_shortcut(h)
        return (self.activation(z),)


class DeepRNN(RecurrentNetwork):
    """Deep transition / deep output RNN (Pascanu et al. 2014, section 3; survey section IV.A, Fig. 5).

    Per layer and direction, :class:`DeepTransitionCell`: ``input_mlp`` layers before the recurrence (deep
    input-to-hidden function), ``transition_depth`` layers from h_{t-1} to h_t (DT-RNN; 1 is a plain RNN) and, with
    ``shortcut``, the skip connections Wbar h_{t-1} + Ubar x_t into the last of them (DT(S)-RNN). On top of the stack,
    the deep output function (DO-RNN):

        y_t = V psi(... psi(V_1 h_t + c_1) ...) + c          (``output_depth`` linear maps in all; 1 is the readout)

    with the hidden layers of psi as wide as the top layer's output (H * directions). phi = psi = ``activation``.
    The Pascanu presets: ``dt_rnn``, ``dts_rnn``, ``do_rnn``; ``deep_rnn`` is DOT(S)-RNN (all three together).
    Shapes as in ``rnnlab.models.base``; state h: [layers*dirs, B, H].
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        input_mlp: int = 0,
        transition_depth: int = 2,
        shortcut: bool = True,
        output_depth: int = 2,
        activation: str = "tanh",
        **kwargs,
    ):
        _require_depth("input_mlp", input_mlp, 0)
        _require_depth("transition_depth", transition_depth, 1)
        _require_depth("output_depth", output_depth, 1)
        require_choice("activation", activation, tuple(ACTIVATIONS))
        if shortcut and transition_depth < 2:
            raise ConfigError("shortcut", "needs transition_depth >= 2 (a depth-1 transition has no path to skip)")
        self.input_mlp = input_mlp
        self.transition_depth = transition_depth
        self.shortcut = shortcut
        self.activation = ACTIVATIONS[activation]
        super().__init__(input_size, output_size, **kwargs)
        width = self.readout.in_features
        self.output_mlp = nn.ModuleList(nn.Linear(width, width) for _ in range(output_depth - 1))

    def make_cell(self, input_size, layer, direction):
        return DeepTransitionCell(
            input_size, self.hidden_size, self.input_mlp, self.transition_depth, self.shortcut, self.activation
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        hidden, state = self.run_layers(x, lengths, state)
        for layer in self.output_mlp:
            hidden = self.activation(layer(hidden))
        return self.readout(hidden), state
