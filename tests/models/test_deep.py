"""Deep transition / deep output RNNs (Pascanu et al. 2014): steps by hand, presets, the interface, learning."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config, train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.deep import DeepRNN
from rnnlab.wiring import build_model
from zoo_checks import check_interface

IN, H, OUT = 3, 5, 2


def hand_steps(model: DeepRNN, x, h):
    """Every equation of the DeepRNN docstring, with explicit weights, for a one-layer tanh model."""
    cell = model.cells[0]
    outputs = []
    for t in range(x.shape[1]):
        inp = x[:, t]
        for layer in cell.input_mlp:
            inp = torch.tanh(inp @ layer.weight.T + layer.bias)
        U, b1 = cell.input.weight[:H], cell.input.bias[:H]
        z = torch.tanh(h @ cell.recurrent.weight.T + inp @ U.T + b1)
        layers = list(cell.transition)
        for layer in layers[:-1]:
            z = torch.tanh(z @ layer.weight.T + layer.bias)
        if model.shortcut:
            U_bar, b_last = cell.input.weight[H:], cell.input.bias[H:]
            last = layers[-1]
            h = torch.tanh(z @ last.weight.T + b_last + h @ cell.recurrent_shortcut.weight.T + inp @ U_bar.T)
        elif layers:
            h = torch.tanh(z @ layers[-1].weight.T + layers[-1].bias)
        else:
            h = z
        y = h
        for layer in model.output_mlp:
            y = torch.tanh(y @ layer.weight.T + layer.bias)
        outputs.append(y @ model.readout.weight.T + model.readout.bias)
    return torch.stack(outputs, dim=1), h


@pytest.mark.parametrize(
    "options",
    [
        dict(input_mlp=1, transition_depth=3, shortcut=True, output_depth=3),
        dict(input_mlp=0, transition_depth=2, shortcut=False, output_depth=1),
        dict(input_mlp=2, transition_depth=1, shortcut=False, output_depth=2),
    ],
    ids=["dots-input-mlp", "dt", "do-input-mlp"],
)
def test_two_steps_by_hand(options):
    torch.manual_seed(0)
    model = DeepRNN(IN, OUT, hidden_size=H, **options)
    x, h0 = torch.randn(4, 2, IN), torch.randn(1, 4, H)
    with torch.no_grad():
        outputs, h_n = model(x, state=h0)
    expected, h = hand_steps(model, x, h0[0])
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(h_n[0], h, rtol=0, atol=1e-5)


def test_depth_one_everywhere_is_an_elman_rnn():
    """transition_depth = output_depth = 1 and no input MLP: h_t = tanh(U x_t + W h_{t-1} + b), linear readout."""
    torch.manual_seed(1)
    model = DeepRNN(IN, OUT, hidden_size=H, transition_depth=1, shortcut=False, output_depth=1)
    cell = model.cells[0]
    assert len(cell.transition) == 0 and len(model.output_mlp) == 0 and len(cell.input_mlp) == 0
    x = torch.randn(2, 3, IN)
    h = torch.zeros(2, H)
    for t in range(3):
        h = torch.tanh(cell.input(x[:, t]) + cell.recurrent(h))
    with torch.no_grad():
        outputs, _ = model(x)
    torch.testing.assert_close(outputs[:, -1], model.readout(h), rtol=0, atol=1e-5)


def test_shortcut_carries_the_previous_state_past_the_transition():
    """With the transition MLP's last layer zeroed, DT(S) still updates from h_{t-1} and x_t; DT gives tanh(0)."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, IN)
    for shortcut in (True, False):
        model = DeepRNN(IN, OUT, hidden_size=H, transition_depth=2, shortcut=shortcut, output_depth=1)
        with torch.no_grad():
            last = model.cells[0].transition[-1]
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()
            _, h = model(x)
        assert h.abs().sum() > 0 if shortcut else not h.any()


@pytest.mark.parametrize(
    "name,expected",
    [
        ("deep_rnn", dict(transition_depth=2, shortcut=True, output_depth=2)),
        ("dt_rnn", dict(transition_depth=2, shortcut=False, output_depth=1)),
        ("dts_rnn", dict(transition_depth=2, shortcut=True, output_depth=1)),
        ("do_rnn", dict(transition_depth=1, shortcut=False, output_depth=2)),
    ],
)
def test_presets_select_their_options(tmp_path, name, expected):
    model = build_model(compose_config(tmp_path, [f"model={name}"]).model, IN, OUT)
    assert isinstance(model, DeepRNN)
    cell = model.cells[0]
    assert len(cell.transition) + 1 == expected["transition_depth"]
    assert (cell.recurrent_shortcut is not None) == expected["shortcut"]
    assert len(model.output_mlp) + 1 == expected["output_depth"]


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(transition_depth=1, shortcut=True), "shortcut"),
        (dict(transition_depth=0), "transition_depth"),
        (dict(output_depth=0), "output_depth"),
        (dict(input_mlp=-1), "input_mlp"),
        (dict(activation="gelu"), "activation"),
    ],
)
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        DeepRNN(IN, OUT, **kwargs)
    assert error.value.key == key


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(input_mlp=1, num_layers=2), dict(bidirectional=True, num_layers=2, residual=True)],
)
def test_interface_shapes_padding_and_carried_state(kwargs):
    torch.manual_seed(3)
    model = DeepRNN(IN, OUT, hidden_size=H, **kwargs)
    check_interface(model, IN, OUT, carried=not kwargs.get("bidirectional", False))


@pytest.mark.slow
@pytest.mark.parametrize("name,epochs", [("deep_rnn", 3), ("dt_rnn", 5), ("dts_rnn", 5), ("do_rnn", 3)])
def test_learns_the_adding_problem(tmp_path, name, epochs):
    record = train_in_process(
        tmp_path,
        f"model={name}",
        "data=adding",
        "data.seq_len=10",
        "data.train_size=2000",
        f"trainer.max_epochs={epochs}",
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
