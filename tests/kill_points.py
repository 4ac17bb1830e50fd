"""A test-only callback that SIGKILLs its own run at a chosen point of training, once (tests/test_resume.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytorch_lightning as pl


class KillAt(pl.Callback):
    """SIGKILL the process after optimizer step ``step``, or in validation batch ``validation_batch`` of epoch
    ``validation_epoch``, unless ``marker`` exists; the marker is written first, so the resumed run, given the very
    same config, trains through."""

    def __init__(self, marker: str, step: int | None = None, validation_epoch: int | None = None,
                 validation_batch: int = 0):
        self.marker = Path(marker)
        self.step, self.validation_epoch, self.validation_batch = step, validation_epoch, validation_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.fire()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if (trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.current_epoch == self.validation_epoch
                and batch_idx == self.validation_batch):
            self.fire()

    def fire(self) -> None:
        if self.marker.exists():
            return
        self.marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
