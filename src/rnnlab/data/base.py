"""The datamodule contract every dataset follows (GUIDE.md section 1).

A datamodule yields batches ``{"inputs": [B, T, F] float, "lengths": [B] long, "targets": ...}`` with padding at the
end of each sequence (``inputs`` are [B, T] long token ids instead when ``task.input_vocab`` is set), and exposes
``input_size``, ``output_size`` and ``task`` (a :class:`TaskSpec`) so that any model can be wired to it. Targets
are ``[B]`` / ``[B, D]`` for one target per sequence and ``[B, T]`` / ``[B, T, D]`` for one per step; padded
per-step class targets hold ``IGNORE_INDEX``. A batch may carry ``target_mask`` [B, T] bool: the steps whose per-step
targets count in the loss (e.g. only the future frames of a frame-prediction clip); False on padding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import pytorch_lightning as pl
import torch
from numpy.random import SeedSequence
from torch.utils.data import DataLoader, Dataset, Sampler

from rnnlab.errors import ConfigError, require_positive

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
TASK_KINDS = ("regression", "classification", "ctc", "multilabel")
METRICS = ("mse", "acc", "bpc", "ppl", "ler", "nll")


@dataclass(frozen=True)
class TaskSpec:
    """What the data asks of a model: the loss family, where targets sit, and the headline metric.

    kind:      ``regression`` (MSE), ``classification`` (cross-entropy), ``ctc`` (a label sequence per sequence,
               CTC loss; batches add ``target_lengths``) or ``multilabel`` (independent binary targets, BCE)
    per_step:  targets at every valid step (language modelling, copy task) or one per sequence
    metric:    the headline test metric: ``mse``, ``acc``, ``bpc`` (bits per character = cross-entropy / ln 2) or
               ``ppl`` (perplexity = exp of the token-averaged cross-entropy over the epoch); ``ler`` (label error
               rate of greedy CTC decoding) or ``nll`` (multilabel NLL summed over labels, averaged over steps)
    baseline:  the documented score of a trivial predictor on the test metric's loss, for reference in records
    input_vocab: when set, inputs are token ids, LongTensor [B, T] in [0, input_vocab), which the task embeds
               before the model (instead of float features [B, T, F])
    stateful:  consecutive batches continue the same streams (row b of batch k+1 follows row b of batch k), so the
               task carries the model state across batches and the train loader does not shuffle
    """

    kind: str
    per_step: bool
    metric: str
    baseline: float | None = None
    input_vocab: int | None = None
    stateful: bool = False


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


def pad_collate(
    items: list[tuple[torch.Tensor, torch.Tensor]], per_step: bool, kind: str = "classification"
) -> dict[str, torch.Tensor]:
    """Stack variable-length sequences, padding at the end; padded per-step class targets hold IGNORE_INDEX.

    Items are (inputs, targets) or (inputs, targets, target_mask [T] bool), the mask batched as ``target_mask``.
    """
    inputs, targets, *masks = zip(*items)
    lengths = torch.tensor([x.shape[0] for x in inputs], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(list(inputs), batch_first=True)
    if kind == "ctc":  # label sequences [S_i], padded with the blank 0; their lengths go in "target_lengths"
        stacked = torch.nn.utils.rnn.pad_sequence(list(targets), batch_first=True, padding_value=0)
    elif per_step:
        pad_value = IGNORE_INDEX if targets[0].dtype == torch.long else 0.0
        stacked = torch.nn.utils.rnn.pad_sequence(list(targets), batch_first=True, padding_value=pad_value)
    else:
        stacked = torch.stack(targets)
    batch = {"inputs": padded, "lengths": lengths, "targets": stacked}
    if kind == "ctc":
        batch["target_lengths"] = torch.tensor([len(t) for t in targets], dtype=torch.long)
    if masks:
        batch["target_mask"] = torch.nn.utils.rnn.pad_sequence(list(masks[0]), batch_first=True, padding_value=False)
    return batch


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch`` of a run seeded ``seed``, a function of the two alone (resumed runs repeat it)."""
    return int(SeedSequence([seed, epoch]).generate_state(1)[0])


class EpochShuffle(Sampler[int]):
    """Epoch e visits the items in a permutation drawn from (seed, e) alone, so a run resumed from a checkpoint at
    epoch e sees the same order as one that was never interrupted. Lightning calls ``set_epoch`` before each epoch."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


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
        shuffle = shuffle and not self.task.stateful  # stateful streams must arrive in order
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            sampler=EpochShuffle(len(self.splits[split]), self.seed) if shuffle else None,
            collate_fn=partial(pad_collate, per_step=self.task.per_step, kind=self.task.kind),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
