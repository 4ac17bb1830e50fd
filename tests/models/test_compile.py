"""``compile: true`` (rnnlab.models.compile): compiled cells compute what the eager ones do, keep the state_dict, and
a cell that cannot compile runs eagerly with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import compose_config, read_record, run_cli
from rnnlab.models.base import RecurrentCell, RecurrentNetwork
from rnnlab.models.compile import CompiledStep, compile_cells
from rnnlab.wiring import build_model

IN, H, OUT = 3, 4, 2
FAST = ["debug=fast", "data.train_size=256", "data.val_size=64", "data.test_size=64", "callbacks=minimal"]


def eager_and_compiled(tmp_path: Path, overrides: list[str]) -> tuple[nn.Module, nn.Module]:
    cfg = compose_config(tmp_path, [*overrides, f"model.hidden_size={H}"]).model
    torch.manual_seed(0)
    eager = build_model(cfg, IN, OUT)
    torch.manual_seed(0)
    return eager, build_model(cfg, IN, OUT, compile=True)


def outputs_and_grads(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None):
    model.zero_grad(set_to_none=True)
    outputs, _ = model(x, lengths)
    outputs.square().sum().backward()
    return outputs.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow  # Inductor's first compile in a process takes ~30 s on one CPU
@pytest.mark.parametrize(
    "overrides",
    [
        ["model=scrn"],  # a RecurrentCell with its own weights
        ["model=elman", "model.implementation=cell", "model.num_layers=2", "model.bidirectional=true"],  # nn.RNN's
        ["model=rhn"],
    ],
    ids=["scrn", "elman_cell", "rhn"],
)
def test_compiled_cells_match_eager_outputs_and_gradients(tmp_path, one_thread, overrides):
    eager, compiled = eager_and_compiled(tmp_path, overrides)
    assert all(isinstance(cell.step, CompiledStep) for cell in compiled.cells)
    x = torch.randn(3, 5, IN)
    for lengths in (None, torch.tensor([5, 3, 1])):  # the all-valid loop and the masked one
        expected, expected_grads = outputs_and_grads(eager, x, lengths)
        actual, grads = outputs_and_grads(compiled, x, lengths)
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
        assert grads.keys() == expected_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected_grads[name], rtol=0, atol=1e-5, msg=name)
    assert all(cell.step.compiled is not None for cell in compiled.cells)  # compiled, not fallen back


@pytest.mark.parametrize("model", ["scrn", "lstm"])
def test_compile_keeps_state_dict_keys_and_loads_both_ways(tmp_path, model):
    overrides = [f"model={model}"] + (["model.peepholes=true"] if model == "lstm" else [])  # cells own peepholes
    eager, compiled = eager_and_compiled(tmp_path, overrides)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())
    eager.load_state_dict(compiled.state_dict())


class GraphBreakCell(RecurrentCell):
    """An Elman step that Dynamo cannot capture whole (it asks for a graph break)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.recurrent = nn.Linear(hidden_size, hidden_size)

    def step(self, projected, state, t):
        torch._dynamo.graph_break()
        return (torch.tanh(projected + self.recurrent(state[0])),)


class GraphBreakNetwork(RecurrentNetwork):
    def make_cell(self, input_size, layer, direction):
        return GraphBreakCell(self.hidden_size)


def test_a_cell_that_fails_to_compile_runs_eagerly_with_a_warning(caplog):
    torch.manual_seed(0)
    model = GraphBreakNetwork(H, OUT, hidden_size=H)
    x = torch.randn(2, 3, H)
    expected, _ = model(x)
    assert compile_cells(model) == 1
    with caplog.at_level(logging.WARNING, logger="rnnlab.models.compile"):
        outputs, _ = model(x)
    assert "GraphBreakNetwork.cells.0 failed to compile" in caplog.text
    assert caplog.text.count("failed to compile") == 1  # once, not at every step
    torch.testing.assert_close(outputs, expected, rtol=0, atol=0)


def test_a_model_without_cells_is_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="rnnlab.models.compile"):
        assert compile_cells(nn.Linear(IN, OUT)) == 0
    assert "Linear has no hand-written recurrent cell" in caplog.text


@pytest.mark.slow
def test_compile_true_trains_end_to_end(tmp_path):
    result = run_cli(tmp_path, "compile=true", "model=indrnn", *FAST, f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_record(tmp_path / "run")
    assert record["status"] == "completed" and record["config"]["compile"] is True
