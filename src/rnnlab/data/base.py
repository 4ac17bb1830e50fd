"""The datamodule contract every dataset follows (GUIDE.md section 1).

A datamodule yields batches ``{"inputs": [B, T, F] float, "lengths": [B] long, "targets": ...}`` with padding at the
end of each sequence, and exposes ``input_size``, ``output_size`` and ``task`` (a :class:`TaskSpec`) so that any
model can be wired to it. Targets are ``[B]`` / ``[B, D]`` for one target per sequence and ``[B, T]`` / ``[B, T, D]``
for one per step; padded per-step class targets hold ``IGNORE_INDEX``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from rnnlab.errors import ConfigError, require_positive

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
TASK_KINDS = ("regression", "classification")
METRICS = ("mse", "acc", "bpc")


@dataclass(frozen=True)
class TaskSpec:
    """What the data asks of a model: the loss family, where targets sit, and the headline metric.

    kind:      ``regression`` (MSE) or ``classification`` (cross-entropy)
    per_step:  targets at every valid step (language modelling, copy task) or one per sequence
    metric:    the headline test metric: ``mse``, ``acc`` or ``bpc`` (bits per character = cross-entropy / ln 2)
    baseline:  the documented score of a trivial predictor on the test metric's loss, for reference in records
    """

    kind: str
    per_step: bool
    metric: str
    baseline: float | None = None


class SequenceDataset(Dataset):
    """In-memory sequences: a list of [T_i, F] input tensors and their targets."""

    def __init__(self, inputs: list[torch.Tensor] | torch.Tensor, targets: list[torch.Tensor] | torch.Tensor):
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]


def pad_collate(items: list[tuple[torch.Tensor, torch.Tensor]], per_step: bool) -> dict[str, torch.Tensor]:
    """Stack variable-length sequences, padding at the end; padded per-step class targets hold IGNORE_INDEX."""
    inputs, targets = zip(*items)
    lengths = torch.tensor([x.shape[0] for x in inputs], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(list(inputs), batch_first=True)
    if per_step:
        pad_value = IGNORE_INDEX if targets[0].dtype == torch.long else 0.0
        stacked = torch.nn.utils.rnn.pad_sequence(list(targets), batch_first=True, padding_value=pad_value)
    else:
        stacked = torch.stack(targets)
    return {"inputs": padded, "lengths": lengths, "targets": stacked}


class SequenceDataModule(pl.LightningDataModule):
    """Seeded splits and loaders; subclasses implement ``build_splits`` and set ``input_size``, ``output_size``, ``task``.

    ``seed`` (config ``data.seed``) fixes the generated data, the split and the shuffling order, independently of the
    model's seed, so every arm of a comparison sees the same data in the same order.
    """

    input_size: int
    output_size: int
    task: TaskSpec

    def __init__(self, batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__()
        require_positive(batch_size=batch_size)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError("seed", f"must be a non-negative integer, got {seed!r}")
        if num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got {num_workers!r}")
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.splits: dict[str, Dataset] = {}

    def build_splits(self) -> dict[str, Dataset]:
        """Return {"train": ..., "val": ..., "test": ...}."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.build_splits()
            log.info(self.describe())

    def describe(self) -> str:
        sizes = ", ".join(f"{name} {len(split)}" for name, split in self.splits.items())
        return (
            f"{type(self).__name__}: {sizes} sequences; input_size {self.input_size}, output_size {self.output_size}, "
            f"task {self.task.kind}{' per step' if self.task.per_step else ''}, metric {self.task.metric}"
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=partial(pad_collate, per_step=self.task.per_step),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
