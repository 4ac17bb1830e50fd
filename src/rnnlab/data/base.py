"""The datamodule contract every dataset follows (CONTRIBUTING.md, 'One path for every run' and 'Add a dataset').

A datamodule yields batches ``{"inputs": [B, T, F] float, "lengths": [B] long, "targets": ...}`` with padding at the
end of each sequence (``inputs`` are [B, T] long token ids instead when ``task.input_vocab`` is set), and exposes
``input_size``, ``output_size`` and ``task`` (a :class:`TaskSpec`) so that any model can be wired to it. Targets
are ``[B]`` / ``[B, D]`` for one target per sequence and ``[B, T]`` / ``[B, T, D]`` for one per step; padded
per-step class targets hold ``IGNORE_INDEX``. A batch may carry ``target_mask`` [B, T] bool: the steps whose per-step
targets count in the loss (e.g. only the future frames of a frame-prediction clip); False on padding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Callable, ClassVar

import pytorch_lightning as pl
import torch
from numpy.random import SeedSequence
from torch.utils.data import DataLoader, Dataset, Sampler

from rnnlab.errors import ConfigError, require_positive

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
INDEX_BATCHES_BYTES = 256 * 2**20  # the largest padded copy of a split kept for batching by index
TASK_KINDS = ("regression", "classification", "ctc", "multilabel")
METRICS = ("mse", "acc", "bpc", "ppl", "ler", "nll")
# layouts of batch inputs (CONTRIBUTING.md, 'The model interface'); a model that reads another names it in
# ``input_layout``
SEQUENCE_LAYOUT = "[batch, time, features]"
FRAMES_LAYOUT = "[batch, time, channels, height, width]"  # images (T = 1) and video


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

    batch_by_index = True  # see IndexBatches

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
    if isinstance(items, dict):  # a batch an IndexBatches split collated itself
        return items
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


class IndexBatches(Dataset):
    """An in-memory split served a batch at a time by indexing one collated copy of the whole split.

    Collating a batch item by item costs a Python call and a copy per sequence; the DataLoader instead asks
    ``__getitems__`` for all of a batch's indices and gets the rows of ``collate(every item)``, cut to the batch's
    longest sequence (and, for CTC, its longest label sequence): exactly ``collate`` of the batch's items, as the
    padding values are constants. ``collate`` passes the finished batch through.
    """

    def __init__(self, items: Dataset, collate: Callable[[list], dict[str, torch.Tensor]], per_step: bool, kind: str):
        self.items = items
        self.whole = collate([items[i] for i in range(len(items))])
        self.per_step_keys = ["inputs", "target_mask"] + (["targets"] if per_step and kind != "ctc" else [])
        self.ctc = kind == "ctc"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        batch = {key: value[index] for key, value in self.whole.items()}
        steps = int(batch["lengths"].max())
        for key in self.per_step_keys:
            if key in batch:
                batch[key] = batch[key][:, :steps]
        if self.ctc:
            batch["targets"] = batch["targets"][:, : int(batch["target_lengths"].max())]
        return batch


def padded_copy_fits(items: Dataset, limit_bytes: int) -> bool:
    """Whether a padded copy of ``items`` (inputs at the longest length, like collate's) stays under the limit."""
    lengths = [len(items[i][0]) for i in range(len(items))]
    first = items[0][0]
    per_step = first[0].numel() if first.dim() > 1 else 1
    return len(lengths) * max(lengths, default=0) * per_step * first.element_size() <= limit_bytes


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch`` of a run seeded ``seed``, a function of the two alone (resumed runs repeat it)."""
    return int(SeedSequence([seed, epoch]).generate_state(1)[0])


class EpochShuffle(Sampler[int]):
    """Epoch e visits the items in a permutation drawn from (seed, e) alone (``shuffle=False``: in order).

    Training position: Lightning calls ``set_epoch`` before each epoch, but on a run resumed mid-epoch it draws the
    first batch before that call. Given ``position`` (a callable returning, while the trainer resumes an interrupted
    epoch, that epoch, the batches already trained in it and the number of processes sharing the order; else None),
    the sampler starts such a pass at the next untrained batch: a run resumed from any checkpoint sees the batches an
    uninterrupted run would.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.epoch, self.shuffle = size, seed, 0, shuffle
        self.batch_size = 1
        self.position: Callable[[], tuple[int, int, int] | None] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def follow(self, position: Callable[[], tuple[int, int, int] | None], batch_size: int) -> EpochShuffle:
        self.position, self.batch_size = position, batch_size
        return self

    def __iter__(self):
        skip = 0
        position = self.position() if self.position is not None else None
        if position is not None:
            self.epoch, batches_done, processes = position
            skip = batches_done * self.batch_size * processes
        return iter(self.order()[skip:])

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        return torch.randperm(self.size, generator=self.epoch_generator()).tolist()

    def epoch_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))

    def __len__(self) -> int:
        return self.size


