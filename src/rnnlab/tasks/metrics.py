"""What ``rnnlab.tasks.sequence.SequenceTask`` logs beyond torchmetrics: the training metrics' cheap log
(:class:`TrainingLog`), CTC and multilabel losses, greedy CTC decoding and its label error rate, and perplexity over
an epoch."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from rnnlab.models.base import valid_step_mask


class TrainingLog:
    """Training metrics at the cost of a few tensor operations per step (CONTRIBUTING.md, 'Speed rules').

    ``LightningModule.log`` costs about half a millisecond a call on a CPU (a tenth of the default job's step), so
    the training loop calls it only on the steps the loggers write (``trainer.log_every_n_steps``), for the step's
    value as ``<name>_step``, and once per epoch, in ``flush``, for the epoch's mean weighted by the number of
    targets as ``<name>``: the names and values Lightning gives ``self.log(..., on_step=True, on_epoch=True)``,
    whose epoch value it files under ``<name>_epoch``. Epoch means are per process, as they were before.
    """

    def __init__(self):
        self.values: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.weights: dict[str, list[int]] = defaultdict(list)
        self.at_epoch_end: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}

    def add(self, task: pl.LightningModule, name: str, value: torch.Tensor, weight: int, prog_bar: bool = False,
            at_epoch_end: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Add ``value``, a mean over ``weight`` targets; ``at_epoch_end`` maps the epoch mean to what is logged
        (no step values then: perplexity is a function of the epoch's mean loss only)."""
        value = value.detach()
        self.values[name].append(value)
        self.weights[name].append(weight)
        if at_epoch_end is not None:
            self.at_epoch_end[name] = at_epoch_end
        elif task._trainer is not None and task._trainer._logger_connector.should_update_logs:  # as Lightning asks
            task.log(f"{name}_step", value, on_step=True, on_epoch=False, prog_bar=prog_bar)

    def flush(self, task: pl.LightningModule) -> None:
        """Log each epoch mean and start the next epoch afresh."""
        for name, values in self.values.items():
            weights = torch.tensor(self.weights[name], dtype=values[0].dtype, device=values[0].device)
            mean = (torch.stack(values) * weights).sum() / weights.sum().clamp(min=1)
            task.log(name, self.at_epoch_end.get(name, lambda x: x)(mean), on_step=False, on_epoch=True)
        self.values.clear()
        self.weights.clear()

    def state_dict(self) -> dict[str, Any]:
        """The epoch so far, for a resume point (``rnnlab.training.resume``); epoch-end maps are torch functions."""
        return {
            "values": {name: torch.stack(values) for name, values in self.values.items()},
            "weights": dict(self.weights),
            "at_epoch_end": {name: fn.__name__ for name, fn in self.at_epoch_end.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = defaultdict(list, {name: list(values) for name, values in state["values"].items()})
        self.weights = defaultdict(list, {name: list(weights) for name, weights in state["weights"].items()})
        self.at_epoch_end = {name: getattr(torch, fn) for name, fn in state["at_epoch_end"].items()}


class EpochPerplexity(torchmetrics.MeanMetric):
    """Perplexity exp(sum_i n_i L_i / sum_i n_i) of batch losses L_i over n_i tokens, accumulated over an epoch."""

    def compute(self) -> torch.Tensor:
        return torch.exp(super().compute())


def ctc_loss_and_count(logits, targets, lengths, target_lengths, blank: int = 0):
    """CTC loss (Graves et al. 2006) summed over the batch per reference label, and the number of labels.

    logits [B, T, C] (log-softmax taken here, in float32), targets [B, S] padded, lengths [B], target_lengths [B].
    A sequence too short for its labels would score infinity; it counts zero instead (datamodules check lengths).
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T, B, C]
    total = nn.functional.ctc_loss(
        log_probs, targets, lengths, target_lengths, blank=blank, reduction="sum", zero_infinity=True
    )
    count = int(target_lengths.sum())
    return total / max(count, 1), count


def multilabel_nll_and_count(logits, targets, lengths):
    """Bernoulli NLL of targets [B, T, K] in {0, 1} under sigmoid(logits), summed over K, averaged over valid steps."""
    mask = valid_step_mask(lengths, *logits.shape[:2], logits.device)
    nll = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)  # [B, T]
    count = int(mask.sum())
    return torch.where(mask, nll, 0.0).sum() / count, count


def greedy_ctc_decode(logits: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path decoding: the argmax class of every valid step, repeats collapsed, then blanks dropped."""
    best = logits.argmax(-1).cpu()
    decoded = []
    for row, length in zip(best, lengths.tolist()):
        collapsed = torch.unique_consecutive(row[:length])
        decoded.append(collapsed[collapsed != blank].tolist())
    return decoded


def edit_distance(hypothesis: list[int], reference: list[int]) -> int:
    """Levenshtein distance: the fewest substitutions, insertions and deletions turning hypothesis into reference."""
    previous = list(range(len(reference) + 1))
    for i, label in enumerate(hypothesis, start=1):
        current = [i]
        for j, wanted in enumerate(reference, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (label != wanted)))
        previous = current
    return previous[-1]


class LabelErrorRate(torchmetrics.Metric):
    """Summed edit distance of decoded label sequences to the references over the summed reference length."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("errors", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, hypotheses: list[list[int]], targets: torch.Tensor, target_lengths: torch.Tensor) -> None:
        """hypotheses: decoded labels per sequence; targets [B, S] padded; target_lengths [B]."""
        for hypothesis, reference, length in zip(hypotheses, targets.tolist(), target_lengths.tolist()):
            self.errors += edit_distance(hypothesis, reference[:length])
            self.total += length

    def compute(self) -> torch.Tensor:
        return self.errors / self.total
