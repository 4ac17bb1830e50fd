"""The whole-sequence LSTM/GRU kernels: hand-written backward against autograd, kernel against the step loop."""

from __future__ import annotations

import pytest
import torch

from rnnlab.models.base import RecurrentCell, _SequenceKernelCell
from rnnlab.models.gated import GRU, LSTM
from rnnlab.models.kernels import GRUSequence, LSTMSequence

B, T, IN, H = 3, 5, 4, 3


def double(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def test_lstm_backward_matches_finite_differences():
    inputs = (double(T, B, 4 * H), double(B, H), double(B, H), double(4 * H, H), double(4 * H))
    assert torch.autograd.gradcheck(LSTMSequence.apply, inputs)


def test_gru_backward_matches_finite_differences():
    inputs = (double(T, B, 3 * H), double(B, H), double(3 * H, H), double(3 * H))
    assert torch.autograd.gradcheck(GRUSequence.apply, inputs)


def test_lstm_kernel_states_follow_cell_step():
    torch.manual_seed(0)
    model = LSTM(IN, 2, hidden_size=H, implementation="cell")
    weight_hh, bias_hh = model.rnn.weight_hh_l0, model.rnn.bias_hh_l0
    projected = torch.randn(T, B, 4 * H)  # time-major
    state = (torch.randn(B, H), torch.randn(B, H))
    hs, cs = model.cell_sequence(projected, state, weight_hh, bias_hh)
    assert hs.shape == cs.shape == (T + 1, B, H)
    torch.testing.assert_close((hs[0], cs[0]), state)
    for t in range(T):
        state = model.cell_step(projected[t], state, weight_hh, bias_hh)
        torch.testing.assert_close((hs[t + 1], cs[t + 1]), state)


def run_both(model, x, lengths, state, monkeypatch, state_in_loss=True):
    """Outputs, final state and parameter gradients with the kernel, then with the step loop of the same cells."""
    results = []
    for run in (_SequenceKernelCell.run, RecurrentCell.run):
        monkeypatch.setattr(_SequenceKernelCell, "run", run)
        model.zero_grad()
        outputs, final = model(x, lengths, state)
        final = final if isinstance(final, tuple) else (final,)
        weights = [torch.linspace(-1, 1, f.numel()).view(f.shape) for f in final]  # every state entry gets a gradient
        loss = outputs.square().sum()
        if state_in_loss:
            loss = loss + sum((f * w).sum() for f, w in zip(final, weights))
        loss.backward()
        results.append([outputs, *final, *(p.grad.clone() for p in model.parameters())])
    return results


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
@pytest.mark.parametrize("state_in_loss", [False, True], ids=["outputs_loss", "state_loss"])
def test_kernel_equals_step_loop_with_lengths_bidirectional_two_layers(cls, carried, state_in_loss, monkeypatch):
    torch.manual_seed(0)
    model = cls(IN, 2, hidden_size=H, num_layers=2, bidirectional=True, implementation="cell")
    assert all(isinstance(cell, _SequenceKernelCell) for cell in model.direction_cells())
    x = torch.randn(B + 1, T, IN)
    lengths = torch.tensor([T, 2, 0, 4])  # a zero length keeps the initial state
    state = None
    if carried:
        state = tuple(torch.randn(4, B + 1, H) for _ in range(model.state_tensors))
        state = state if len(state) > 1 else state[0]
    kernel, loop = run_both(model, x, lengths, state, monkeypatch, state_in_loss)
    for a, b in zip(kernel, loop):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kernel[0][2], model.readout.bias.expand(T, 2))  # empty: readout of zero hidden


def test_variant_cells_keep_the_step_loop():
    model = LSTM(IN, 2, hidden_size=H, peepholes=True)
    assert not any(isinstance(cell, _SequenceKernelCell) for cell in model.direction_cells())
