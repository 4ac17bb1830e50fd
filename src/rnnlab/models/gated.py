"""Gated recurrent families: LSTM (survey eqs. 32-38) with the variants of Greff et al. 2017, and GRU (eqs. 47-50)."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice
from rnnlab.models.base import FusedRecurrentNetwork, RecurrentCell, State, _TorchWeightsCell
from rnnlab.models.kernels import gru_sequence, lstm_sequence

# Greff et al. 2017, "LSTM: A Search Space Odyssey", section 3: each variant changes one thing of the LSTM.
LSTM_VARIANTS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")
LSTM_GATES = "ifgo"  # nn.LSTM's row order of the stacked gate weights
# The gates whose weights a variant drops (CIFG computes f_t = 1 - i_t, so it has no forget-gate weights).
DROPPED_GATES = {"nig": "i", "nfg": "f", "nog": "o", "cifg": "f"}


class LSTM(FusedRecurrentNetwork):
    """Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate Gers et al. 2000; survey IV.F).

        i_t = sigma(W_xi x_t + W_hi h_{t-1} [+ p_i * c_{t-1}] + b_i)      (eq. 32)
        f_t = sigma(W_xf x_t + W_hf h_{t-1} [+ p_f * c_{t-1}] + b_f)      (eq. 33)
        g_t = tanh(W_xc x_t + W_hc h_{t-1} + b_c)
        c_t = f_t * c_{t-1} + i_t * g_t                                   (eq. 34)
        o_t = sigma(W_xo x_t + W_ho h_{t-1} [+ p_o * c_t] + b_o)          (eq. 35)
        h_t = o_t * tanh(c_t)                                             (eq. 36)

    Stacking (eqs. 37-38) is ``num_layers``. Weights are those of ``nn.LSTM`` (gate order i, f, g, o). The default
    (no peepholes, forget gate, ``variant: vanilla``) is exactly ``nn.LSTM``: the fused kernel and the hand-written
    cell compute the same function. Shapes as in ``rnnlab.models.base``; state (h, c), each [layers*dirs, B, H].

    Options the fused kernel cannot express run the hand-written cell (``implementation: auto`` picks it; ``fused``
    raises ConfigError):

    * ``peepholes``: the bracketed terms, with per-unit vectors p_i, p_f, p_o of size H per layer and direction
      (a gate that a variant removes has no peephole).
    * ``forget_gate: false``: the original LSTM of Hochreiter & Schmidhuber 1997, c_t = c_{t-1} + i_t * g_t
      (identical to variant ``nfg``).
    * ``variant``, one change each (Greff et al. 2017): ``nig`` i_t = 1; ``nfg`` f_t = 1; ``nog`` o_t = 1;
      ``niaf`` g_t without tanh; ``noaf`` h_t = o_t * c_t; ``cifg`` f_t = 1 - i_t; ``fgr`` every gate also reads
      all gates' previous activations, i.e. R_a [i_{t-1}; f_{t-1}; o_{t-1}] is added to each gate's pre-activation
      (one [3H, 3H] matrix per layer and direction; the state becomes (h, c, [i; f; o]) with the last [.., 3H]);
      ``np`` no peepholes. Greff's "vanilla" LSTM has peepholes; here the default does not (it is ``nn.LSTM``),
      so Greff's study is ``peepholes: true`` with every variant; ``np`` removes them (with ``peepholes: false``
      it is the same model as ``vanilla``).

    A variant that removes a gate (``nig``, ``nfg``, ``nog``, ``cifg``) has no weights for it: its layers hold
    :class:`GateRows`, ``nn.LSTM``'s parameters (same names) without that gate's rows, so parameter counts follow
    Greff et al. (3/4 of the gate weights) and ``param_budget`` matches every variant.
    """

    fused_class = nn.LSTM
    state_tensors = 2

    def __init__(
        self,
        input_size: int,
        output_size: int,
        peepholes: bool = False,
        forget_gate: bool = True,
        variant: str = "vanilla",
        **kwargs,
    ):
        require_choice("variant", variant, LSTM_VARIANTS)
        if not forget_gate and variant not in ("vanilla", "nfg"):
            raise ConfigError("forget_gate", f"false is variant nfg; it cannot be combined with variant {variant}")
        self.peepholes = peepholes and variant != "np"  # np's one change: the peepholes removed
        self.forget_gate = forget_gate and variant != "nfg"
        self.variant = "nfg" if variant == "vanilla" and not forget_gate else variant
        super().__init__(input_size, output_size, **kwargs)
        dropped = DROPPED_GATES.get(self.variant, "")
        if dropped:
            self.rnn = GateRows(self.rnn, LSTM_GATES.replace(dropped, ""))

    @property
    def plain(self) -> bool:
        """True when the settings are exactly ``nn.LSTM`` (no peepholes, all gates and activations)."""
        return self.variant in ("vanilla", "np") and not self.peepholes

    def fused_supported(self) -> bool:
        return super().fused_supported() and self.plain

    def make_cell(self, input_size: int, layer: int, direction: int) -> RecurrentCell:
        if self.plain:
            return super().make_cell(input_size, layer, direction)
        return _LSTMVariantCell(self, f"_l{layer}" + ("_reverse" if direction else ""))

    def cell_step(self, x_projected, state, weight_hh, bias_hh):
        h, c = state
        gates = x_projected + nn.functional.linear(h, weight_hh, bias_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def cell_sequence(self, x_projected, state, weight_hh, bias_hh):
        """``cell_step`` over all steps as one autograd node with a hand-written backward
        (``kernels.lstm_sequence``)."""
        return lstm_sequence(x_projected, *state, weight_hh, bias_hh)


class GateRows(nn.Module):
    """The per-layer weights of an ``nn.LSTM`` (same names, e.g. ``weight_hh_l0``) keeping only the rows of
    ``gate_order``'s gates, for the hand-written cell of a variant without some gate. It runs no kernel itself."""

    def __init__(self, lstm: nn.LSTM, gate_order: str):
        super().__init__()
        self.gate_order = gate_order
        size = lstm.hidden_size
        rows = torch.cat([torch.arange(k * size, (k + 1) * size) for k in map(LSTM_GATES.index, gate_order)])
        for name in lstm._flat_weights_names:
            self.register_parameter(name, nn.Parameter(getattr(lstm, name).detach()[rows].clone()))


