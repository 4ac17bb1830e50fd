"""Training an encoder-decoder (``rnnlab.models.seq2seq.Seq2Seq``) on per-step class targets: teacher forcing or
scheduled sampling (Bengio, Vinyals, Jaitly & Shazeer 2015, "Scheduled Sampling for Sequence Prediction with
Recurrent Neural Networks"), and evaluation in free-running mode (greedy or beam search).

Any datamodule with per-step class targets serves: the source is the batch's ``inputs`` (its valid steps) and the
target sequence is, per row, the targets at the steps that count (valid, not ``IGNORE_INDEX``, ``target_mask`` where
given), in order. For ``reversal`` (and ``copy`` with ``answer_only``) that is just the answer; for plain ``copy`` it
is every step's target, blanks included.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torchmetrics
from torch import nn

from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.base import valid_step_mask
from rnnlab.tasks.sequence import SequenceTask, StageDict

SAMPLINGS = ("teacher_forcing", "scheduled")
SCHEDULES = ("linear", "exponential", "inverse_sigmoid")
SCHEDULE_K = {"linear": 1.0, "exponential": 0.999, "inverse_sigmoid": 100.0}  # used when schedule_k is null
SAMPLED_TOKENS = ("sample", "argmax")


class SamplingSchedule:
    """The probability eps_i of feeding the gold previous token at training step i (Bengio et al. 2015, section 2.4).

        linear:           eps_i = max(eps, k - c i)        (0 <= eps < 1 the floor ``minimum``, k offset, c slope)
        exponential:      eps_i = k^i                      (0 < k < 1)
        inverse_sigmoid:  eps_i = k / (k + exp(i / k))     (k >= 1)
    """

    def __init__(self, schedule: str, k: float | None = None, c: float = 1e-3, minimum: float = 0.0):
        require_choice("schedule", schedule, SCHEDULES)
        k = SCHEDULE_K[schedule] if k is None else k
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise ConfigError("schedule_k", f"must be a number, got {k!r}")
        if schedule == "linear":
            require_positive(schedule_k=k, schedule_c=c)
            if not 0.0 <= minimum < 1.0:
                raise ConfigError("min_teacher_prob", f"must be in [0, 1), got {minimum!r}")
        elif schedule == "exponential" and not 0.0 < k < 1.0:
            raise ConfigError("schedule_k", f"exponential decay k^i needs 0 < k < 1, got {k!r}")
        elif schedule == "inverse_sigmoid" and k < 1.0:
            raise ConfigError("schedule_k", f"inverse sigmoid decay k / (k + exp(i / k)) needs k >= 1, got {k!r}")
        self.schedule, self.k, self.c, self.minimum = schedule, float(k), float(c), float(minimum)

    def __call__(self, step: int) -> float:
        if self.schedule == "linear":
            return max(self.minimum, min(1.0, self.k - self.c * step))
        if self.schedule == "exponential":
            return self.k**step
        return self.k / (self.k + math.exp(min(step / self.k, 700.0)))  # exp overflows past ~709


def target_sequences(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the targets that count, moved to the front: targets [B, S] padded with IGNORE_INDEX, and their
    lengths [B]. S is the longest row's count (at least 1)."""
    targets = batch["targets"]
    positions = valid_step_mask(batch["lengths"], *targets.shape[:2], targets.device) & (targets != IGNORE_INDEX)
    if batch.get("target_mask") is not None:
        positions = positions & batch["target_mask"]
    counts = positions.sum(1)
    slots = torch.arange(max(int(counts.max()), 1), device=targets.device)[None, :] < counts[:, None]
    compact = targets.new_full(slots.shape, IGNORE_INDEX)
    compact[slots] = targets[positions]  # both row-major: the order within each row is kept
    return compact, counts


