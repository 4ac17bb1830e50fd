"""``rnnlab-eval``, the Hydra app that scores a checkpoint: builds the run's config as ``rnnlab-train`` does
(``rnnlab.wiring``), loads ``ckpt_path`` and validates or tests it on the datamodule's ``split``; the record
(``summary.json``, ``evaluated``: checkpoint and split) is written whatever happens (conf/eval.yaml)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rnnlab.conf_dir import CONF_DIR
from rnnlab.config_check import check_command_line
from rnnlab.errors import ConfigError, exit_on_bad_input, require_choice
from rnnlab.loggers import start_loggers
from rnnlab.record import RunStats
from rnnlab.run_record import describe_built_run, epoch_metrics, exit_if_failed, group_choices, recording
from rnnlab.wiring import build

SPLITS = ("val", "test")


def cli() -> None:
    """Console entry point: check the command line, then evaluate with Hydra."""
    if not os.environ.get("HYDRA_FULL_ERROR"):
        with exit_on_bad_input("rnnlab-eval"):
            check_command_line(sys.argv[1:], config_name="eval")
    main()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    record = evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))
    exit_if_failed("rnnlab-eval", record)
    return record["metrics"].get(f"{cfg.split}/loss")


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Score ``cfg.ckpt_path`` on ``cfg.split``; the record holds the split's metrics."""
    stats, loggers = RunStats(), []
    with recording(cfg, run_dir, stats, loggers) as record:
        require_choice("split", cfg.split, SPLITS)
        checkpoint = Path(cfg.ckpt_path).expanduser().resolve()
        if not checkpoint.is_file():
            raise ConfigError("ckpt_path", f"no checkpoint file at {checkpoint}")
        record["evaluated"] = {"checkpoint": str(checkpoint), "split": cfg.split}
        datamodule, module, built_loggers, trainer = build(cfg, stats)
        loggers += built_loggers
        describe_built_run(record, datamodule, module)
        start_loggers(loggers, record["config"], False, record["params"], group_choices())
        score = trainer.validate if cfg.split == "val" else trainer.test
        score(module, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)
        record.update(metrics=epoch_metrics(trainer), status="completed", error=None)
    return record
