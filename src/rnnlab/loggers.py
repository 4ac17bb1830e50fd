"""Logger construction that Lightning leaves to the user: W&B offline unless logged in, and a clean finish."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


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


def start_loggers(loggers: list[Logger], config: dict, resumed: bool) -> None:
    """Hand every logger the run's resolved config; a resumed run's CSV logger continues its ``metrics.csv``."""
    for logger in loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.continues = resumed
        logger.log_hyperparams(config)


def finish_loggers(loggers: list[Logger], status: str) -> None:
    """Close every logger; W&B runs are finished so the next job of a multirun starts a fresh run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=0 if status != "failed" else 1)
        else:
            logger.finalize(status if status == "failed" else "success")


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
