"""Echo state network: spectral radius and density of the reservoir, a step by hand, a fixed reservoir under
training, the interface, config errors, learning the adding problem with the closed-form readout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import REPO, train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.reservoir import EchoStateNetwork, random_reservoir
from zoo_checks import check_interface

IN, OUT = 3, 2


def spectral_radius(weight: torch.Tensor) -> float:
    return torch.linalg.eigvals(weight.double()).abs().max().item()


@pytest.mark.parametrize("radius", [0.5, 0.95, 1.3])
def test_every_reservoir_has_the_configured_spectral_radius(radius):
    torch.manual_seed(0)
    model = EchoStateNetwork(IN, OUT, hidden_size=100, num_layers=2, bidirectional=True, spectral_radius=radius)
    assert len(model.cells) == 4
    for cell in model.cells:
        assert abs(spectral_radius(cell.weight) - radius) < 1e-4
    assert len({cell.weight.sum().item() for cell in model.cells}) == 4  # each layer/direction draws its own


def test_density_is_the_fraction_of_non_zero_weights_and_small_reservoirs_are_redrawn():
    torch.manual_seed(0)
    weight = random_reservoir(200, 0.9, density=0.05)
    assert abs((weight != 0).float().mean().item() - 0.05) < 0.005
    redrawn = 0
    for seed in range(20):  # 3x3 at density 0.2 is often nilpotent (radius 0): redrawn until it is not
        torch.manual_seed(seed)
        first_draw = (torch.rand(3, 3) * 2 - 1) * (torch.rand(3, 3) < 0.2)
        redrawn += spectral_radius(first_draw) < 1e-6
        torch.manual_seed(seed)
        assert abs(spectral_radius(random_reservoir(3, 0.8, density=0.2)) - 0.8) < 1e-4
    assert redrawn > 0


def test_two_leaky_steps_by_hand():
    torch.manual_seed(1)
    leak = 0.3
    model = EchoStateNetwork(IN, OUT, hidden_size=8, leak_rate=leak, input_scaling=0.5, density=0.5)
    cell = model.cells[0]
    assert cell.input_weight.abs().max() <= 0.5 and cell.input_bias.abs().max() <= 0.5
    x, h = torch.randn(4, 2, IN), torch.randn(1, 4, 8)
    expected = []
    state = h[0]
    for t in range(2):
        update = torch.tanh(x[:, t] @ cell.input_weight.T + cell.input_bias + state @ cell.weight.T)
        state = (1 - leak) * state + leak * update
        expected.append(model.readout(state))
    with torch.no_grad():
        outputs, final = model(x, state=h)
        torch.testing.assert_close(final[0], state, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(outputs, torch.stack(expected, dim=1), rtol=1e-5, atol=1e-6)


def test_reservoir_is_not_trained_by_gradient_descent():
    torch.manual_seed(2)
    model = EchoStateNetwork(IN, OUT, hidden_size=16, num_layers=2)
    fixed = {name: buffer.clone() for name, buffer in model.named_buffers()}
    assert len(fixed) == 6 and not any(buffer.requires_grad for buffer in model.buffers())
    assert {name for name, _ in model.named_parameters()} == {"readout.weight", "readout.bias"}
    readout = model.readout.weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 10, IN), torch.randn(8, 10, OUT)
    for _ in range(3):
        optimizer.zero_grad()
        ((model(x)[0] - y) ** 2).mean().backward()
        optimizer.step()
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, fixed[name]), name
    assert not torch.equal(model.readout.weight, readout)


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(num_layers=2, residual=True, leak_rate=0.5), dict(bidirectional=True, num_layers=2, dropout=0.1)],
    ids=["plain", "stacked", "bidirectional"],
)
def test_interface_shapes_padding_and_carried_state(kwargs):
    torch.manual_seed(3)
    model = EchoStateNetwork(IN, OUT, hidden_size=12, density=0.3, **kwargs)
    check_interface(model, IN, OUT, carried=not kwargs.get("bidirectional", False))


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(spectral_radius=0.0), "spectral_radius"),
        (dict(leak_rate=0.0), "leak_rate"),
        (dict(leak_rate=1.5), "leak_rate"),
        (dict(density=0.0), "density"),
        (dict(density=1.2), "density"),
        (dict(input_scaling=-1.0), "input_scaling"),
    ],
)
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        EchoStateNetwork(IN, OUT, hidden_size=8, **kwargs)
    assert error.value.key == key


def test_config_keys_are_constructor_arguments():
    cfg = OmegaConf.load(Path(REPO) / "conf" / "model" / "esn.yaml")
    cfg.pop("defaults")
    model = instantiate(cfg)(input_size=IN, output_size=OUT)
    assert model.hidden_size == cfg.hidden_size
    assert abs(spectral_radius(model.cells[0].weight) - cfg.spectral_radius) < 1e-4


def test_learns_the_adding_problem_with_a_closed_form_readout(tmp_path):
    # task=esn is what model=esn selects itself (see tests/tasks/test_esn.py); named here so this test
    # does not depend on the order of train.yaml's defaults list.
    record = train_in_process(
        tmp_path, "model=esn", "task=esn", "data=adding", "data.seq_len=10", "data.train_size=2000",
        "trainer.max_epochs=1",
    )
    assert record["status"] == "completed", record["error"]
    assert record["config"]["task"]["_target_"] == "rnnlab.tasks.esn.EchoStateTask"
    assert record["steps"] == 0  # no optimizer steps: the readout is solved, not trained
    assert record["params"] == 256 + 1  # the readout is the only trainable part
    assert record["metrics"]["test/mse"] < 0.167
