"""What every recurrent model shares: the model interface (CONTRIBUTING.md, 'The model interface'), stacking,
directions and readout.

forward(x, lengths=None, state=None) -> (outputs, state)
    x:        [batch, time, input_size]
    lengths:  [batch] valid steps per sequence (padding at the end), or None for all steps valid
    outputs:  [batch, time, output_size]; outputs at padded steps are the readout of a zero hidden state
    state:    the family's carried state: a tensor [layers*directions, batch, ...] or a tuple of them
              (``None`` starts from the family's initial state). Sequences shorter than the batch keep the
              state of their last valid step.

A family is a :class:`RecurrentNetwork` subclass that builds one :class:`RecurrentCell` per layer and direction
(``make_cell``). Families that torch implements as a fused kernel (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) subclass
:class:`FusedRecurrentNetwork` instead, which runs the kernel and offers the hand-written cell on the same weights.

A :class:`RecurrenceHook` (``network.set_hook``) is the one way in from outside a family: the regularizers of
``rnnlab.training.regularizers`` use it to reach layer inputs, steps, per-layer outputs and the readout's input.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice, require_positive

IMPLEMENTATIONS = ("auto", "fused", "cell")
State = tuple[torch.Tensor, ...]


def valid_step_mask(lengths: torch.Tensor | None, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """Boolean [batch, time] mask, True where the step is inside the sequence."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence of ``x`` [batch, time, ...] within its own length; padding stays at the end."""
    if lengths is None:
        return x.flip(1)
    batch, steps = x.shape[:2]
    time = torch.arange(steps, device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(time < lengths, lengths - 1 - time, time)  # [batch, time]
    index = index.view(batch, steps, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def batch_column(keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``keep`` [B] viewed as [B, 1, ...] to broadcast against ``like`` [B, ...]."""
    return keep.view(-1, *[1] * (like.dim() - 1))


def kernel_result(outputs: torch.Tensor, states: State, mask: torch.Tensor | None) -> tuple[torch.Tensor, State]:
    """What ``RecurrentCell.run`` returns for a whole-sequence kernel that ran every step, padding included.

    outputs [B, T, ...]; states: each component [T + 1, B, ...] (entry 0 the initial state); mask [B, T] a prefix
    (padding at the end) or None. Steps past a sequence's length never reach its valid steps, so the state after its
    last valid step is picked out and padded outputs are zeroed.
    """
    if mask is None or bool(mask.all()):
        return outputs, tuple(s[-1] for s in states)
    lengths = mask.sum(1)
    batch = torch.arange(lengths.shape[0], device=lengths.device)
    final = tuple(s[lengths, batch] for s in states)
    return outputs.masked_fill(~mask.view(*mask.shape, *[1] * (outputs.dim() - 2)), 0.0), final


class RecurrenceHook:
    """Changes what a :class:`RecurrentNetwork` computes, from outside its family; every method here is the identity.

    Installed with ``network.set_hook(hook)``. While ``active(network)`` is true, the network runs its hand-written
    cells (never a fused kernel) and ``run_layers`` calls, in order:

      begin(network, x, lengths)                       once per forward, x [B, T, input_size]
      layer_input(x, layer) -> x                       [B, T, F]: what layer ``layer`` reads (all its directions)
      step(cell, index, step, projected, state, t)     only when ``per_step``: one step of cell ``index`` (its
                                                       position in ``direction_cells()``); returns the new state,
                                                       by default ``step(projected, state, t)``; cells then loop
                                                       over time in Python (RecurrentCell.run)
      cell_output(outputs, index, mask)                outputs [B, T, H] of cell ``index`` in its reading order
                                                       (a backward cell's are time-reversed), mask [B, T] valid steps
      readout_input(hidden) -> hidden                  [B, T, F]: what the readout (or a family's output layers) reads
    """

    per_step = False

    def active(self, network: "RecurrentNetwork") -> bool:
        return True

    def begin(self, network: "RecurrentNetwork", x: torch.Tensor, lengths: torch.Tensor | None) -> None:
        pass

    def layer_input(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        return x

    def step(self, cell: "RecurrentCell", index: int, step, projected: torch.Tensor, state: "State", t: int) -> "State":
        return step(projected, state, t)

    def cell_output(self, outputs: torch.Tensor, index: int, mask: torch.Tensor) -> None:
        pass

    def readout_input(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class RecurrentCell(nn.Module):
    """One direction of one layer: ``project`` the inputs of all steps at once, then ``step`` through time.

    ``step`` returns the new state tuple; ``output(state)`` is what the layer emits at that step (default
    ``state[0]``, of size ``output_size``, default ``hidden_size``). ``step_hook`` (set by the network for the
    duration of one ``run`` while a per-step :class:`RecurrenceHook` is active) wraps every call of ``step``; a
    subclass that overrides ``run`` must step through ``RecurrentCell.run`` whenever it is set.
    """

    hidden_size: int
    step_hook = None  # (step, projected, state, t) -> state

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The input-dependent part of every step, [B, T, ...], computed before the loop (CONTRIBUTING.md,
        'Speed rules')."""
        return x

    def initial_state(self, batch: int, reference: torch.Tensor) -> State:
        return (reference.new_zeros(batch, self.hidden_size),)

    def step(self, projected: torch.Tensor, state: State, t: int) -> State:
        raise NotImplementedError

    def output(self, state: State) -> torch.Tensor:
        return state[0]

    def run(self, x: torch.Tensor, mask: torch.Tensor | None, state: State) -> tuple[torch.Tensor, State]:
        """Run over [B, T, in]; steps where ``mask`` [B, T] is False keep the state and emit zeros (None: all valid).

        The projection is split into per-step views once (``unbind``): indexing ``projected[:, t]`` inside the loop
        would make autograd scatter each step's gradient into a full [B, T, ...] buffer, O(T^2) in backward.
        """
        projected = self.project(x).unbind(1)
        step = self.step if self.step_hook is None else partial(self.step_hook, self.step)
        outputs = []
        if mask is None or bool(mask.all()):
            for t, projected_t in enumerate(projected):
                state = step(projected_t, state, t)
                outputs.append(self.output(state))
            return torch.stack(outputs, dim=1), state
        for t, (projected_t, keep) in enumerate(zip(projected, mask.unbind(1))):
            new_state = step(projected_t, state, t)
            state = tuple(torch.where(batch_column(keep, new), new, old) for new, old in zip(new_state, state))
            output = self.output(state)
            outputs.append(torch.where(batch_column(keep, output), output, 0.0))
        return torch.stack(outputs, dim=1), state


class RecurrentNetwork(nn.Module):
    """A stack of recurrent layers, optionally bidirectional (survey eqs. 29-31), and a linear readout.

    Layer l > 0 reads the concatenated directions of layer l - 1, after ``dropout`` (Zaremba et al. 2014), plus the
    layer's own input when ``residual`` is true and the sizes match. The backward direction reads each sequence
    reversed within its own length, so padding never reaches a valid step.
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
    ):
        super().__init__()
        require_positive(input_size=input_size, output_size=output_size, hidden_size=hidden_size, num_layers=num_layers)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {dropout!r}")
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout
        self.residual = residual
        self.cells = nn.ModuleList()
        layer_input = input_size
        for layer in range(num_layers):
            layer_cells = [self.make_cell(layer_input, layer, direction) for direction in range(self.num_directions)]
            self.cells.extend(layer_cells)
            layer_input = sum(cell.output_size for cell in layer_cells)
        self.readout = nn.Linear(layer_input, output_size)
        self.hook: RecurrenceHook | None = None

    def make_cell(self, input_size: int, layer: int, direction: int) -> RecurrentCell:
        """The cell of one layer and direction (0 forward, 1 backward) reading ``input_size`` features."""
        raise NotImplementedError

    def set_hook(self, hook: RecurrenceHook | None) -> None:
        """Install ``hook`` (see :class:`RecurrenceHook`; None removes it)."""
        self.hook = hook

    def active_hook(self) -> RecurrenceHook | None:
        return self.hook if self.hook is not None and self.hook.active(self) else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        hidden, state = self.run_layers(x, lengths, state)
        return self.readout(hidden), state

    def direction_cells(self) -> list[RecurrentCell]:
        """The cells in (layer, direction) order; state index i belongs to cell i."""
        return list(self.cells)

    def run_layers(self, x: torch.Tensor, lengths: torch.Tensor | None, state):
        batch, steps, _ = x.shape
        mask = valid_step_mask(lengths, batch, steps, x.device)
        cells = self.direction_cells()
        if state is None:
            initial = [cell.initial_state(batch, x) for cell in cells]
        else:
            components = state if isinstance(state, tuple) else (state,)
            initial = [tuple(c[i] for c in components) for i in range(len(cells))]
        final = []
        layer_input = x
        hook = self.active_hook()
        if hook is not None:
            hook.begin(self, x, lengths)
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, self.dropout, self.training)
            if hook is not None:
                layer_input = hook.layer_input(layer_input, layer)
            directions = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                seq = reverse_padded(layer_input, lengths) if direction else layer_input
                cell = cells[index]
                cell.step_hook = partial(hook.step, cell, index) if hook is not None and hook.per_step else None
                try:
                    out, last = cell.run(seq, mask, initial[index])
                finally:
                    cell.step_hook = None
                if hook is not None:
                    hook.cell_output(out, index, mask)
                directions.append(reverse_padded(out, lengths) if direction else out)
                final.append(last)
            output = torch.cat(directions, dim=-1)
            if self.residual and layer > 0 and output.shape == layer_input.shape:
                output = output + layer_input
            layer_input = output
        if hook is not None:
            layer_input = hook.readout_input(layer_input)
        stacked = tuple(torch.stack(component) for component in zip(*final))
        return layer_input, stacked if len(stacked) > 1 else stacked[0]


class _TorchWeightsCell(RecurrentCell):
    """A hand-written cell that reads its weights from one layer/direction of a fused ``nn.RNNBase``.

    Not registered as a submodule: the parameters belong to the fused module, so both paths share them.
    """

    def __init__(self, network: "FusedRecurrentNetwork", suffix: str):
        super().__init__()
        self.__dict__["network"] = network  # plain attribute, not a child module
        self.suffix = suffix
        self.hidden_size = network.hidden_size

    def weight(self, name: str) -> torch.Tensor:
        return getattr(self.network.rnn, name + self.suffix)

    def project(self, x):
        return nn.functional.linear(x, self.weight("weight_ih"), self.weight("bias_ih"))

    def initial_state(self, batch, reference):
        zeros = reference.new_zeros(batch, self.hidden_size)
        return (zeros,) * self.network.state_tensors

    def step(self, projected, state, t):
        return self.network.cell_step(projected, state, self.weight("weight_hh"), self.weight("bias_hh"))


class _SequenceKernelCell(_TorchWeightsCell):
    """A ``_TorchWeightsCell`` whose ``run`` hands the whole sequence to the network's ``cell_sequence`` (one autograd
    node, ``rnnlab.models.kernels``) instead of stepping ``cell_step`` in Python; ``step`` is unchanged.

    The kernel runs every step, padding included: padding is at the end, so steps past a sequence's length never
    reach its valid steps; the state after its last valid step is picked out and padded outputs are zeroed. Under
    autocast (mixed precision), or with a ``step_hook``, the step loop runs instead, as the kernel computes in one
    dtype and never calls ``step``.
    """

    def run(self, x, mask, state):
        if torch.is_autocast_enabled(x.device.type) or self.step_hook is not None:
            return super().run(x, mask, state)
        projected = self.project(x.transpose(0, 1))  # time-major [T, B, ...]: each step's slice is contiguous
        states = self.network.cell_sequence(projected, state, self.weight("weight_hh"), self.weight("bias_hh"))
        outputs = self.output(tuple(s[1:] for s in states)).transpose(0, 1)  # [B, T, H]
        return kernel_result(outputs, states, mask)


class FusedRecurrentNetwork(RecurrentNetwork):
    """A family torch implements as a fused kernel (``fused_class``), plus the same math as a hand-written cell.

    ``implementation``: ``fused`` runs the kernel, ``cell`` the hand-written loop on the same parameters, ``auto``
    the kernel whenever the settings allow it and no :class:`RecurrenceHook` is active (the kernel cannot host one).
    Subclasses implement ``cell_step``.
    """

    fused_class: type[nn.RNNBase]
    state_tensors: int = 1  # 1: h; 2: (h, c)
    # Optional whole-sequence form of ``cell_step``, (x_projected [T, B, ...], state, weight_hh, bias_hh) -> every
    # state tuple component as [T + 1, B, ...] (entry 0 the initial state); the cell path then runs it in one call.
    cell_sequence = None

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        residual: bool = False,
        implementation: str = "auto",
        **fused_kwargs,
    ):
        require_choice("implementation", implementation, IMPLEMENTATIONS)
        super().__init__(input_size, output_size, hidden_size, num_layers, bidirectional, dropout, residual)
        self.rnn = self.fused_class(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
            **fused_kwargs,
        )
        self.implementation = implementation
        self.use_fused = self.resolve_implementation(implementation)

    def make_cell(self, input_size: int, layer: int, direction: int) -> RecurrentCell:
        cell_class = _TorchWeightsCell if self.cell_sequence is None else _SequenceKernelCell
        return cell_class(self, f"_l{layer}" + ("_reverse" if direction else ""))

    def fused_supported(self) -> bool:
        return not self.residual

    def resolve_implementation(self, implementation: str) -> bool:
        if implementation == "fused" and not self.fused_supported():
            raise ConfigError("implementation", "fused is not available for these settings; use cell or auto")
        return implementation == "fused" or (implementation == "auto" and self.fused_supported())

    def cell_step(self, x_projected: torch.Tensor, state: State, weight_hh, bias_hh) -> State:
        """One step of the recurrence given the precomputed input projection; returns the new state tuple."""
        raise NotImplementedError

    def run_layers(self, x, lengths, state):
        """The fused kernel, with the cheapest exact treatment of ``lengths`` (CONTRIBUTING.md, 'Speed rules'): none
        when every sequence fills the batch; for a unidirectional network, the padded batch in segments
        (``run_segments``); packing only for a bidirectional one, whose backward direction must start at each sequence's
        own end."""
        if not self.use_fused or self.active_hook() is not None:
            return super().run_layers(x, lengths, state)
        if lengths is None or bool((lengths == x.shape[1]).all()):
            return self.rnn(x, state)
        if self.num_directions == 1:
            return self.run_segments(x, lengths, state)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, state = self.rnn(packed, state)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=x.shape[1])
        return hidden, state

    def run_segments(self, x: torch.Tensor, lengths: torch.Tensor, state):
        """Run the kernel unpacked over the padded batch, one call per segment of time that ends at one of the
        batch's distinct lengths, and keep each sequence's state from the call that ends at its length.

        Padding is at the end, so steps past a sequence's length never reach its valid steps; their outputs are
        zeroed. On a CPU this costs what the padded batch costs plus one kernel call per distinct length, where
        packing costs 2-6x (``rnnlab-bench --loop``; length-bucketed batches, ``data.bucket``, cut the calls).
        """
        lengths = lengths.to(x.device)
        outputs, final, start = [], None, 0
        for end in torch.unique(lengths).tolist():
            hidden, state = self.rnn(x[:, start:end], state)
            outputs.append(hidden)
            ends_here = (lengths == end).view(1, -1, 1)
            tensors = state if isinstance(state, tuple) else (state,)
            final = tensors if final is None else tuple(torch.where(ends_here, s, f) for s, f in zip(tensors, final))
            start = end
        if start < x.shape[1]:  # time steps past the longest sequence
            outputs.append(x.new_zeros(x.shape[0], x.shape[1] - start, self.hidden_size * self.num_directions))
        hidden = torch.cat(outputs, dim=1)
        hidden = hidden.masked_fill(~valid_step_mask(lengths, *x.shape[:2], x.device).unsqueeze(-1), 0.0)
        return hidden, final if isinstance(state, tuple) else final[0]