class Seq2SeqTask(SequenceTask):
    """:class:`SequenceTask` for an encoder-decoder model: optimizer and scheduler wiring, divergence, the loss and
    the metric names are the base's; what differs is how the model is run and scored.

    Training (``sampling``): ``teacher_forcing`` feeds the decoder the gold previous token; ``scheduled`` feeds it
    with probability eps_i (:class:`SamplingSchedule` at the training step i = ``global_step``), else the model's own
    previous token (``sampled_token``: drawn from its softmax, as in Bengio et al. 2015's Figure 1, or its argmax),
    a coin per token. Validation and test always compute the teacher-forced loss.

    Logged, per stage: ``loss`` (cross-entropy per target token; train: under the sampling scheme, val/test: teacher
    forced) and ``tf_acc`` (token accuracy of that same pass). Validation and test also decode in free-running mode
    (the decoder reads its own previous prediction; greedy, or beam search with ``beam_size`` > 1) and log ``acc``,
    the token accuracy of the decoded sequences (the headline metric, comparable with the per-step accuracy of
    models that never see the gold targets), and ``seq_acc``, the fraction of sequences decoded exactly. Training
    logs ``train/teacher_forcing_prob`` (eps_i).
    """

    logged_metrics = (*SequenceTask.logged_metrics, "tf_acc", "seq_acc", "teacher_forcing_prob")

    def __init__(
        self,
        model: nn.Module,
        spec: TaskSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
        embedding_dim: int = 128,
        sampling: str = "teacher_forcing",
        schedule: str = "inverse_sigmoid",
        schedule_k: float | None = None,
        schedule_c: float = 1e-3,
        min_teacher_prob: float = 0.0,
        sampled_token: str = "sample",
        beam_size: int = 1,
    ):
        super().__init__(model, spec, optimizer, scheduler, pooling, embedding_dim)
        if spec.kind != "classification" or not spec.per_step or spec.stateful:
            raise ConfigError(
                "_target_", "task seq2seq needs data with per-step class targets and independent sequences "
                f"(e.g. data=reversal or copy); this data is {spec.kind}{' per step' if spec.per_step else ''}"
                f"{' stateful' if spec.stateful else ''}: use task=sequence with another model"
            )
        if not hasattr(model, "beam_search"):
            raise ConfigError(
                "_target_", f"task seq2seq needs an encoder-decoder model (model=seq2seq), got {type(model).__name__}"
            )
        require_choice("sampling", sampling, SAMPLINGS)
        require_choice("sampled_token", sampled_token, SAMPLED_TOKENS)
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ConfigError("beam_size", f"must be an integer >= 1, got {beam_size!r}")
        self.sampling = sampling
        self.schedule = SamplingSchedule(schedule, schedule_k, schedule_c, min_teacher_prob)
        self.sample_tokens = sampled_token == "sample"
        self.beam_size = beam_size
        self.free_accuracy = StageDict(torchmetrics.MeanMetric)
        self.sequence_accuracy = StageDict(torchmetrics.MeanMetric)

    def teacher_forcing_probability(self, stage: str) -> float:
        """eps for this batch: the schedule at the current training step when training with ``scheduled``, else 1."""
        if stage != "train" or self.sampling == "teacher_forcing":
            return 1.0
        return self.schedule(self.global_step)

    def source(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["inputs"] if self.embedding is None else self.embedding(batch["inputs"])

    def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, lengths = self.source(batch), batch["lengths"]
        targets, target_lengths = target_sequences(batch)
        probability = self.teacher_forcing_probability(stage)
        logits, _ = self.model(
            inputs, lengths, targets=targets, target_lengths=target_lengths, teacher_forcing=probability,
            sample=self.sample_tokens,
        )
        loss, count = self.loss_and_count(logits, targets, target_lengths)
        self.record(stage, "loss", loss, count, prog_bar=True)
        self.record_accuracy(stage, "tf_acc", logits, targets, count)  # token accuracy of the pass that gave the loss
        if stage == "train":
            self.log("train/teacher_forcing_prob", probability, on_step=True, on_epoch=False, batch_size=count)
        else:
            self.free_running_metrics(inputs, lengths, targets, target_lengths, stage)
        return loss

    @torch.no_grad()
    def free_running_metrics(self, inputs, lengths, targets, target_lengths, stage: str) -> None:
        """Decode without the gold tokens; score token accuracy ``acc`` and exactly decoded sequences ``seq_acc``."""
        decoded = self.model.generate(inputs, lengths, target_lengths, beam_size=self.beam_size)
        counted = targets != IGNORE_INDEX
        correct = (decoded == targets) & counted
        self.free_accuracy[stage].update(correct[counted].float())
        self.sequence_accuracy[stage].update((correct == counted).all(1).float())
        self.log(f"{stage}/acc", self.free_accuracy[stage], on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/seq_acc", self.sequence_accuracy[stage], on_step=False, on_epoch=True, prog_bar=True)
