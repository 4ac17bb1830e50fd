"""Building the run record from the run's objects (CONTRIBUTING.md, 'The run record'); ``rnnlab.record`` holds its
schema, reading and writing."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from rnnlab.errors import EXIT_BAD_INPUT, ConfigError
from rnnlab.loggers import finish_loggers
from rnnlab.models.budget import count_parameters
from rnnlab.record import RunStats, environment, one_line, resolved_config, write_record

log = logging.getLogger(__name__)


def new_record(cfg: DictConfig) -> dict[str, Any]:
    """The record of a run that has not finished yet: what it is, and ``failed`` until it says otherwise."""
    choices = HydraConfig.get().runtime.choices
    return {
        "status": "failed",
        "error": "interrupted before the run finished",
        "model": choices.get("model"),
        "data": choices.get("data"),
        "optimizer": choices.get("optimizer"),
        "regularizers": sorted(cfg.get("regularizer") or {}),
        "seed": cfg.seed,
        "params": None,
        "steps": 0,
        "epochs": 0,
        "metrics": {},
        "timing": {},
        "peak_memory_mb": None,
        "memory": {},
        "env": environment(),
        "config": resolved_config(cfg),
        "overrides": list(HydraConfig.get().overrides.task),
    }


def exit_if_failed(program: str, record: dict[str, Any]) -> None:
    """A single run whose record says ``failed`` prints its one-line error and exits 2 for bad input, 1 otherwise."""
    if record["status"] == "failed":
        print(f"{program}: error: {record['error']}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT if record.get("error_kind") == "config" else 1)


def group_choices() -> dict[str, str]:
    """The option chosen in each config group of this run (``model: lstm``), less Hydra's own groups."""
    choices = HydraConfig.get().runtime.choices
    return {group: str(choice) for group, choice in choices.items() if choice and not group.startswith("hydra")}


def describe_built_run(record: dict[str, Any], datamodule, module: pl.LightningModule) -> None:
    """What the built objects add: parameters (a factorised softmax owns the output word embedding, so its head
    counts), hidden size, the data's note, trivial-predictor baseline and primary metric (reports rank by it)."""
    head = getattr(module, "output_head", None)
    record["params"] = count_parameters(module.model) + (count_parameters(head) if head is not None else 0)
    record["hidden_size"] = getattr(module.model, "hidden_size", None)
    record["data_note"] = getattr(datamodule, "note", None)  # e.g. a substitute split used offline
    record["baseline"] = datamodule.task.baseline
    record["metric"] = f"test/{datamodule.task.metric}"


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The epoch-level ``<stage>/<name>`` metrics Lightning holds now, as plain floats."""
    metrics = {}
    for name, value in trainer.callback_metrics.items():
        if name.endswith("_step"):
            continue
        metrics[name.removesuffix("_epoch")] = float(value)
    return metrics


@contextmanager
def recording(cfg: DictConfig, run_dir: Path, stats: RunStats, loggers: list[Logger]) -> Iterator[dict[str, Any]]:
    """The run's record, filled in by the body and written to ``run_dir`` whatever happens there.

    A failure in the body is recorded (``error_kind: config`` for bad input, which the app exits 2 for) and not
    raised, so a sweep goes on with its next job; under ``HYDRA_FULL_ERROR`` a single run re-raises it after the
    record is written. The loggers are finished with the run's status, and the costs come from ``stats``.
    """
    record, failure = new_record(cfg), None
    try:
        yield record
    except Exception as error:
        failure = error
        if isinstance(error, ConfigError):
            record.update(status="failed", error=str(error), error_kind="config")
        else:
            record.update(status="failed", error=one_line(error))
        log.error("run failed: %s", record["error"], exc_info=not isinstance(error, ConfigError))
    record.update(timing=stats.timing(), memory=stats.memory())
    record["peak_memory_mb"] = record["memory"]["process_peak_mb"]
    record_path = write_record(run_dir, record) if rank_zero_only.rank == 0 else None
    try:
        finish_loggers(loggers, record, record_path)
    finally:
        if record_path is not None:
            log.info("run %s: %s", record["status"], record_path)
            print(run_dir, flush=True)
    if failure is not None and os.environ.get("HYDRA_FULL_ERROR") and HydraConfig.get().mode == RunMode.RUN:
        raise failure
