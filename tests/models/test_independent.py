"""IndRNN (Li et al. 2018): steps by hand, the |u| bound, the interface, learning."""

from __future__ import annotations

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.independent import IndRNN
from zoo_checks import check_interface

IN, H, OUT = 3, 6, 2


@pytest.mark.parametrize("recurrent_max", [None, 0.5])
def test_two_steps_by_hand(recurrent_max):
    """h_t = relu(W x_t + u * h_{t-1} + b) with u clamped to [-max, max] (eq. 2)."""
    torch.manual_seed(0)
    model = IndRNN(IN, OUT, hidden_size=H, recurrent_max=recurrent_max)
    cell = model.cells[0]
    with torch.no_grad():
        cell.u.copy_(torch.tensor([-2.0, -0.7, -0.2, 0.3, 0.9, 3.0]))  # as if an optimizer moved it past the bound
    u = cell.u.detach() if recurrent_max is None else torch.tensor([-0.5, -0.5, -0.2, 0.3, 0.5, 0.5])
    x, h0 = torch.randn(4, 2, IN), torch.rand(1, 4, H)
    h = h0[0]
    for t in range(2):
        h = torch.relu(x[:, t] @ cell.input.weight.T + cell.input.bias + u * h)
    with torch.no_grad():
        outputs, h_n = model(x, state=h0)
    torch.testing.assert_close(h_n[0], h, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, -1], model.readout(h), rtol=0, atol=1e-5)


def test_recurrent_max_bounds_u_after_init_and_during_training():
    torch.manual_seed(1)
    bound = 2 ** (1 / 50)  # the paper's 2^(1/T) for T = 50
    model = IndRNN(IN, OUT, hidden_size=64, recurrent_max=0.3, num_layers=2)
    for cell in model.cells:
        assert cell.u.abs().max() <= 0.3
    model = IndRNN(IN, OUT, hidden_size=64, recurrent_max=bound)
    cell = model.cells[0]
    assert cell.u.min() >= 0 and cell.u.max() <= 1  # U(0, 1), below the bound
    optimizer = torch.optim.SGD(model.parameters(), lr=100.0)
    for _ in range(3):  # huge steps push the raw parameter far past the bound
        optimizer.zero_grad()
        outputs, _ = model(torch.rand(8, 5, IN))
        (-outputs.abs().sum()).backward()
        optimizer.step()
    assert cell.recurrent_weight().abs().max() <= bound
    # beyond the bound the clamp passes no gradient, so the effective weight cannot be pushed further
    outside = cell.u.detach().abs() > bound
    assert outside.any()
    model.zero_grad()
    model(torch.rand(8, 5, IN))[0].sum().backward()
    assert not cell.u.grad[outside].any()


def test_unbounded_by_default():
    model = IndRNN(IN, OUT, hidden_size=H)
    with torch.no_grad():
        model.cells[0].u.fill_(5.0)
    assert (model.cells[0].recurrent_weight() == 5.0).all()


@pytest.mark.parametrize(
    "kwargs,key", [(dict(recurrent_max=0.0), "recurrent_max"), (dict(activation="gelu"), "activation")]
)
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        IndRNN(IN, OUT, **kwargs)
    assert error.value.key == key


@pytest.mark.parametrize(
    "kwargs", [{}, dict(recurrent_max=1.0, num_layers=2), dict(bidirectional=True, num_layers=2, residual=True)]
)
def test_interface_shapes_padding_and_carried_state(kwargs):
    torch.manual_seed(2)
    model = IndRNN(IN, OUT, hidden_size=H, **kwargs)
    check_interface(model, IN, OUT, carried=not kwargs.get("bidirectional", False))


@pytest.mark.slow
def test_learns_the_adding_problem(tmp_path):
    record = train_in_process(
        tmp_path, "model=indrnn", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=5"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
