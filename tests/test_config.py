"""Every config of every group composes, and the objects it names can be built."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from conftest import compose_config
from rnnlab.conf_dir import CONF_DIR, group_options

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
ALL_OPTIONS = [(group, option) for group in GROUPS for option in group_options(group)]


def test_groups_of_the_guide_exist():
    required = {
        "model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "debug", "paths"
    }
    assert required <= set(GROUPS)


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes(tmp_path, group, option):
    cfg = compose_config(tmp_path, [f"{group}={option}"])
    assert cfg.hydra.runtime.choices[group] == option


@pytest.mark.parametrize("option", group_options("optimizer"))
def test_optimizers_build(tmp_path, option):
    import torch

    cfg = compose_config(tmp_path, [f"optimizer={option}"])
    optimizer = instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(optimizer, torch.optim.Optimizer)


@pytest.mark.parametrize("option", [o for o in group_options("scheduler") if o != "none"])
def test_schedulers_build(tmp_path, option):
    import torch

    cfg = compose_config(tmp_path, [f"scheduler={option}"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer)
    assert scheduler.optimizer is optimizer


def test_scheduler_none_means_no_scheduler(tmp_path):
    assert compose_config(tmp_path, ["scheduler=none"]).scheduler is None


@pytest.mark.parametrize("option", ["csv", "tensorboard", "many"])
def test_loggers_build(tmp_path, option, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config(tmp_path, [f"logger={option}"])
    loggers = [instantiate(node) for node in cfg.logger.values()]
    assert len(loggers) == (3 if option == "many" else 1)


def test_logger_list_selects_several(tmp_path):
    cfg = compose_config(tmp_path, ["logger=[csv,tensorboard]"])
    assert set(cfg.logger) == {"csv", "tensorboard"}


@pytest.mark.parametrize("option", group_options("trainer"))
def test_trainer_configs_name_a_device(tmp_path, option):
    cfg = compose_config(tmp_path, [f"trainer={option}"])
    assert cfg.trainer.accelerator in {"cpu", "gpu"}
    if option.startswith("ddp"):
        assert cfg.trainer.strategy == "ddp"


def test_local_launcher_is_joblib_with_two_jobs(tmp_path):
    cfg = compose_config(tmp_path, ["hydra/launcher=local"])
    assert "joblib" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.n_jobs == 2
