"""Hierarchical subsampling RNN (Graves 2012, ch. 9): levels by hand with torch's nn.LSTM, lengths, the interface,
learning."""

from __future__ import annotations

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.hierarchical import HSRNN, subsample
from zoo_checks import check_interface

IN, H = 3, 4


def pairs(x):
    """[B, T, F] -> [B, T/2, 2F]: step k is [x_{2k}; x_{2k+1}], written as a loop."""
    return torch.stack([torch.cat([x[:, 2 * k], x[:, 2 * k + 1]], dim=-1) for k in range(x.shape[1] // 2)], dim=1)


def test_subsample_concatenates_windows_and_pads_the_last():
    x = torch.arange(2 * 5 * 1.0).view(2, 5, 1)
    y = subsample(x, 2)
    assert y.shape == (2, 3, 2)
    torch.testing.assert_close(y[0], torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 0.0]]))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_two_levels_by_hand(bidirectional):
    """Level 1 over 8 steps, windows of 2 -> level 2 over 4 steps, windows of 2 -> 2 steps, each repeated 4 times."""
    torch.manual_seed(0)
    model = HSRNN(IN, 2, hidden_size=H, levels=2, window=2, bidirectional=bidirectional)
    x = torch.randn(3, 8, IN)
    outputs, (h_n, c_n) = model(x)
    level1, (h1, c1) = model.stack[0].rnn(x)  # torch's nn.LSTM on the level's own weights
    level2, (h2, c2) = model.stack[1].rnn(pairs(level1))
    top = pairs(level2)  # [B, 2, 2 * dirs * H]
    expected = model.readout(top).repeat_interleave(4, dim=1)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close((h_n, c_n), (torch.cat([h1, h2]), torch.cat([c1, c2])), rtol=0, atol=1e-5)


def test_lengths_shrink_with_ceil_division():
    """A sequence of 5 valid steps: level 2 sees ceil(5/2) = 3 steps; outputs 0-3 read top step 0, step 4 top step 1."""
    torch.manual_seed(1)
    model = HSRNN(IN, 2, hidden_size=H, levels=2, window=2)
    x = torch.randn(1, 8, IN)
    outputs, (h_n, _) = model(x, torch.tensor([5]))
    level1, _ = model.stack[0].rnn(x[:, :5])
    level1 = torch.cat([level1, torch.zeros(1, 1, H)], dim=1)  # the window of step 4 is completed with zeros
    level2, (h2, _) = model.stack[1].rnn(pairs(level1))  # 3 steps
    top = pairs(torch.cat([level2, torch.zeros(1, 1, H)], dim=1))  # 2 steps
    torch.testing.assert_close(outputs[:, :4], model.readout(top[:, :1]).expand(1, 4, 2), rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, 4], model.readout(top[:, 1]), rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, 5:], model.readout.bias.expand(1, 3, 2), rtol=0, atol=1e-6)  # padding
    torch.testing.assert_close(h_n[1], h2[0], rtol=0, atol=1e-5)


def test_cell_and_fused_levels_agree():
    torch.manual_seed(2)
    fused = HSRNN(IN, 2, hidden_size=H, levels=2, window=3, bidirectional=True, implementation="fused")
    cell = HSRNN(IN, 2, hidden_size=H, levels=2, window=3, bidirectional=True, implementation="cell")
    cell.load_state_dict(fused.state_dict())
    x, lengths = torch.randn(3, 10, IN), torch.tensor([10, 7, 1])
    torch.testing.assert_close(cell(x, lengths)[0], fused(x, lengths)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs,key", [(dict(levels=0), "levels"), (dict(window=0), "window")])
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        HSRNN(IN, 1, **kwargs)
    assert error.value.key == key


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(window=3, num_layers=2, residual=True), dict(bidirectional=True, levels=3), dict(implementation="cell")],
)
def test_interface_shapes_padding_and_carried_state(kwargs):
    """Carried state is checked on halves of 8 steps, multiples of window**levels (where windows line up)."""
    torch.manual_seed(3)
    model = HSRNN(IN, 2, hidden_size=H, **kwargs)
    steps = 2 * model.window**model.levels
    check_interface(model, IN, 2, carried=not kwargs.get("bidirectional", False), steps=steps, split=steps // 2)


@pytest.mark.slow
def test_learns_the_adding_problem(tmp_path):
    record = train_in_process(
        tmp_path, "model=hsrnn", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=10"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
