"""Logger construction that Lightning leaves to the user: W&B offline unless logged in, and a clean finish."""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (``WANDB_API_KEY`` or an api.wandb.ai entry in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def make_wandb_logger(
    offline: bool | None = None, save_dir: str = ".", name: str | None = None, **kwargs
) -> WandbLogger:
    """A WandbLogger that runs offline unless the user is logged in (``offline=null``) or says otherwise.

    ``WANDB_MODE`` in the environment wins over both. Offline runs sync later with ``wandb sync <save_dir>/wandb``.
    """
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_logged_in()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(offline=offline, save_dir=save_dir, name=name or None, **kwargs)


def start_loggers(
    loggers: list[Logger], config: dict, resumed: bool, params: int | None, choices: dict[str, str]
) -> None:
    """Hand every logger the run's resolved config and its trainable parameter count (``params``); a resumed run's
    CSV logger continues its ``metrics.csv`` and its W&B logger its W&B run. W&B gets the config flat
    (:func:`wandb_config`, with the group ``choices``), the form a ``wandb agent`` sweep locks."""
    for logger in loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.continues = resumed
        if isinstance(logger, WandbLogger):
            if rank_zero_only.rank == 0:  # the W&B run lives on rank 0 (DummyExperiment elsewhere)
                continue_wandb_run(logger, resumed)
                held = logger.experiment.config  # a sweep's values, locked: sending them again only warns
                values = {**wandb_config(config, choices), "params": params}
                logger.log_hyperparams({key: value for key, value in values.items() if held.get(key) != value})
        else:
            logger.log_hyperparams({**config, "params": params})


def wandb_config(config: dict, choices: dict[str, str]) -> dict[str, Any]:
    """The resolved config as W&B keys: each leaf under its dotted path (``model.hidden_size``) and each config
    group under its choice (``model: lstm``), which is how a W&B sweep names its parameters. ``wandb agent`` locks
    the swept keys at their swept values; nested dicts under a locked key (``model``) would be dropped, dotted keys
    are not (``rnnlab.report.collect.record_from_wandb`` nests them again)."""
    flat: dict[str, Any] = {}

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                visit(value, f"{path}.{key}" if path else str(key))
        else:
            flat[path] = node

    visit(config, "")
    return {**flat, **choices}


def continue_wandb_run(logger: WandbLogger, resumed: bool) -> None:
    """A resumed run continues its W&B run (the id kept in ``<save_dir>/wandb/rnnlab-run-id``, ``resume="allow"``),
    so its history joins the part before the interruption; a fresh start gets a fresh id. Under ``wandb agent`` the
    agent's run id (``WANDB_RUN_ID``) stands."""
    if os.environ.get("WANDB_RUN_ID") or logger._experiment is not None:
        return
    id_file = Path(logger.save_dir or ".") / "wandb" / "rnnlab-run-id"
    if resumed and id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's form
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    logger._wandb_init.update(id=run_id, resume="allow")  # read by wandb.init when the experiment is first used


class LearningRateLog(pl.Callback):
    """``train/lr``, the learning rate of the optimizer's first parameter group (as a scheduler set it), to every
    logger every ``trainer.log_every_n_steps`` updates. Optimizers without one (hessian_free, ekf, dekf, cmaes,
    genetic) or without parameters (esn's closed-form readout) log nothing; the run record does not hold it."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int):
        """After the batch's updates (and step schedulers), before a resume point is written at the next batch's
        start, so a resumed run neither repeats nor loses a row."""
        if not trainer.loggers or trainer.global_step % trainer.log_every_n_steps:
            return
        groups = [optimizer.param_groups[0] for optimizer in trainer.optimizers if optimizer.param_groups]
        rates = {"train/lr": float(groups[0]["lr"])} if groups and "lr" in groups[0] else {}
        for logger in trainer.loggers if rates else []:
            logger.log_metrics(rates, step=trainer.global_step)


@contextmanager
def logged_as_best(trainer: pl.Trainer) -> Iterator[None]:
    """Around the validation of the best checkpoint after fit: its ``val/*`` metrics go to the loggers as
    ``best/val/*`` at the last step, not as one more point of the ``val/*`` curves."""
    loggers = trainer.loggers
    trainer.loggers = []
    try:
        yield
    finally:
        trainer.loggers = loggers
    best = {f"best/{name}": float(value) for name, value in trainer.callback_metrics.items() if name.startswith("val/")}
    for logger in loggers:
        logger.log_metrics(best, step=trainer.global_step)


def finish_loggers(loggers: list[Logger], record: dict[str, Any], record_path: Path | None) -> None:
    """Close every logger with what the run record says (``rnnlab.run_record``): TensorBoard's HParams get the final
    metrics; a W&B run's summary gets the record (status, parameters, timing, memory, metrics), ``summary.json`` as an
    artifact, its best checkpoint with ``log_model``, and an exit code that marks a failed or diverged run failed, so
    the next job of a multirun starts a fresh run."""
    for logger in loggers:
        try:
            if isinstance(logger, TensorBoardLogger) and record.get("metrics"):
                logger.log_hyperparams(logger.hparams, metrics={f"hp/{k}": v for k, v in record["metrics"].items()})
            if isinstance(logger, WandbLogger):
                if logger._experiment is not None:
                    finish_wandb_run(logger, record, record_path)
                continue
            logger.finalize("success" if record["status"] == "completed" else "failed")
        except Exception as error:  # noqa: BLE001 - the record is written; a logger that fails to close loses nothing
            log.warning("could not close %s: %s", type(logger).__name__, error)


def finish_wandb_run(logger: WandbLogger, record: dict[str, Any], record_path: Path | None) -> None:
    import wandb  # only a run with a W&B logger needs it

    run = logger.experiment
    run.summary.update({key: value for key, value in record.items() if key not in ("config", "env")})
    if record_path is not None:
        artifact = wandb.Artifact(f"record-{run.id}", type="run-record")
        artifact.add_file(str(record_path))
        run.log_artifact(artifact)
    logger.finalize("success" if record["status"] == "completed" else "failed")  # log_model: the checkpoints
    run.finish(exit_code=0 if record["status"] == "completed" else 1)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run (``continues``, set by rnnlab-train) keeps the
    ``metrics.csv`` it finds, which ``rnnlab.training.resume.ResumePoint`` cuts back to its checkpoint; a fresh run
    starts the file afresh, as Lightning's does."""

    continues = False

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = (_ContinuingWriter if self.continues else ExperimentWriter)(log_dir=self.log_dir)
        return self._experiment


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep the earlier rows (Lightning's writer deletes them)."""