class _LSTMVariantCell(_TorchWeightsCell):
    """The LSTM step with peepholes / Greff variants, on one layer/direction of the network's ``nn.LSTM`` weights.

    Owns the extra parameters of its layer and direction: ``peephole_i``, ``peephole_f``, ``peephole_o`` [H] and
    ``gate_recurrence`` [3H, 3H] (variant fgr), each ``None`` when unused.
    """

    def __init__(self, network: LSTM, suffix: str):
        super().__init__(network, suffix)
        variant, hidden = network.variant, network.hidden_size
        self.input_gate = variant != "nig"
        self.coupled = variant == "cifg"
        self.forget_gate = network.forget_gate and not self.coupled
        self.output_gate = variant != "nog"
        self.input_activation = variant != "niaf"
        self.output_activation = variant != "noaf"
        bound = hidden**-0.5  # nn.LSTM's initialisation range
        present = {"i": self.input_gate, "f": self.forget_gate, "o": self.output_gate}
        for gate, used in present.items():
            vector = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound)) if network.peepholes and used else None
            self.register_parameter(f"peephole_{gate}", vector)
        matrix = nn.Parameter(torch.empty(3 * hidden, 3 * hidden).uniform_(-bound, bound)) if variant == "fgr" else None
        self.register_parameter("gate_recurrence", matrix)

    def initial_state(self, batch, reference):
        zeros = reference.new_zeros(batch, self.hidden_size)
        if self.gate_recurrence is None:
            return zeros, zeros
        return zeros, zeros, reference.new_zeros(batch, 3 * self.hidden_size)

    @staticmethod
    def gate(pre: torch.Tensor, peephole: torch.Tensor | None, cell: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(pre if peephole is None else pre + peephole * cell)

    def step(self, projected: torch.Tensor, state: State, t: int) -> State:
        h, c = state[0], state[1]
        gates = projected + nn.functional.linear(h, self.weight("weight_hh"), self.weight("bias_hh"))
        order = getattr(self.network.rnn, "gate_order", LSTM_GATES)
        pre = dict(zip(order, gates.chunk(len(order), dim=-1)))
        pre_i, pre_f, pre_g, pre_o = (pre.get(gate) for gate in LSTM_GATES)
        if self.gate_recurrence is not None:
            rec_i, rec_f, rec_o = nn.functional.linear(state[2], self.gate_recurrence).chunk(3, dim=-1)
            pre_i, pre_f, pre_o = pre_i + rec_i, pre_f + rec_f, pre_o + rec_o
        i = self.gate(pre_i, self.peephole_i, c) if self.input_gate else 1.0
        if self.coupled:
            f = 1.0 - i
        else:
            f = self.gate(pre_f, self.peephole_f, c) if self.forget_gate else 1.0
        g = torch.tanh(pre_g) if self.input_activation else pre_g
        c = f * c + i * g
        o = self.gate(pre_o, self.peephole_o, c) if self.output_gate else 1.0
        h = o * (torch.tanh(c) if self.output_activation else c)
        if self.gate_recurrence is None:
            return h, c
        return h, c, torch.cat([i, f, o], dim=-1)


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

    def cell_sequence(self, x_projected, state, weight_hh, bias_hh):
        """``cell_step`` over all steps as one autograd node with a hand-written backward (``kernels.gru_sequence``)."""
        return gru_sequence(x_projected, *state, weight_hh, bias_hh)
