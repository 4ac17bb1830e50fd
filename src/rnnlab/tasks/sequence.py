"""The base LightningModule: what must be identical across a comparison (GUIDE.md sections 1 and 4).

It owns the head (which outputs meet the targets), the loss, the metrics, optimizer and scheduler construction and
divergence detection. Gradient clipping is the Trainer's (``trainer.gradient_clip_val`` / ``_algorithm``), so it is
the same code path for every model.
"""

from __future__ import annotations

import math
from typing import Callable

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.errors import require_choice
from rnnlab.models.base import valid_step_mask

POOLINGS = ("last", "mean")
STAGES = ("train", "val", "test")


class SequenceTask(pl.LightningModule):
    """Train any ``rnnlab.models`` network on any datamodule's :class:`TaskSpec`.

    Heads, chosen by the task:
      * per-step targets (language modelling, copy): every valid step's output, cross-entropy or MSE over valid steps;
      * one target per sequence: the output at the last valid step (``pooling=last``) or the mean of the outputs
        over valid steps (``pooling=mean``), then cross-entropy (classification) or MSE (regression).

    Logged: ``<stage>/loss`` averaged over targets (steps or sequences), and the task's metric ``<stage>/acc``,
    ``<stage>/mse`` or ``<stage>/bpc``. A non-finite training loss stops training and sets ``diverged``.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: TaskSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
    ):
        super().__init__()
        require_choice("pooling", pooling, POOLINGS)
        self.model = model
        self.spec = spec
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.pooling = pooling
        self.diverged_at_step: int | None = None
        if spec.kind == "classification":
            self.accuracy = nn.ModuleDict(
                {
                    stage: torchmetrics.Accuracy(
                        task="multiclass", num_classes=model.output_size, ignore_index=IGNORE_INDEX
                    )
                    for stage in STAGES
                }
            )

    @property
    def diverged(self) -> bool:
        return self.diverged_at_step is not None

    def head(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Select the outputs that meet the targets: [B, T, C] for per-step targets, else [B, C]."""
        if self.spec.per_step:
            return outputs
        if self.pooling == "last":
            return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths - 1]
        mask = valid_step_mask(lengths, *outputs.shape[:2], outputs.device).unsqueeze(-1)
        return (outputs * mask).sum(1) / lengths.to(outputs.dtype).unsqueeze(-1)

    def loss_and_count(self, predictions: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor):
        """Mean loss over targets, and the number of targets it averages (for epoch-level weighting)."""
        if self.spec.kind == "classification":
            logits = predictions.reshape(-1, predictions.shape[-1])
            flat = targets.reshape(-1)
            count = int((flat != IGNORE_INDEX).sum())
            return nn.functional.cross_entropy(logits, flat, ignore_index=IGNORE_INDEX), count
        if self.spec.per_step:
            mask = valid_step_mask(lengths, *predictions.shape[:2], predictions.device).unsqueeze(-1)
            squared = (predictions - targets) ** 2 * mask
            count = int(mask.sum()) * predictions.shape[-1]
            return squared.sum() / count, count
        return nn.functional.mse_loss(predictions, targets), targets.shape[0]

    def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        outputs, _ = self.model(batch["inputs"], batch["lengths"])
        predictions = self.head(outputs, batch["lengths"])
        loss, count = self.loss_and_count(predictions, batch["targets"], batch["lengths"])
        log = dict(on_step=stage == "train", on_epoch=True, batch_size=count, sync_dist=stage != "train")
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        if self.spec.metric == "mse":
            self.log(f"{stage}/mse", loss, **log)
        elif self.spec.metric == "bpc":
            self.log(f"{stage}/bpc", loss / math.log(2), **log)
        if self.spec.kind == "classification":
            accuracy = self.accuracy[stage]
            accuracy(predictions.reshape(-1, predictions.shape[-1]), batch["targets"].reshape(-1))
            self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):
        loss = self.shared_step(batch, "train")
        if not torch.isfinite(loss):
            self.diverged_at_step = self.global_step
            self.trainer.should_stop = True
            return None  # skip the update; the run ends with status "diverged"
        return loss

    def validation_step(self, batch, batch_idx):
        self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self.shared_step(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
