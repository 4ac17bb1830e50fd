"""How the fused families treat ``lengths`` (CONTRIBUTING.md, 'Speed rules'): no packing when every sequence fills the
batch, segments of the padded batch for unidirectional networks, packing only for bidirectional ones; each exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab.models.elman import Elman
from rnnlab.models.gated import GRU, LSTM

IN, H, OUT = 3, 5, 2
LENGTHS = torch.tensor([7, 3, 7, 1, 5])
FAMILIES = [(LSTM, {}), (GRU, {}), (Elman, {}), (LSTM, dict(num_layers=2)), (GRU, dict(num_layers=3))]


@pytest.fixture
def no_packing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the batch was packed")

    monkeypatch.setattr(nn.utils.rnn, "pack_padded_sequence", refuse)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cls,kwargs", FAMILIES)
def test_equal_lengths_run_the_kernel_unpacked(no_packing, cls, kwargs):
    torch.manual_seed(0)
    model = cls(IN, OUT, hidden_size=H, implementation="fused", **kwargs)
    x = torch.randn(4, 6, IN)
    out, state = model(x, torch.full((4,), 6))
    reference, reference_state = model(x)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    for a, b in zip(as_tuple(state), as_tuple(reference_state)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("cls,kwargs", FAMILIES)
def test_segments_equal_each_sequence_alone_with_gradients(no_packing, cls, kwargs):
    """Outputs at valid steps, zeros at padding, the state at each sequence's own length, and the gradients of a
    loss on all of them, equal running each sequence alone (from a nonzero carried state)."""
    torch.manual_seed(1)
    model = cls(IN, OUT, hidden_size=H, implementation="fused", **kwargs).double()
    x = torch.randn(len(LENGTHS), 8, IN, dtype=torch.double)  # one step past the longest sequence
    layers = model.num_layers
    initial = tuple(torch.randn(layers, len(LENGTHS), H, dtype=torch.double) for _ in as_tuple(model(x[:, :1])[1]))
    initial = initial if len(initial) > 1 else initial[0]

    def loss_of(outputs, state):
        return (outputs**2).sum() + sum((s**3).sum() for s in as_tuple(state))

    out, state = model(x, LENGTHS, state=initial)
    grads = torch.autograd.grad(loss_of(out, state), list(model.parameters()))
    padded = torch.arange(8)[None, :] >= LENGTHS[:, None]
    torch.testing.assert_close(out[padded], model.readout.bias.expand(int(padded.sum()), OUT))  # zero hidden
    total = [torch.zeros_like(g) for g in grads]
    for row, length in enumerate(LENGTHS.tolist()):
        row_state = tuple(s[:, row : row + 1] for s in as_tuple(initial))
        alone, alone_state = model(x[row : row + 1, :length], state=row_state if len(row_state) > 1 else row_state[0])
        torch.testing.assert_close(out[row : row + 1, :length], alone, rtol=0, atol=1e-12)
        for batch_part, alone_part in zip(as_tuple(state), as_tuple(alone_state)):
            torch.testing.assert_close(batch_part[:, row : row + 1], alone_part, rtol=0, atol=1e-12)
        row_loss = loss_of(alone, alone_state) + (model.readout.bias**2).sum() * (8 - length)  # padded outputs
        for t, g in zip(total, torch.autograd.grad(row_loss, list(model.parameters()))):
            t += g
    for g, expected in zip(grads, total):
        torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-10)


def test_padded_outputs_of_segments_and_packing_agree_for_bidirectional():
    """Bidirectional networks pack; their padded steps hold the readout of a zero hidden state like the segments'."""
    torch.manual_seed(2)
    model = LSTM(IN, OUT, hidden_size=H, bidirectional=True, implementation="fused")
    x = torch.randn(len(LENGTHS), 7, IN)
    out, _ = model(x, LENGTHS)
    torch.testing.assert_close(out[1, 3:], model.readout.bias.expand(4, OUT), rtol=0, atol=1e-6)
    for row, length in enumerate(LENGTHS.tolist()):
        alone, _ = model(x[row : row + 1, :length])
        torch.testing.assert_close(out[row, :length], alone[0], rtol=0, atol=1e-6)
