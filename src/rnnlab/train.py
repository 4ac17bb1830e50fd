"""``rnnlab-train``, the Hydra app: composes, builds (``rnnlab.wiring``), fits, tests and writes the run record
(``rnnlab.run_record``), whatever the run's fate (CONTRIBUTING.md, 'One path for every run')."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rnnlab.conf_dir import CONF_DIR, PRIMARY_CONFIG
from rnnlab.config_check import check_command_line
from rnnlab.errors import exit_on_bad_input
from rnnlab.launch import share_machine_between_parallel_jobs
from rnnlab.loggers import logged_as_best, start_loggers
from rnnlab.record import RunStats
from rnnlab.run_dir import FINAL_STATUSES, claimed
from rnnlab.run_record import describe_built_run, epoch_metrics, exit_if_failed, group_choices, recording
from rnnlab.training.resume import best_checkpoint, resume_point
from rnnlab.wiring import build


def cli() -> None:
    """Console entry point: check the whole command line (every job of a sweep), then run it with Hydra."""
    if not os.environ.get("HYDRA_FULL_ERROR"):
        with exit_on_bad_input("rnnlab-train"):
            check_command_line(sys.argv[1:])
    main()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=PRIMARY_CONFIG)
def main(cfg: DictConfig) -> float | None:
    with exit_on_bad_input("rnnlab-train"):  # the run directory refused this run (busy, another config's)
        record = train(cfg)
    if HydraConfig.get().mode == RunMode.RUN:  # a multirun goes on; rnnlab.launch reports its failed jobs
        exit_if_failed("rnnlab-train", record)
    return record["metrics"].get(cfg.optimized_metric)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job in its claimed run directory (``rnnlab.run_dir``) and return its record (``summary.json``); with
    ``resume=true`` a completed or diverged job is skipped and an interrupted one resumes from its resume point."""
    share_machine_between_parallel_jobs(cfg)
    with claimed(cfg) as (run_dir, earlier):
        if earlier is not None and earlier["status"] in FINAL_STATUSES:
            print(run_dir, flush=True)
            return earlier
        return run(cfg, run_dir, start_over=earlier is not None)


def run(cfg: DictConfig, run_dir: Path, start_over: bool) -> dict[str, Any]:
    """Build, fit, validate on the best checkpoint and test it; the record is written whatever happens."""
    stats, loggers = RunStats(), []
    with recording(cfg, run_dir, stats, loggers) as record:
        datamodule, module, built_loggers, trainer = build(cfg, stats)
        loggers += built_loggers
        describe_built_run(record, datamodule, module)
        record["resumed_from"] = resume_point(trainer, start_over)
        start_loggers(loggers, record["config"], record["resumed_from"] is not None, record["params"], group_choices())
        trainer.fit(module, datamodule=datamodule, ckpt_path=record["resumed_from"])
        record.update(steps=trainer.global_step, epochs=trainer.current_epoch, metrics=epoch_metrics(trainer))
        if module.diverged:
            record.update(status="diverged", error=f"non-finite training loss at step {module.diverged_at_step}")
        else:
            record["checkpoint"] = best_checkpoint(trainer)
            with logged_as_best(trainer):
                trainer.validate(module, datamodule=datamodule, ckpt_path=record["checkpoint"], verbose=False)
            trainer.test(module, datamodule=datamodule, ckpt_path=record["checkpoint"])
            record["metrics"].update(epoch_metrics(trainer))
            record.update(status="completed", error=None)
    return record
