"""Recurrent highway network (Zilly et al. 2017): steps by hand, the interface, learning."""

from __future__ import annotations

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.highway import RHN
from zoo_checks import check_interface

IN, H = 3, 4


def test_two_steps_by_hand_with_depth_three():
    torch.manual_seed(0)
    model = RHN(IN, 2, hidden_size=H, recurrence_depth=3)
    cell = model.cells[0]
    x, s0 = torch.randn(5, 2, IN), torch.randn(1, 5, H)
    outputs, s_n = model(x, state=s0)
    W_H, W_T = cell.input.weight[:H], cell.input.weight[H:]
    s, expected = s0[0], []
    for t in range(2):
        for index, layer in enumerate(cell.highway):
            R_H, R_T, b_H, b_T = layer.weight[:H], layer.weight[H:], layer.bias[:H], layer.bias[H:]
            first = index == 0  # the input enters only the first highway layer
            h = torch.tanh((x[:, t] @ W_H.T if first else 0) + s @ R_H.T + b_H)
            transform = torch.sigmoid((x[:, t] @ W_T.T if first else 0) + s @ R_T.T + b_T)
            s = h * transform + s * (1 - transform)  # coupled carry gate c = 1 - t
        expected.append(model.readout(s))
    torch.testing.assert_close(outputs, torch.stack(expected, dim=1), rtol=0, atol=1e-5)
    torch.testing.assert_close(s_n[0], s, rtol=0, atol=1e-5)


def test_closed_transform_gates_carry_the_state():
    """With t_l = 0 (very negative transform bias) every highway layer copies s: the state never changes."""
    model = RHN(IN, 1, hidden_size=H, recurrence_depth=2)
    with torch.no_grad():
        for layer in model.cells[0].highway:
            layer.bias[H:] = -1e4
    s0 = torch.randn(1, 2, H)
    _, s_n = model(torch.randn(2, 4, IN), state=s0)
    torch.testing.assert_close(s_n, s0)


def test_bad_depth_names_its_key():
    with pytest.raises(ConfigError) as error:
        RHN(IN, 1, recurrence_depth=0)
    assert error.value.key == "recurrence_depth"


@pytest.mark.parametrize("kwargs", [{}, dict(num_layers=2, residual=True), dict(bidirectional=True)])
def test_interface_shapes_padding_and_carried_state(kwargs):
    torch.manual_seed(1)
    model = RHN(IN, 2, hidden_size=H, recurrence_depth=2, **kwargs)
    check_interface(model, IN, 2, carried=not kwargs.get("bidirectional", False))


@pytest.mark.slow
def test_learns_the_adding_problem(tmp_path):
    record = train_in_process(
        tmp_path, "model=rhn", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=5"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
