"""Clockwork RNN (Koutnik et al. 2014): frozen modules, slow-to-fast connectivity, steps by hand, learning."""

from __future__ import annotations

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.clockwork import ClockworkRNN, module_sizes
from zoo_checks import check_interface

IN, OUT = 3, 2


def hidden_states(model, x):
    """h_t of the first layer at every step, [B, T, H], from a fresh state."""
    cell = model.cells[0]
    with torch.no_grad():
        outputs, _ = cell.run(x, torch.ones(x.shape[:2], dtype=torch.bool), cell.initial_state(x.shape[0], x))
    return outputs


def test_modules_stay_frozen_between_their_periods():
    torch.manual_seed(0)
    model = ClockworkRNN(IN, OUT, hidden_size=7, modules=3)  # sizes 3, 2, 2; periods 1, 2, 4
    assert module_sizes(7, 3) == [3, 2, 2]
    periods = torch.tensor([1, 1, 1, 2, 2, 4, 4])
    torch.testing.assert_close(model.cells[0].unit_period, periods)
    h = hidden_states(model, torch.randn(4, 9, IN))
    for t in range(1, 9):
        changed = (h[:, t] != h[:, t - 1]).any(0)
        active = t % periods == 0
        assert not changed[~active].any(), t  # inactive modules keep their state exactly
        assert changed[active].all(), t  # active ones update (generic inputs)


def test_clock_counts_from_each_sequence_start_and_pauses_on_padding():
    model = ClockworkRNN(IN, OUT, hidden_size=4, modules=2)
    _, (_, clock) = model(torch.randn(3, 6, IN), torch.tensor([6, 3, 1]))
    assert clock[0].tolist() == [6, 3, 1]


def test_slow_modules_do_not_read_fast_ones():
    """W_H is block upper triangular: the slowest module's update ignores the faster modules' previous state."""
    torch.manual_seed(1)
    model = ClockworkRNN(IN, OUT, hidden_size=6, modules=3)  # 2 units each; periods 1, 2, 4
    x = torch.randn(2, 1, IN)
    h0 = torch.randn(1, 2, 6)
    clock = torch.zeros(1, 2, dtype=torch.long)
    perturbed = h0.clone()
    perturbed[..., :4] += 1.0  # the two faster modules
    with torch.no_grad():
        _, (h_a, _) = model(x, state=(h0, clock))
        _, (h_b, _) = model(x, state=(perturbed, clock))
    torch.testing.assert_close(h_a[..., 4:], h_b[..., 4:], rtol=0, atol=0)
    assert not torch.allclose(h_a[..., :4], h_b[..., :4])
    perturbed = h0.clone()
    perturbed[..., 4:] += 1.0  # the slowest module reaches every module
    with torch.no_grad():
        _, (h_c, _) = model(x, state=(perturbed, clock))
    assert ((h_c - h_a).abs() > 0).all()


def test_two_steps_by_hand_from_a_full_masked_matrix():
    """Step t updates rows with t mod T_i == 0: h_t = where(active, tanh(W_I x_t + b + (W_H * M) h_{t-1}), h_{t-1})."""
    torch.manual_seed(2)
    model = ClockworkRNN(IN, OUT, hidden_size=5, modules=2, periods=[1, 3])  # sizes 3, 2
    cell = model.cells[0]
    W_H = torch.zeros(5, 5)
    W_H[:3, :] = cell.recurrent[0].weight  # fast module reads all
    W_H[3:, 3:] = cell.recurrent[1].weight  # slow module reads itself only
    x, h = torch.randn(4, 3, IN), torch.randn(4, 5)
    clock = torch.tensor([0, 1, 2, 5])  # carried clocks: the slow module (T = 3) is active where clock % 3 == 0
    expected = h
    for t in range(3):
        new = torch.tanh(cell.input(x[:, t]) + expected @ W_H.T)
        active = (clock + t)[:, None] % torch.tensor([1, 1, 1, 3, 3]) == 0
        expected = torch.where(active, new, expected)
    with torch.no_grad():
        outputs, (h_n, clock_n) = model(x, state=(h[None], clock[None]))
    torch.testing.assert_close(h_n[0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, -1], model.readout(expected), rtol=0, atol=1e-5)
    assert clock_n[0].tolist() == [3, 4, 5, 8]


def test_parameters_are_those_of_the_block_triangular_matrix():
    model = ClockworkRNN(IN, OUT, hidden_size=8, modules=4)  # 2 units per module
    recurrent = sum(p.numel() for p in model.cells[0].recurrent.parameters())
    assert recurrent == 2 * 8 + 2 * 6 + 2 * 4 + 2 * 2


@pytest.mark.parametrize("periods", [[1, 2], [2, 1, 4], [0, 1, 2], [1.5, 2, 4]])
def test_bad_periods_name_their_key(periods):
    with pytest.raises(ConfigError) as error:
        ClockworkRNN(IN, OUT, modules=3, periods=periods)
    assert error.value.key == "periods"


@pytest.mark.parametrize(
    "kwargs", [{}, dict(num_layers=2, periods=[1, 3, 5, 7]), dict(bidirectional=True, num_layers=2, residual=True)]
)
def test_interface_shapes_padding_and_carried_state(kwargs):
    torch.manual_seed(3)
    model = ClockworkRNN(IN, OUT, hidden_size=8, **kwargs)
    # split at step 3, inside the periods 2, 4 and 8, so the carried clock matters
    check_interface(model, IN, OUT, carried=not kwargs.get("bidirectional", False), steps=9, split=3)


@pytest.mark.slow
def test_learns_the_adding_problem(tmp_path):
    record = train_in_process(
        tmp_path,
        "model=clockwork_rnn",
        "data=adding",
        "data.seq_len=10",
        "data.train_size=2000",
        "trainer.max_epochs=8",
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
