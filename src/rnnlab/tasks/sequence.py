"""The base LightningModule: what must be identical across a comparison (CONTRIBUTING.md, 'One path for every run'
and 'Identical conditions').

It owns the head (which outputs meet the targets), the loss, the metrics, optimizer and scheduler construction and
divergence detection. Gradient clipping is the Trainer's (``trainer.gradient_clip_val`` / ``_algorithm``), so it is
the same code path for every model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Mapping

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from rnnlab.data.base import IGNORE_INDEX, METRICS, TaskSpec, epoch_seed
from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.base import valid_step_mask
from rnnlab.models.structured import batch_structure_kwargs
from rnnlab.tasks.heads import task_head
from rnnlab.training.optimizers import check_prediction_optimizer, prediction_optimizer_step
from rnnlab.training.regularizers import Regularization
from rnnlab.training.rules import make_rule

POOLINGS = ("last", "mean")
STAGES = ("train", "val", "test")
EVALUATION_STAGES = ("val", "test")


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


class StageDict(nn.ModuleDict):
    """One module per stage (``train``/``val``/``test``), read as ``d[stage]``.

    Stored under ``<stage>_`` because ``nn.Module`` already has an attribute ``train``, which ModuleDict refuses as a
    key.
    """

    def __init__(self, make: Callable[[], nn.Module], stages: tuple[str, ...] = STAGES):
        super().__init__({f"{stage}_": make() for stage in stages})

    def __getitem__(self, stage: str) -> nn.Module:
        return super().__getitem__(f"{stage}_")


class SequenceTask(pl.LightningModule):
    """Train any ``rnnlab.models`` network on any datamodule's :class:`TaskSpec`.

    Heads, chosen by the task:
      * per-step targets (language modelling, copy): every valid step's output, cross-entropy or MSE over valid steps;
      * one target per sequence: the output at the last valid step (``pooling=last``) or the mean of the outputs
        over valid steps (``pooling=mean``), then cross-entropy (classification) or MSE (regression);
      * CTC (``kind=ctc``, Graves et al. 2006): every valid step's log-softmax over blank (class 0) and labels,
        CTC loss against the batch's label sequences (``targets`` [B, S], ``target_lengths`` [B]);
      * multilabel (``kind=multilabel``, per step): an independent Bernoulli per output (logits, BCE), its NLL
        summed over outputs and averaged over valid steps (Boulanger-Lewandowski et al. 2012).
    Per-step classification over a large vocabulary may use a factorised output layer (``head``: class_softmax,
    hierarchical_softmax, nce, sampled; ``rnnlab.tasks.heads``, built with ``head_options`` and the training split's
    ``unigram_counts``): the model then outputs features, the head's loss trains, and val/test score the head's
    exact log-probabilities (train/acc is not logged; train/ppl only for heads whose loss is the exact NLL).

    Logged: ``<stage>/loss`` averaged over targets (steps or sequences), and the task's metric ``<stage>/acc``,
    ``<stage>/mse``, ``<stage>/bpc`` or ``<stage>/ppl`` (exp of the epoch's token-averaged loss), ``<stage>/ler``
    (label error rate of greedy CTC decoding over the epoch) or ``<stage>/nll`` (the multilabel loss). A non-finite
    training loss stops training and sets ``diverged``.

    ``regularizers`` (name -> ``rnnlab.training.regularizers.Regularizer``, the ``regularizer`` config group) are
    attached to the model at construction; their penalties are added to the training loss and logged as
    ``train/penalty`` (``train/loss`` stays the data loss, comparable across runs).

    Token inputs (``spec.input_vocab``): ids [B, T] pass through ``nn.Embedding(input_vocab, embedding_dim)`` before
    the model, whose ``input_size`` must then be ``embedding_dim``. Stateful data (``spec.stateful``, Zaremba et al.
    2014): the model's final state of one batch, detached (truncated BPTT), starts the next batch of the same stage;
    it is reset to None at the start of every train, validation and test epoch.
    """

    logged_metrics: tuple[str, ...] = ("loss", *METRICS, "penalty")  # the <name>s of <stage>/<name> it may log

    def __init__(
        self,
        model: nn.Module,
        spec: TaskSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
        embedding_dim: int = 128,
        regularizers: Mapping | None = None,
        training: Mapping | None = None,
        head: str = "full",
        head_options: Mapping | None = None,
        unigram_counts: torch.Tensor | None = None,
    ):
        super().__init__()
        require_choice("pooling", pooling, POOLINGS)
        require_positive(embedding_dim=embedding_dim)
        if spec.input_vocab is not None and getattr(model, "input_size", embedding_dim) != embedding_dim:
            raise ConfigError(
                "embedding_dim", f"is {embedding_dim} but the model reads {model.input_size} features per step; "
                "token inputs are embedded first, so build the model with input_size=embedding_dim"
            )
        self.embedding = nn.Embedding(spec.input_vocab, embedding_dim) if spec.input_vocab is not None else None
        self.carried_state: dict[str, object] = {}  # stage -> detached state of the previous batch (stateful data)
        if spec.metric == "ppl":
            self.perplexity = StageDict(EpochPerplexity, EVALUATION_STAGES)  # training: TrainingLog
        if spec.kind == "ctc":
            self.label_error_rate = StageDict(LabelErrorRate)
        self.model = model
        self.spec = spec
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.pooling = pooling
        self.diverged_at_step: int | None = None
        # name -> rnnlab.training.regularizers.Regularizer: attached to the model now, penalties added in training_step
        self.regularization = Regularization(model, regularizers)
        # learning rule (rnnlab.training.rules): None is BPTT by automatic optimization; others update per window
        self.rule = make_rule(training, self)
        # optimizers that read the model's predictions, not a gradient (optimizer=hessian_free, ekf, dekf, cmaes,
        # genetic; rnnlab.training.optimizers): manual optimization, one optimizer.step(closure) per batch
        self.prediction_optimizer = check_prediction_optimizer(optimizer, spec, scheduler, self.rule)
        if self.prediction_optimizer:
            self.automatic_optimization = False
        # output layer over a large vocabulary (rnnlab.tasks.heads): None is the model's own readout (head=full)
        self.output_head = task_head(head, head_options, model, spec, unigram_counts, self.prediction_optimizer)
        self.run_seed = torch.initial_seed()  # the run's seed: rnnlab.train seeds everything before building this
        self.training_log = TrainingLog()
        if spec.kind == "classification":
            self.accuracy = StageDict(
                lambda: torchmetrics.Accuracy(
                    task="multiclass",
                    num_classes=getattr(self.output_head, "vocab_size", model.output_size),
                    ignore_index=IGNORE_INDEX,
                ),
                EVALUATION_STAGES,  # training: TrainingLog
            )

    @property
    def diverged(self) -> bool:
        return self.diverged_at_step is not None

    def head(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Select the outputs that meet the targets: [B, T, C] for per-step targets, else [B, C]."""
        if self.spec.per_step or self.spec.kind == "ctc":
            return outputs
        if self.pooling == "last":
            return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths - 1]
        mask = valid_step_mask(lengths, *outputs.shape[:2], outputs.device).unsqueeze(-1)
        return (outputs * mask).sum(1) / lengths.to(outputs.dtype).unsqueeze(-1)

    def loss_and_count(
        self,
        predictions: torch.Tensor,
        targets: torch.Tensor,
        lengths: torch.Tensor,
        target_mask: torch.Tensor | None = None,
        target_lengths: torch.Tensor | None = None,
    ):
        """Mean loss over targets, and the number of targets it averages (for epoch-level weighting).

        ``target_mask`` [B, T] (per-step regression) restricts the loss to the steps where it is True; class targets
        are masked beforehand by setting them to IGNORE_INDEX.
        """
        if self.spec.kind == "ctc":
            return ctc_loss_and_count(predictions, targets, lengths, target_lengths)
        if self.spec.kind == "multilabel":
            return multilabel_nll_and_count(predictions, targets, lengths)
        if self.spec.kind == "classification":
            if self.output_head is not None and self.training:  # the head's training loss on features
                return self.output_head.loss_and_count(predictions, targets)
            logits = predictions.reshape(-1, predictions.shape[-1])
            flat = targets.reshape(-1)
            count = int((flat != IGNORE_INDEX).sum())
            return nn.functional.cross_entropy(logits, flat, ignore_index=IGNORE_INDEX), count
        if self.spec.per_step:
            mask = valid_step_mask(lengths, *predictions.shape[:2], predictions.device)
            if target_mask is not None:
                mask = mask & target_mask
            mask = mask.unsqueeze(-1)
            squared = (predictions - targets) ** 2 * mask
            count = int(mask.sum()) * predictions.shape[-1]
            return squared.sum() / count, count
        return nn.functional.mse_loss(predictions, targets), targets.shape[0]

    def shared_step(
        self, batch: dict[str, torch.Tensor], stage: str, outputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Loss and logged metrics of a batch; ``outputs`` given (by a learning rule) skips running the model."""
        outputs = self.run_model(batch, stage) if outputs is None else outputs
        predictions = self.head(outputs, batch["lengths"])
        head_training = self.output_head is not None and self.training  # predictions are features, not logits
        if self.output_head is not None and not self.training:
            predictions = self.output_head.log_probs(predictions)  # exact log P(w|h) [B, T, V], used as logits
        targets, target_mask = batch["targets"], batch.get("target_mask")
        if target_mask is not None and self.spec.kind == "classification":
            targets = targets.masked_fill(~target_mask, IGNORE_INDEX)
        loss, count = self.loss_and_count(
            predictions, targets, batch["lengths"], target_mask, target_lengths=batch.get("target_lengths")
        )
        self.record(stage, "loss", loss, count, prog_bar=True)
        if self.spec.metric in ("mse", "nll"):
            self.record(stage, self.spec.metric, loss, count)
        elif self.spec.metric == "bpc":
            self.record(stage, "bpc", loss / math.log(2), count)
        elif self.spec.metric == "ppl" and not (head_training and not self.output_head.exact_loss):
            if stage == "train":  # exp of the epoch's token-weighted mean loss, as EpochPerplexity computes it
                self.training_log.add(self, "train/ppl", loss, count, at_epoch_end=torch.exp)
            else:
                self.perplexity[stage].update(loss.detach(), weight=count)
                self.log(f"{stage}/ppl", self.perplexity[stage], on_step=False, on_epoch=True)
        if self.spec.kind == "classification" and not head_training:
            self.record_accuracy(stage, "acc", predictions, targets, count, prog_bar=True)
        if self.spec.kind == "ctc":
            error_rate = self.label_error_rate[stage]
            error_rate.update(greedy_ctc_decode(predictions, batch["lengths"]), targets, batch["target_lengths"])
            if stage != "train":
                self.log(f"{stage}/ler", error_rate, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def record(self, stage: str, name: str, value: torch.Tensor, count: int, prog_bar: bool = False) -> None:
        """Log ``<stage>/<name>``, a mean over ``count`` targets: training through ``training_log``, validation and
        test through ``self.log`` (epoch means, synchronised across processes)."""
        if stage == "train":
            self.training_log.add(self, f"train/{name}", value, count, prog_bar=prog_bar)
        else:
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, batch_size=count, sync_dist=True,
                     prog_bar=prog_bar)

    def record_accuracy(
        self, stage: str, name: str, logits: torch.Tensor, targets: torch.Tensor, count: int, prog_bar: bool = False
    ) -> None:
        """Log ``<stage>/<name>``, the micro accuracy of ``logits`` [..., C] on the ``count`` targets [...] that are
        not IGNORE_INDEX (training: counted here; validation and test: torchmetrics' Accuracy, synchronised)."""
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        if stage == "train":
            correct = ((logits.argmax(-1) == targets) & (targets != IGNORE_INDEX)).sum()
            self.training_log.add(self, f"train/{name}", correct / max(count, 1), count)
        else:
            self.accuracy[stage].update(logits, targets)
            self.log(f"{stage}/{name}", self.accuracy[stage], on_step=False, on_epoch=True, prog_bar=prog_bar)

    def run_model(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """The model's outputs [B, T, C] for a batch: token ids embedded, stateful data continuing ``stage``'s state.

        A model that reads batch structure (trees, stories) names the batch keys in ``batch_keys``; they are passed
        to its forward() as keyword arguments.
        """
        inputs = batch["inputs"] if self.embedding is None else self.embedding(batch["inputs"])
        state = self.carried_state.get(stage) if self.spec.stateful else None
        structure = batch_structure_kwargs(self.model, batch)
        outputs, state = self.model(inputs, batch["lengths"], state=state, **structure)
        if self.spec.stateful:
            self.carried_state[stage] = detach_state(state)
        return outputs

    def on_train_epoch_start(self):
        self.carried_state.pop("train", None)
        # epoch e's randomness (dropout, sampling) comes from (seed, e) alone: a run resumed at epoch e repeats it
        pl.seed_everything(epoch_seed(self.run_seed, self.current_epoch), verbose=False)

    def on_validation_epoch_start(self):
        self.carried_state.pop("val", None)

    def on_test_epoch_start(self):
        self.carried_state.pop("test", None)

    def on_fit_start(self):
        if self.rule is not None:
            self.rule.on_fit_start(self)  # manual optimization from here on

    def on_train_epoch_end(self):
        self.training_log.flush(self)
        if self.spec.kind == "ctc":
            self.log("train/ler", self.label_error_rate["train"].compute(), on_step=False, on_epoch=True)
            self.label_error_rate["train"].reset()
        if self.rule is not None:
            self.rule.on_train_epoch_end(self)  # epoch schedulers, as the automatic loop steps them

    def training_step(self, batch, batch_idx):
        if self.prediction_optimizer:
            return prediction_optimizer_step(self, batch)
        if self.rule is not None:
            return self.rule.training_step(self, batch)
        loss = self.shared_step(batch, "train")
        penalty = self.regularization.penalty(self)  # survey eqs. 54-55, 57; train/loss stays the data loss
        if penalty is not None:
            self.record("train", "penalty", penalty, batch["lengths"].shape[0])
            loss = loss + penalty
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


def detach_state(state):
    """``state`` (a tensor, or tuples / lists / dicts of them) cut from the graph, so BPTT stops at the batch edge."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(part) for part in state)
    if isinstance(state, dict):
        return {key: detach_state(part) for key, part in state.items()}
    return state


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
