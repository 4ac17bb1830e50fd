"""The regularizers that act inside the recurrence, through the network's
:class:`~rnnlab.models.base.RecurrenceHook`: :class:`Dropout`, :class:`RNNDrop`, :class:`Variational`,
:class:`Zoneout` and :class:`NormStabilizer`, chained by :class:`_HookChain`. Listed, with those on the weights, in
:mod:`rnnlab.training.regularizers`."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from rnnlab.errors import ConfigError
from rnnlab.models.base import (
    FusedRecurrentNetwork,
    RecurrenceHook,
    RecurrentCell,
    RecurrentNetwork,
    State,
    _TorchWeightsCell,
)
from rnnlab.training.weight_regularizers import Regularizer, keep_mask, require_probability


def is_memory(state: State, k: int) -> bool:
    """Whether state tensor ``k`` is a real or complex activation (a step counter, e.g. the clockwork clock, is not)."""
    return k < len(state) and (state[k].is_floating_point() or state[k].is_complex())


class _HookRegularizer(Regularizer, RecurrenceHook):
    """A regularizer acting inside a :class:`RecurrentNetwork` through its hook; off at eval time unless it says.

    ``step_order`` places its ``step`` in a chain of several: lower runs nearer the cell's own step.
    """

    step_order = 0

    def attach(self, model, name):
        super().attach(model, name)
        self.model_name = type(model).__name__
        if not isinstance(model, RecurrentNetwork):
            raise ConfigError(
                f"regularizer.{name}",
                f"model {self.model_name} is not a rnnlab RecurrentNetwork, so {name} cannot reach inside its "
                "recurrence; l1, l2 and weight_drop work with any model",
                full=True,
            )
        if isinstance(model, FusedRecurrentNetwork) and model.implementation == "fused":
            raise ConfigError(
                f"regularizer.{name}",
                f"model {self.model_name} has implementation=fused, whose kernel cannot host {name}; "
                "use implementation=auto or cell (the hand-written cell on the same weights)",
                full=True,
            )

    def active(self, network):
        return network.training

    def begin(self, network, x, lengths):
        self.training = network.training


class Dropout(_HookRegularizer):
    """Dropout on the non-recurrent connections only (Zaremba et al. 2014; survey Fig. 14): a new mask per element
    and step on the input of every layer (layer 0: the data) and on the output to the readout; the recurrent
    connection h_{t-1} -> h_t is never dropped. Adds to the model's own ``dropout`` (between layers) if both are set.
    """

    def __init__(self, p: float = 0.5):
        require_probability("p", p)
        self.p = p

    def layer_input(self, x, layer):
        return nn.functional.dropout(x, self.p, training=True)

    def readout_input(self, hidden):
        return nn.functional.dropout(hidden, self.p, training=True)


class RNNDrop(_HookRegularizer):
    """RNNDrop (Moon et al. 2015): one dropout mask per sequence, the same at every step, on the memory: the cell state
    c_t of a family that carries one (the second state tensor, if real: LSTM, scrn, drnn), else the hidden state h_t.

    m is Bernoulli(1 - p) in {0, 1}, not rescaled: the mask multiplies the carried state at every step, so an inverted
    dropout scale 1 / (1 - p) would compound to (1 - p)^-t; kept units run exactly as in the plain cell and dropped
    ones stay 0 for the whole sequence (Semeniuta et al. 2016, section 3, discuss this scaling). The mask multiplies the
    state the step returns, so the next step reads m * c_t. For an LSTM the h_t emitted at that step,
    o_t * tanh(c_t), is computed inside the step from the unmasked c_t (Moon et al. mask c_t before the output
    nonlinearity; the hook sees only the step's result). A new mask per batch (with stateful data: per segment).
    """

    per_step = True
    step_order = 2

    def __init__(self, p: float = 0.25):
        require_probability("p", p)
        self.p = p
        self.masks: dict[int, torch.Tensor] = {}

    def begin(self, network, x, lengths):
        super().begin(network, x, lengths)
        self.masks = {}

    def step(self, cell, index, step, projected, state, t):
        new = step(projected, state, t)
        k = 1 if is_memory(new, 1) else 0
        if index not in self.masks:
            self.masks[index] = keep_mask(new[k], self.p, rescale=False)
        return (*new[:k], new[k] * self.masks[index], *new[k + 1 :])


class Variational(_HookRegularizer):
    """Variational dropout (Gal & Ghahramani 2016, tied weights): one mask per sequence, the same at every step, on
    each layer's input x_t (``p_input``) and on the recurrent input h_{t-1} (``p_hidden``), per layer and direction.

    The hidden mask reaches h_{t-1} only where it enters the recurrent matrix product: for the fused families (elman,
    lstm, gru and presets) the step's product W_hh (m * h_{t-1}) + b_hh is computed here, so GRU's interpolation
    z_t * h_{t-1} keeps the true h_{t-1}; the LSTM's c_{t-1} is never masked. Other families get m * h_{t-1} as their
    state's first tensor, which is the same wherever h_{t-1} enters the step only through matrix products (LSTM
    variants, jordan, ...); where the step also carries h_{t-1} elementwise (leaky or gated updates), that term is
    masked too. A new mask per batch (with stateful data: per segment).
    """

    step_order = 0

    def __init__(self, p_input: float = 0.25, p_hidden: float = 0.25):
        require_probability("p_input", p_input)
        require_probability("p_hidden", p_hidden)
        self.p_input = p_input
        self.p_hidden = p_hidden
        self.per_step = p_hidden > 0
        self.masks: dict[int, torch.Tensor] = {}
        self.zero_weights: dict[int, torch.Tensor] = {}

    def begin(self, network, x, lengths):
        super().begin(network, x, lengths)
        self.masks, self.zero_weights = {}, {}

    def layer_input(self, x, layer):
        if self.p_input == 0:
            return x
        return x * keep_mask(x, self.p_input, (x.shape[0], 1, *x.shape[2:]))

    def step(self, cell, index, step, projected, state, t):
        h = state[0]
        if index not in self.masks:
            self.masks[index] = keep_mask(h, self.p_hidden)
        masked = h * self.masks[index]
        if getattr(step, "__func__", None) is _TorchWeightsCell.step:
            # cell_step meets h_{t-1} through linear(h, weight_hh, bias_hh) and elementwise terms; a zero weight_hh and
            # the masked product as a per-sequence bias ([B, G*H]) mask the product and nothing else.
            weight_hh = cell.weight("weight_hh")
            recurrent = nn.functional.linear(masked, weight_hh, cell.weight("bias_hh"))
            if index not in self.zero_weights:
                self.zero_weights[index] = torch.zeros_like(weight_hh)
            return cell.network.cell_step(projected, state, self.zero_weights[index], recurrent)
        return step(projected, (masked, *state[1:]), t)


class Zoneout(_HookRegularizer):
    """Zoneout (Krueger et al. 2017; survey eq. 58): each unit keeps its previous value with probability p, per unit
    and step,

        h_t = d_t * h_{t-1} + (1 - d_t) * h~_t,    d_t ~ Bernoulli(p)

    where h~_t is the cell's own update. (Survey eq. 58 prints 1 where h_{t-1} is meant.) At eval time the
    expectation p * h_{t-1} + (1 - p) * h~_t. ``p`` applies to the first state tensor (h_t), ``p_cell`` (default
    ``p``) to the second where the family carries a real one (the LSTM's c_t; Krueger et al. zone c and h at
    separate rates); further state tensors, and counters such as the clockwork clock, follow the cell. p = 0 is the
    plain model; p = 1 never updates the state.
    """

    per_step = True
    step_order = 1

    def __init__(self, p: float = 0.1, p_cell: float | None = None):
        require_probability("p", p, allow_one=True)
        if p_cell is not None:
            require_probability("p_cell", p_cell, allow_one=True)
        self.p = p
        self.p_cell = p if p_cell is None else p_cell

    def active(self, network):
        return True  # eval uses the expectation

    def step(self, cell, index, step, projected, state, t):
        new = step(projected, state, t)
        zoned = []
        for k, (update, previous) in enumerate(zip(new, state)):
            if k > 1 or not is_memory(new, k):
                zoned.append(update)
                continue
            p = self.p if k == 0 else self.p_cell
            if self.training:
                keep = torch.empty(update.shape, device=update.device).bernoulli_(p).bool()
                zoned.append(torch.where(keep, previous, update))
            else:
                zoned.append(p * previous + (1 - p) * update)
        return tuple(zoned)


class NormStabilizer(_HookRegularizer):
    """Norm stabilizer (Krueger & Memisevic 2016; survey eq. 57): beta * mean_t (||h_t||_2 - ||h_{t-1}||_2)^2.

    h_t is what each layer and direction emits at step t (``cell.output``, e.g. the LSTM's h_t); the mean runs over
    the T - 1 consecutive pairs of valid steps of every sequence in the batch (pairs in reading order; the initial
    state is not included), and the terms of all layers and directions are summed. Reads the hidden states of the
    latest training forward (recorded only with gradients on), so the model runs its hand-written cells.
    """

    def __init__(self, beta: float = 1.0):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
            raise ConfigError("beta", f"must be a number >= 0, got {beta!r}")
        self.beta = beta
        self.outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def active(self, network):
        return network.training and torch.is_grad_enabled()

    def begin(self, network, x, lengths):
        super().begin(network, x, lengths)
        self.outputs = []

    def cell_output(self, outputs, index, mask):
        self.outputs.append((outputs, mask))

    def penalty(self, module):
        if not self.outputs:
            return None
        total = 0.0
        for outputs, mask in self.outputs:
            norms = torch.linalg.vector_norm(outputs, dim=-1)  # [B, T]
            pairs = mask[:, 1:] & mask[:, :-1]
            squared = (norms[:, 1:] - norms[:, :-1]).square()
            total = total + torch.where(pairs, squared, 0.0).sum() / pairs.sum().clamp(min=1)
        self.outputs = []
        return self.beta * total


class _HookChain(RecurrenceHook):
    """Several hook regularizers as one network hook: inputs and readout inputs pass through each in turn; the step
    runs through every per-step one, the lowest ``step_order`` nearest the cell's own step."""

    def __init__(self, hooks: list[_HookRegularizer]):
        self.hooks = sorted(hooks, key=lambda hook: hook.step_order)
        self.live: list[_HookRegularizer] = []
        self.stepping: list[_HookRegularizer] = []
        self.stepped: set[int] = set()

    @property
    def per_step(self) -> bool:
        return bool(self.stepping)

    def active(self, network):
        return any(hook.active(network) for hook in self.hooks)

    def begin(self, network, x, lengths):
        self.live = [hook for hook in self.hooks if hook.active(network)]
        self.stepping = [hook for hook in self.live if hook.per_step]
        self.stepped = set()
        for hook in self.live:
            hook.begin(network, x, lengths)

    def layer_input(self, x, layer):
        for hook in self.live:
            x = hook.layer_input(x, layer)
        return x

    def step(self, cell: RecurrentCell, index: int, step, projected: torch.Tensor, state: State, t: int) -> State:
        self.stepped.add(index)
        for hook in self.stepping:
            step = partial(hook.step, cell, index, step)
        return step(projected, state, t)

    def cell_output(self, outputs, index, mask):
        if self.stepping and index not in self.stepped:
            names = ", ".join(hook.name for hook in self.stepping)
            raise ConfigError(
                f"regularizer.{self.stepping[0].name}",
                f"model {self.stepping[0].model_name} runs cell {index} without RecurrentCell.step, so {names} "
                "cannot act at its steps",
                full=True,
            )
        for hook in self.live:
            hook.cell_output(outputs, index, mask)

    def readout_input(self, hidden):
        for hook in self.live:
            hidden = hook.readout_input(hidden)
        return hidden