class LengthBuckets(EpochShuffle):
    """Epoch e's permutation (as :class:`EpochShuffle`), cut into pools of ``POOL_BATCHES`` batches; each pool is
    sorted by sequence length and cut into batches, and the batches are visited in an order drawn from (seed, e)
    too. Batches hold sequences of similar length, so little padding is computed, and a fused kernel runs few
    segments (``FusedRecurrentNetwork.run_segments``); the order is still a function of the data seed and the epoch
    alone. Yields indices, the batches one after another (a batch sampler would defeat Lightning's distributed
    sampler); the one short batch comes last.
    """

    POOL_BATCHES = 50

    def __init__(self, lengths: torch.Tensor, batch_size: int, seed: int):
        super().__init__(len(lengths), seed)
        self.lengths = lengths
        self.batch_size = batch_size

    def order(self) -> list[int]:
        generator = self.epoch_generator()
        order = torch.randperm(self.size, generator=generator)
        batches = []
        for pool in order.split(self.batch_size * self.POOL_BATCHES):
            batches.extend(pool[torch.argsort(self.lengths[pool], stable=True)].split(self.batch_size))
        short = [batch for batch in batches if len(batch) < self.batch_size]
        full = [batch for batch in batches if len(batch) == self.batch_size]
        visit = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        return torch.cat(visit + short).tolist() if batches else []


class SequenceDataModule(pl.LightningDataModule):
    """Seeded splits and loaders; subclasses implement ``build_splits`` and set ``input_size``, ``output_size``,
    ``task``.

    ``seed`` (config ``data.seed``) fixes the generated data, the split and the shuffling order, independently of the
    model's seed, so every arm of a comparison sees the same data in the same order. ``bucket`` (config
    ``data.bucket``) batches sequences of similar length for training (:class:`LengthBuckets`).
    """

    input_size: int
    output_size: int
    task: TaskSpec
    frames_with: ClassVar[dict] = {}  # settings under which inputs are FRAMES_LAYOUT (image, video); else sequences
    structure_keys: tuple[str, ...] = ()  # the batch keys ``structure: true`` adds (trees, stories; data.reasoning)

    @classmethod
    def input_layout(cls, config: Mapping) -> str:
        """The layout of ``inputs`` under ``config`` (this class's keyword arguments), known before any data is read:
        ``rnnlab-train`` refuses at start a model whose ``input_layout`` differs (``rnnlab.config_values``)."""
        frames = cls.frames_with and all(config.get(key) == value for key, value in cls.frames_with.items())
        return FRAMES_LAYOUT if frames else SEQUENCE_LAYOUT

    def check_sources(self) -> None:
        """Raise ConfigError(``root``) when a file the data must read is missing; cheap (reads nothing), so
        ``rnnlab-train`` calls it at start for a ``data.root`` given on the command line. Default: nothing to check."""

    def __init__(self, batch_size: int = 64, seed: int = 0, num_workers: int = 0, bucket: bool = False):
        super().__init__()
        require_positive(batch_size=batch_size)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError("seed", f"must be a non-negative integer, got {seed!r}")
        if num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got {num_workers!r}")
        if not isinstance(bucket, bool):
            raise ConfigError("bucket", f"must be true or false, got {bucket!r}")
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.bucket = bucket
        self.splits: dict[str, Dataset] = {}
        self.index_batches: dict[str, IndexBatches] = {}

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
        collate = partial(pad_collate, per_step=self.task.per_step, kind=self.task.kind)
        return DataLoader(
            self.batched_split(split, collate),
            batch_size=self.batch_size,
            sampler=self.training_order(split) if split == "train" else None,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def training_order(self, split: str) -> EpochShuffle:
        """The training order: a permutation per epoch, with ``bucket`` batches of similar lengths, in order for
        stateful streams (they must arrive in order); it follows the trainer's position (exact resume)."""
        items = self.splits[split]
        if self.bucket and not self.task.stateful:
            lengths = torch.tensor([len(items[i][0]) for i in range(len(items))])
            order = LengthBuckets(lengths, self.batch_size, self.seed)
        else:
            order = EpochShuffle(len(items), self.seed, shuffle=not self.task.stateful)
        return order.follow(self.training_position, self.batch_size)

    def training_position(self) -> tuple[int, int, int] | None:
        """(epoch, batches already trained in it, processes sharing the order) of an attached trainer that is
        resuming an interrupted epoch, else None (the pass follows ``set_epoch``)."""
        trainer = self.trainer
        if trainer is None or not trainer.fit_loop.restarting:
            return None
        loop = trainer.fit_loop
        return (
            loop.epoch_progress.current.processed,
            loop.epoch_loop.batch_progress.current.processed,
            trainer.world_size,
        )

    def batched_split(self, split: str, collate: Callable) -> Dataset:
        """``splits[split]``, served by :class:`IndexBatches` when its class says it holds its tensors in memory
        (``batch_by_index``) and its padded copy takes at most INDEX_BATCHES_BYTES (built once per split)."""
        items = self.splits[split]
        if not getattr(items, "batch_by_index", False) or not padded_copy_fits(items, INDEX_BATCHES_BYTES):
            return items
        if split not in self.index_batches:
            self.index_batches[split] = IndexBatches(items, collate, self.task.per_step, self.task.kind)
        return self.index_batches[split]

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
