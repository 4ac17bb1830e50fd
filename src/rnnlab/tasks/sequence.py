"""The base LightningModule: what must be identical across a comparison (CONTRIBUTING.md, 'One path for every run'
and 'Identical conditions').

It owns the head (which outputs meet the targets), the loss, the metrics, optimizer and scheduler construction and
divergence detection. Gradient clipping is the Trainer's (``trainer.gradient_clip_val`` / ``_algorithm``), so it is
the same code path for every model. How it trains is its ``strategy`` (``rnnlab.training.strategy``: BPTT, a learning
rule or an optimizer that reads predictions), which sees it as a ``Learner``.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Mapping

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from rnnlab.data.base import IGNORE_INDEX, METRICS, TaskSpec, epoch_seed
from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.base import valid_step_mask
from rnnlab.models.structured import batch_structure_kwargs
from rnnlab.tasks.heads import OutputHead, check_head
from rnnlab.tasks.metrics import (
    EpochPerplexity,
    LabelErrorRate,
    TrainingLog,
    ctc_loss_and_count,
    greedy_ctc_decode,
    multilabel_nll_and_count,
)
from rnnlab.training.regularizers import Regularization
from rnnlab.training.rules import TrainingSettings
from rnnlab.training.strategy import make_strategy

log = logging.getLogger(__name__)

POOLINGS = ("last", "mean")
STAGES = ("train", "val", "test")
EVALUATION_STAGES = ("val", "test")


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
    Per-step classification over a large vocabulary may use a factorised output layer (``head``: the ``head``
    group's class_softmax, hierarchical_softmax, nce, sampled; ``rnnlab.tasks.heads``, built by
    ``rnnlab.tasks.wiring`` on the training split's unigram counts): the model then outputs features, the head's loss
    trains, and val/test score the head's exact log-probabilities (train/acc is not logged; train/ppl only for heads
    whose loss is the exact NLL).

    Logged: ``<stage>/loss`` averaged over targets (steps or sequences), and the task's metric ``<stage>/acc``,
    ``<stage>/mse``, ``<stage>/bpc`` or ``<stage>/ppl`` (exp of the epoch's token-averaged loss), ``<stage>/ler``
    (label error rate of greedy CTC decoding over the epoch) or ``<stage>/nll`` (the multilabel loss). A non-finite
    training loss stops training and sets ``diverged``.

    ``training`` (the ``training`` group's settings: the learning rule) and ``regularizers`` (name ->
    ``rnnlab.training.regularizers.Regularizer``, the ``regularizer`` group) come from the app's wiring, which gives
    them only to a task whose constructor takes them (one that trains its own way does not). Regularizers are
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
        training: TrainingSettings | None = None,
        head: OutputHead | None = None,
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
        # how it trains (rnnlab.training.strategy): BPTT by automatic optimization, a learning rule updating per window
        # (the training group), or an optimizer that reads the model's predictions (optimizer=hessian_free, ekf, dekf,
        # cmaes, genetic): manual optimization, one optimizer.step(closure) per batch
        self.strategy = make_strategy(training, optimizer, scheduler, self)
        if not self.strategy.automatic:
            self.automatic_optimization = False
        # output layer over a large vocabulary (rnnlab.tasks.heads): None is the model's own readout (head=full)
        if head is not None:
            check_head(head, model, spec, self.strategy.needs_predictions)
        self.output_head = head
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

    # ----- what a training strategy may call besides the above (rnnlab.training.strategy.Learner) ---------------------
    def penalty(self) -> torch.Tensor | None:
        """The regularizers' penalty for the latest training forward (survey eqs. 54-55, 57), None when none applies."""
        return self.regularization.penalty(self)

    def stop_diverged(self) -> None:
        """A non-finite loss: the run ends with status "diverged" at this step, without this update."""
        self.diverged_at_step = self.global_step
        self.trainer.should_stop = True

    def log_step(self, name: str, value: float) -> None:
        """Log ``name`` for this step only (an optimizer's diagnostics)."""
        self.log(name, value, on_step=True, on_epoch=False)

    def start_manual_optimization(self, rule: str) -> None:
        """Refuse Trainer settings that ``rule``'s updates cannot honour, then turn automatic optimization off: after
        Lightning's check, which refuses ``gradient_clip_val`` with manual optimization (``manual_update`` clips)."""
        trainer = self.trainer
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError("trainer.accumulate_grad_batches", f"must be 1 with training.rule={rule}")
        if getattr(trainer.precision_plugin, "scaler", None) is not None and trainer.gradient_clip_val:
            raise ConfigError("trainer.precision", f"fp16 with clipping is not supported by training.rule={rule}")
        self.automatic_optimization = False

    def manual_update(self, objective: torch.Tensor) -> None:
        """One optimizer update on ``objective``'s gradient as the automatic path makes it: clipped with the Trainer's
        settings through ``configure_gradient_clipping``, then the ``interval: step`` schedulers stepped."""
        optimizer, trainer = self.optimizers(), self.trainer
        optimizer.zero_grad()
        self.manual_backward(objective)
        self.configure_gradient_clipping(optimizer, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)
        optimizer.step()
        self.step_schedulers("step")

    def step_schedulers(self, interval: str) -> None:
        """Step the schedulers of ``interval`` as Lightning's automatic loop does (frequency, plateau monitor)."""
        trainer = self.trainer
        for config in trainer.lr_scheduler_configs:
            if config.interval != interval:
                continue
            index = trainer.global_step if interval == "step" else trainer.current_epoch + 1
            if index % config.frequency:
                continue
            metric = None
            if config.reduce_on_plateau:
                metric = trainer.callback_metrics.get(config.monitor)
                if metric is None:
                    log.warning("scheduler monitors %s, which is not available; learning rate unchanged",
                                config.monitor)
                    continue
            self.lr_scheduler_step(config.scheduler, metric)

    def on_train_epoch_start(self):
        self.carried_state.pop("train", None)
        # epoch e's randomness (dropout, sampling) comes from (seed, e) alone: a run resumed at epoch e repeats it
        pl.seed_everything(epoch_seed(self.run_seed, self.current_epoch), verbose=False)

    def on_validation_epoch_start(self):
        self.carried_state.pop("val", None)

    def on_test_epoch_start(self):
        self.carried_state.pop("test", None)

    def on_fit_start(self):
        self.strategy.on_fit_start(self)  # a learning rule: manual optimization from here on

    def on_train_epoch_end(self):
        self.training_log.flush(self)
        if self.spec.kind == "ctc":
            self.log("train/ler", self.label_error_rate["train"].compute(), on_step=False, on_epoch=True)
            self.label_error_rate["train"].reset()
        self.strategy.on_train_epoch_end(self)  # a learning rule: epoch schedulers, as the automatic loop steps them

    def training_step(self, batch, batch_idx):
        return self.strategy.training_step(self, batch)

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
