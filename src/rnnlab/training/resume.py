"""The point a killed run resumes from: ``checkpoints/last.ckpt``, written on a fixed step interval and after every
validation whatever the validation found, holding everything an uninterrupted run would still have in memory.

Lightning's checkpoint holds the weights, optimizer, schedulers, loop counters and callback states. This callback
adds what it leaves out: the random number generators (dropout, zoneout, noise draws), the state a stateful task
carries between batches, and how many rows each CSV logger had written, so that the resumed run continues the very
same ``metrics.csv``. The training order follows the loop counters (``rnnlab.data.base.EpochShuffle``). Together a
SIGKILL at any point and a resume end with the uninterrupted run's metrics.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torchmetrics
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from rnnlab.errors import require_positive

log = logging.getLogger(__name__)

LAST = "last.ckpt"


class ResumePoint(Checkpoint):
    """Write ``<dirpath>/last.ckpt`` every ``every_n_steps`` optimizer steps (between two batches) and after each
    validation.

    The file is written beside and renamed into place, so a kill mid-write leaves the previous resume point whole.
    A ``Checkpoint``, Lightning runs it after the other callbacks (after ``ModelCheckpoint`` has taken in the
    validation), so the states it saves are those of the finished step.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 100):
        require_positive(every_n_steps=every_n_steps)
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self._trainer: pl.Trainer | None = None
        self._csv_rows_to_keep: list[int] | None = None
        self._rng_to_restore: dict[str, Any] | None = None
        self._saved_step = 0
        self._between_batches = False

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer

    def on_fit_start(self, trainer, pl_module):
        """A resumed run keeps the CSV rows written before its checkpoint, and drops those written after it."""
        if self._csv_rows_to_keep is not None:
            for logger, rows in zip(csv_loggers(trainer), self._csv_rows_to_keep):
                keep_csv_rows(logger, rows)
        self._csv_rows_to_keep = None

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        self._saved_step = trainer.global_step
        for logger in csv_loggers(trainer):
            logger.save()  # flush, so the rows counted in the checkpoint are on disk
        partial = self.path.with_name(LAST + ".partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier("resume point")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        """Every ``every_n_steps`` steps, before the next batch is trained: the finished step's metrics are logged
        by then and the generators stand where that batch draws from them (a resumed run restores them here)."""
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        step = trainer.global_step
        if (
            step % self.every_n_steps == 0
            and step != self._saved_step
            and batch_idx % trainer.accumulate_grad_batches == 0
        ):
            self._between_batches = True
            self.save(trainer)
            self._between_batches = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        """Lightning counts a step for a restart mid-epoch, as if the checkpoint came from a batch's end; one saved
        between batches has counted it already, so the logged step labels of the resumed run would shift by one."""
        if self._between_batches:
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def state_dict(self) -> dict[str, Any]:
        module = self._trainer.lightning_module if self._trainer is not None else None
        training_log = getattr(module, "training_log", None)
        return {
            "rng": rng_state(),
            "step": self._trainer.global_step if self._trainer is not None else 0,
            "carried_state": getattr(module, "carried_state", {}).get("train"),
            "training_log": training_log.state_dict() if training_log is not None else None,
            "train_metrics": {name: {key: getattr(metric, key) for key in metric._defaults}
                              for name, metric in training_metrics(module)},
            "csv_rows": [csv_row_count(logger) for logger in csv_loggers(self._trainer)] if self._trainer else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called by Lightning while it restores the checkpoint, before the resumed run's first step."""
        self._rng_to_restore, self._saved_step = state_dict["rng"], state_dict["step"]
        module = self._trainer.lightning_module if self._trainer is not None else None
        if state_dict["carried_state"] is not None and hasattr(module, "carried_state"):
            module.carried_state["train"] = state_dict["carried_state"]
        if state_dict["training_log"] is not None and hasattr(module, "training_log"):
            module.training_log.load_state_dict(state_dict["training_log"])
        for name, metric in training_metrics(module):
            for key, value in state_dict["train_metrics"].get(name, {}).items():
                setattr(metric, key, value)
        self._csv_rows_to_keep = state_dict["csv_rows"]


def resume_point(trainer: pl.Trainer, start_over: bool) -> str | None:
    """The resume point (``last.ckpt`` of the trainer's :class:`ResumePoint`) an interrupted attempt left, or None to
    start afresh. After a failed attempt (``start_over``) the checkpoints are removed and the run starts afresh."""
    points = [callback for callback in trainer.callbacks if isinstance(callback, ResumePoint)]
    if not points:
        return None
    if start_over:
        shutil.rmtree(points[0].dirpath, ignore_errors=True)
        return None
    if points[0].path.exists():
        log.info("resuming the interrupted run from %s", points[0].path)
        return str(points[0].path)
    return None


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The checkpoint chosen by validation (the first ModelCheckpoint's best), which test metrics are computed on."""
    chosen = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    return (chosen.best_model_path or None) if chosen is not None else None


def training_metrics(module: pl.LightningModule | None) -> list[tuple[str, torchmetrics.Metric]]:
    """The torchmetrics objects that accumulate the training epoch (``<name>.train_`` in a task's StageDict)."""
    if module is None:
        return []
    return [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, torchmetrics.Metric) and name.endswith("train_")
    ]


def rng_state() -> dict[str, Any]:
    """Every generator training draws from: torch (CPU and CUDA), NumPy and Python's, as checkpoint-safe values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached": cached},  # checkpoints load with weights_only: no NumPy arrays
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached"]))
    random.setstate(state["python"])


def csv_loggers(trainer: pl.Trainer) -> list[CSVLogger]:
    """The CSV loggers, on the process that writes their files (rank 0)."""
    return [logger for logger in trainer.loggers if isinstance(logger, CSVLogger)] if trainer.is_global_zero else []


def csv_row_count(logger: CSVLogger) -> int:
    path = Path(logger.experiment.metrics_file_path)
    if not path.is_file():
        return 0
    with open(path, newline="") as handle:
        return max(0, sum(1 for _ in csv.reader(handle)) - 1)


def keep_csv_rows(logger: CSVLogger, rows: int) -> None:
    """Cut ``metrics.csv`` to its first ``rows`` data rows (the rest came after the resume point) and let the writer
    append to it with its header."""
    writer = logger.experiment
    path = Path(writer.metrics_file_path)
    writer.metrics = []
    if not path.is_file():
        return
    if rows == 0:
        path.unlink()
        writer.metrics_keys = []
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header, kept = list(reader.fieldnames or []), [row for _, row in zip(range(rows), reader)]
    with open(path, "w", newline="") as handle:
        out = csv.DictWriter(handle, fieldnames=header)
        out.writeheader()
        out.writerows(kept)
    writer.metrics_keys = header
