"""The memory-network task: answer a query about a story (Sukhbaatar et al. 2015; bAbI, Weston et al. 2015)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from rnnlab.data.base import TaskSpec
from rnnlab.errors import ConfigError
from rnnlab.tasks.sequence import SequenceTask


class MemoryTask(SequenceTask):
    """:class:`SequenceTask` for a memory network that reads a story and a query and gives one answer.

    The model names the batch fields it reads in ``batch_keys`` (``story`` [B, S, L] and ``query`` [B, L_q] word
    ids from ``data.structure=true``) and returns one answer per story, [B, 1, C]; the head reads that answer, the
    loss and metrics are the base task's (cross-entropy and accuracy over the answer classes). The flat
    ``inputs`` / ``lengths`` of the batch are passed too and ignored by the model. Loss, optimizer, scheduler,
    logging and the run record are those of :class:`SequenceTask`, so memory networks compare with any other model
    on the same data. Selected by ``model=memn2n`` (its config overrides ``task``).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: TaskSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        **kwargs,
    ):
        super().__init__(model, spec, optimizer, scheduler, **kwargs)
        if spec.kind != "classification" or spec.per_step:
            raise ConfigError(
                "_target_", "a memory network gives one answer class per story; use data with one class target "
                "per sequence (data=babi_synthetic) or task=sequence"
            )
        if not getattr(model, "batch_keys", ()):
            raise ConfigError("_target_", f"{type(model).__name__} reads no story; MemoryTask needs e.g. model=memn2n")

    def head(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The answer logits [B, C] from the model's [B, 1, C]."""
        return outputs[:, -1]
