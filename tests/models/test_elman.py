"""The IRNN (Le et al. 2015: ReLU Elman, identity init) and the Jordan network: steps by hand, the interface,
learning."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config, train_in_process
from rnnlab.models.elman import Elman, Jordan
from rnnlab.models.initialization import initialize
from rnnlab.wiring import build_model
from zoo_checks import check_interface

IN, H, OUT = 3, 5, 2


def test_irnn_config_is_relu_elman_with_identity_recurrence(tmp_path):
    cfg = compose_config(tmp_path, ["model=irnn", "model.num_layers=2", "model.bidirectional=true"])
    model = build_model(cfg.model, IN, OUT, init=instantiate(cfg.init))
    assert isinstance(model, Elman) and model.activation == "relu" and model.use_fused
    hh = [name for name, _ in model.rnn.named_parameters() if name.startswith("weight_hh")]
    assert len(hh) == 4  # 2 layers x 2 directions
    for name, parameter in model.rnn.named_parameters():
        if name.startswith("weight_hh"):
            torch.testing.assert_close(parameter, torch.eye(model.hidden_size), rtol=0, atol=0)
        elif name.startswith("bias"):
            assert not parameter.any(), name


@pytest.mark.parametrize("use_fused", [True, False])
def test_irnn_two_steps_by_hand(use_fused):
    """h_1 = relu(W_ih x_1), h_2 = relu(W_ih x_2 + h_1): the identity recurrence adds the previous state."""
    torch.manual_seed(1)
    model = initialize(Elman(IN, OUT, hidden_size=H, activation="relu"), "identity")
    model.use_fused = use_fused
    x = torch.randn(4, 2, IN)
    w = model.rnn.weight_ih_l0
    h1 = torch.relu(x[:, 0] @ w.T)
    h2 = torch.relu(x[:, 1] @ w.T + h1)
    with torch.no_grad():
        outputs, h = model(x)
    torch.testing.assert_close(outputs, model.readout(torch.stack([h1, h2], dim=1)), rtol=0, atol=1e-5)
    torch.testing.assert_close(h[0], h2, rtol=0, atol=1e-5)


def test_jordan_two_steps_by_hand():
    """h_t = tanh(W x_t + U y_{t-1} + b), y_t = W_o h_t + b_o, from a given y_0; the readout reads y_t."""
    torch.manual_seed(2)
    model = Jordan(IN, OUT, hidden_size=H)
    cell = model.cells[0]
    x, y0 = torch.randn(4, 2, IN), torch.randn(1, 4, H)
    y = y0[0]
    expected = []
    for t in range(2):
        h = torch.tanh(cell.input(x[:, t]) + y @ cell.feedback.weight.T)
        y = h @ cell.emit.weight.T + cell.emit.bias
        expected.append(model.readout(y))
    with torch.no_grad():
        outputs, state = model(x, state=y0)
    torch.testing.assert_close(outputs, torch.stack(expected, dim=1), rtol=0, atol=1e-5)
    torch.testing.assert_close(state[0], y, rtol=0, atol=1e-5)


def test_jordan_feeds_back_the_output_not_the_hidden_state():
    """With W_o = 0, y is the constant b_o, so every step sees the same feedback: outputs depend on x_t alone."""
    torch.manual_seed(3)
    model = Jordan(IN, OUT, hidden_size=H)
    with torch.no_grad():
        model.cells[0].emit.weight.zero_()
        x = torch.randn(2, 4, IN)
        outputs, _ = model(x)
        swapped, _ = model(x[:, [0, 2, 1, 3]])
    torch.testing.assert_close(swapped[:, 3], outputs[:, 3], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Jordan(IN, OUT, hidden_size=H),
        lambda: Jordan(IN, OUT, hidden_size=H, num_layers=2, bidirectional=True, residual=True),
        lambda: initialize(Elman(IN, OUT, hidden_size=H, activation="relu", num_layers=2), "identity"),
    ],
    ids=["jordan", "jordan-bi-residual", "irnn-2-layers"],
)
def test_interface_shapes_padding_and_carried_state(factory):
    torch.manual_seed(4)
    model = factory()
    check_interface(model, IN, OUT, carried=model.num_directions == 1)


@pytest.mark.slow
def test_irnn_learns_the_adding_problem(tmp_path):
    record = train_in_process(
        tmp_path, "model=irnn", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=3"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167


@pytest.mark.slow
def test_jordan_learns_the_adding_problem(tmp_path):
    record = train_in_process(
        tmp_path, "model=jordan", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=3"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
