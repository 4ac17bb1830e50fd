"""What every recurrent model shares: the interface of GUIDE.md section 2, stacking, directions and readout.

forward(x, lengths=None, state=None) -> (outputs, state)
    x:        [batch, time, input_size]
    lengths:  [batch] valid steps per sequence (padding at the end), or None for all steps valid
    outputs:  [batch, time, output_size]; outputs at padded steps are the readout of a zero hidden state
    state:    the family's carried state (``None`` starts from zeros)
"""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice, require_positive

IMPLEMENTATIONS = ("auto", "fused", "cell")


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


class RecurrentNetwork(nn.Module):
    """A stack of recurrent layers (optionally bidirectional, survey eqs. 29-31) and a linear readout.

    A subclass provides the recurrence in two forms that compute the same function:
    ``fused`` (one of torch's cuDNN/MKL kernels, ``self.rnn``) and ``cell`` (a hand-written step, ``cell_step``,
    reading the same parameters). The cell path projects the inputs of all steps in one matrix product and loops
    only over the recurrent part (GUIDE.md section 6).
    """

    fused_class: type[nn.RNNBase]
    state_tensors: int = 1  # 1: h only; 2: (h, c)

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        implementation: str = "auto",
        **fused_kwargs,
    ):
        super().__init__()
        require_positive(input_size=input_size, output_size=output_size, hidden_size=hidden_size, num_layers=num_layers)
        require_choice("implementation", implementation, IMPLEMENTATIONS)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {dropout!r}")
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout
        self.rnn = self.fused_class(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
            **fused_kwargs,
        )
        self.use_fused = self.resolve_implementation(implementation)
        self.readout = nn.Linear(hidden_size * self.num_directions, output_size)

    def resolve_implementation(self, implementation: str) -> bool:
        """True for the fused kernel. ``auto`` picks it whenever the math allows."""
        if implementation == "fused" and not self.fused_supported():
            raise ConfigError("implementation", "fused is not available for these settings; use cell or auto")
        return implementation == "fused" or (implementation == "auto" and self.fused_supported())

    def fused_supported(self) -> bool:
        return True

    def cell_step(self, x_projected: torch.Tensor, state: tuple[torch.Tensor, ...], weight_hh, bias_hh):
        """One step of the recurrence given the precomputed input projection; returns the new state tuple."""
        raise NotImplementedError

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        if self.use_fused:
            hidden, state = self._forward_fused(x, lengths, state)
        else:
            hidden, state = self._forward_cells(x, lengths, state)
        return self.readout(hidden), state

    def _forward_fused(self, x, lengths, state):
        if lengths is None:
            return self.rnn(x, state)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, state = self.rnn(packed, state)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=x.shape[1])
        return hidden, state

    def _initial_state(self, x: torch.Tensor, state):
        if state is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, x.shape[0], self.hidden_size)
            return (zeros,) * self.state_tensors
        return state if isinstance(state, tuple) else (state,)

    def _forward_cells(self, x, lengths, state):
        batch, steps, _ = x.shape
        mask = valid_step_mask(lengths, batch, steps, x.device)
        initial = self._initial_state(x, state)
        final = [[] for _ in range(self.state_tensors)]
        layer_input = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, self.dropout, self.training)
            directions = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                seq = reverse_padded(layer_input, lengths) if direction else layer_input
                out, last = self._run_direction(seq, mask, tuple(s[index] for s in initial), suffix)
                directions.append(reverse_padded(out, lengths) if direction else out)
                for store, value in zip(final, last):
                    store.append(value)
            layer_input = torch.cat(directions, dim=-1)
        final_state = tuple(torch.stack(s) for s in final)
        return layer_input, final_state if self.state_tensors > 1 else final_state[0]

    def _run_direction(self, seq, mask, state, suffix):
        weight_ih = getattr(self.rnn, "weight_ih" + suffix)
        weight_hh = getattr(self.rnn, "weight_hh" + suffix)
        bias_ih = getattr(self.rnn, "bias_ih" + suffix)
        bias_hh = getattr(self.rnn, "bias_hh" + suffix)
        projected = nn.functional.linear(seq, weight_ih, bias_ih)  # all steps in one product
        outputs = []
        for t in range(seq.shape[1]):
            new_state = self.cell_step(projected[:, t], state, weight_hh, bias_hh)
            keep = mask[:, t, None]
            state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state))
            outputs.append(state[0] * keep)
        return torch.stack(outputs, dim=1), state
