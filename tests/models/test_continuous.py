"""Leaky-integrator RNN and continuous-time RNN: steps by hand, closed-form dynamics, the interface, learning."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.continuous import CTRNN, LeakyRNN
from zoo_checks import check_interface

IN, H, OUT = 3, 4, 2


@pytest.mark.parametrize("learn_tau", [False, True])
def test_leaky_two_steps_by_hand(learn_tau):
    torch.manual_seed(0)
    model = LeakyRNN(IN, OUT, hidden_size=H, tau=[2.0, 16.0], learn_tau=learn_tau)
    cell = model.cells[0]
    tau = torch.tensor([2.0, 4.0, 8.0, 16.0])  # geometric spacing over the 4 units
    if learn_tau:
        torch.testing.assert_close(cell.tau.detach(), tau)
        with torch.no_grad():
            cell.rho.add_(torch.randn(H))
        tau = cell.tau.detach()
    else:
        torch.testing.assert_close(cell.tau, tau)
    x, h0 = torch.randn(5, 2, IN), torch.randn(1, 5, H)
    h = h0[0]
    for t in range(2):
        drive = x[:, t] @ cell.input.weight.T + cell.input.bias + h @ cell.recurrent.weight.T
        h = (1 - 1 / tau) * h + (1 / tau) * torch.tanh(drive)
    with torch.no_grad():
        outputs, h_n = model(x, state=h0)
    torch.testing.assert_close(h_n[0], h, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, -1], model.readout(h), rtol=0, atol=1e-5)


def test_learned_tau_stays_at_least_one_and_gets_a_gradient():
    model = LeakyRNN(IN, OUT, hidden_size=H, tau=1.0, learn_tau=True)
    cell = model.cells[0]
    assert (cell.tau >= 1).all()
    outputs, _ = model(torch.randn(2, 4, IN))
    outputs.sum().backward()
    assert cell.rho.grad.abs().sum() > 0
    with torch.no_grad():
        cell.rho.copy_(torch.tensor([-1e4, -10.0, 0.0, 10.0]))
    assert (cell.tau >= 1).all()
    assert not any(name.endswith("fixed_tau") for name, _ in model.named_parameters())


def test_leaky_with_tau_one_is_an_elman_step():
    torch.manual_seed(1)
    model = LeakyRNN(IN, OUT, hidden_size=H, tau=1.0)
    cell = model.cells[0]
    x = torch.randn(2, 3, IN)
    h = torch.zeros(2, H)
    for t in range(3):
        h = torch.tanh(cell.input(x[:, t]) + cell.recurrent(h))
    with torch.no_grad():
        _, h_n = model(x)
    torch.testing.assert_close(h_n[0], h, rtol=0, atol=1e-6)


def test_ctrnn_euler_substeps_by_hand():
    """Two Euler substeps per input: h += dt (-h + W sigma(h) + V x + b) / tau; the layer emits sigma(h)."""
    torch.manual_seed(2)
    model = CTRNN(IN, OUT, hidden_size=H, tau=2.0, dt=0.3, substeps=2, solver="euler")
    cell = model.cells[0]
    x, h0 = torch.randn(5, 2, IN), torch.randn(1, 5, H)
    h = h0[0]
    for t in range(2):
        drive = x[:, t] @ cell.input.weight.T + cell.input.bias
        for _ in range(2):
            h = h + 0.3 * (-h + torch.tanh(h) @ cell.recurrent.weight.T + drive) / 2.0
    with torch.no_grad():
        outputs, h_n = model(x, state=h0)
    torch.testing.assert_close(h_n[0], h, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, -1], model.readout(torch.tanh(h)), rtol=0, atol=1e-5)


def test_ctrnn_rk4_step_by_hand():
    torch.manual_seed(3)
    model = CTRNN(IN, OUT, hidden_size=H, tau=1.5, dt=0.4, substeps=1, solver="rk4")
    cell = model.cells[0]
    x, h = torch.randn(5, 1, IN), torch.randn(5, H)

    def f(state):
        return (-state + torch.tanh(state) @ cell.recurrent.weight.T + cell.input(x[:, 0])) / 1.5

    k1 = f(h)
    k2 = f(h + 0.2 * k1)
    k3 = f(h + 0.2 * k2)
    k4 = f(h + 0.4 * k3)
    expected = h + 0.4 / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    with torch.no_grad():
        _, h_n = model(x, state=h[None])
    torch.testing.assert_close(h_n[0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("solver", ["rk4", "euler"])
def test_ctrnn_follows_the_solution_of_the_linear_ode(solver):
    """With W = 0 and a constant drive u = V x + b: h(t) = u + (h(0) - u) exp(-t / tau), which RK4 follows to 1e-5;
    Euler's own closed form is h_n = u + (h(0) - u) (1 - dt / tau)^n."""
    torch.manual_seed(4)
    model = CTRNN(IN, OUT, hidden_size=H, tau=2.0, dt=0.1, substeps=10, solver=solver)
    cell = model.cells[0]
    with torch.no_grad():
        cell.recurrent.weight.zero_()
        x = torch.randn(2, 1, IN).expand(2, 3, IN)  # the same input for 3 steps of 1 time unit each
        h0 = torch.randn(1, 2, H)
        _, h_n = model(x, state=h0)
        u = cell.input(x[:, 0])
    decay = math.exp(-3.0 / 2.0) if solver == "rk4" else (1 - 0.1 / 2.0) ** 30
    torch.testing.assert_close(h_n[0], u + (h0[0] - u) * decay, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "factory,key",
    [
        (lambda: LeakyRNN(IN, OUT, tau=0.5), "tau"),
        (lambda: LeakyRNN(IN, OUT, tau=[4.0, 2.0]), "tau"),
        (lambda: LeakyRNN(IN, OUT, tau=[1.0, 2.0, 3.0]), "tau"),
        (lambda: CTRNN(IN, OUT, tau=0.0), "tau"),
        (lambda: CTRNN(IN, OUT, solver="midpoint"), "solver"),
        (lambda: CTRNN(IN, OUT, dt=-0.1), "dt"),
        (lambda: CTRNN(IN, OUT, substeps=0), "substeps"),
    ],
)
def test_bad_settings_name_their_key(factory, key):
    with pytest.raises(ConfigError) as error:
        factory()
    assert error.value.key == key


@pytest.mark.parametrize(
    "factory",
    [
        lambda **kw: LeakyRNN(IN, OUT, hidden_size=H, **kw),
        lambda **kw: LeakyRNN(IN, OUT, hidden_size=H, learn_tau=True, **kw),
        lambda **kw: CTRNN(IN, OUT, hidden_size=H, **kw),
        lambda **kw: CTRNN(IN, OUT, hidden_size=H, solver="rk4", **kw),
    ],
    ids=["leaky", "leaky-learned", "ctrnn-euler", "ctrnn-rk4"],
)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_interface_shapes_padding_and_carried_state(factory, bidirectional):
    torch.manual_seed(5)
    model = factory(num_layers=2, bidirectional=bidirectional)
    check_interface(model, IN, OUT, carried=not bidirectional)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["leaky_rnn", "ctrnn"])
def test_learns_the_adding_problem(tmp_path, name):
    record = train_in_process(
        tmp_path, f"model={name}", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=5"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
