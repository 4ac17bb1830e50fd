"""brnn, blstm, bgru: the elman, lstm and gru configs with bidirectional: true (survey eqs. 29-31)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from conftest import compose_config, train_in_process
from rnnlab.wiring import build_model
from zoo_checks import check_interface

PRESETS = {"brnn": "elman", "blstm": "lstm", "bgru": "gru"}


@pytest.mark.parametrize("preset,base", PRESETS.items())
def test_preset_is_its_base_model_made_bidirectional(tmp_path, preset, base):
    preset_cfg = compose_config(tmp_path, [f"model={preset}"]).model
    base_cfg = compose_config(tmp_path, [f"model={base}"]).model
    assert preset_cfg.bidirectional is True and base_cfg.bidirectional is False
    with open_dict(base_cfg):
        base_cfg.bidirectional = True
    assert OmegaConf.to_container(preset_cfg) == OmegaConf.to_container(base_cfg)


@pytest.mark.parametrize("preset", PRESETS)
def test_backward_direction_reads_each_sequence_reversed_within_its_length(tmp_path, preset):
    """Both directions see exactly the valid steps: a padded sequence gives what the truncated one gives."""
    torch.manual_seed(0)
    cfg = compose_config(tmp_path, [f"model={preset}", "model.hidden_size=4"]).model
    model = build_model(cfg, input_size=2, output_size=1)
    assert model.num_directions == 2
    check_interface(model, 2, 1, carried=False)
    x = torch.randn(1, 6, 2)
    hidden, _ = model.run_layers(x, torch.tensor([4]), None)
    alone, _ = model.run_layers(x[:, :4], None, None)
    torch.testing.assert_close(hidden[:, :4], alone, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_learns_the_adding_problem(tmp_path, preset):
    record = train_in_process(
        tmp_path, f"model={preset}", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=10"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
