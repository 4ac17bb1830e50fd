"""Gradient flow through time and stability diagnostics probed while training, as a Lightning callback
(:class:`GradientFlowCallback`; survey III.B). The measurement is ``rnnlab.analysis.gradient_flow``, the figures
``rnnlab.analysis.flow_plots``.
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from rnnlab.analysis.flow_plots import figure_rgb, plot_grad_norms, plot_gradient_flow, plot_hidden_norms, plot_spectra
from rnnlab.analysis.gradient_flow import (
    FlowCurve,
    StepwiseMismatch,
    activation_gamma,
    last_step_task_loss,
    measure_gradient_flow,
    output_projection_loss,
    recurrent_spectra,
)
from rnnlab.errors import ConfigError, require_choice, require_positive

log = logging.getLogger(__name__)

LOSSES = ("task", "output")
PREFIX = "diagnostics/"
JSON_NAME = "gradient_flow.json"


class GradientFlowCallback(pl.Callback):
    """Gradient flow through time and stability of the recurrence, probed while training (survey III.B).

    Every ``every_n_steps`` optimizer steps (step 0 included) and once at the end of training, on one fixed probe
    batch (the ``probe_size`` longest rows of the first training batch, cut to the shortest of them and to
    ``max_steps`` steps; token ids embedded by the task's embedding), with the model in eval mode and without
    touching parameter gradients or the random state:

    * ||dL/ds_{T-lag}|| for lag 1 .. T-1 (``measure_gradient_flow``), L the task's loss at the last step
      (``loss: task``; CTC tasks and last steps without a target fall back to ``loss: output``, a fixed random
      projection of y_T);
    * ||h_t|| for t = 1 .. T (root mean square over the probe batch);
    * sigma_max and spectral radius of every recurrent gate block (``recurrent_spectra``), against 1/gamma.

    Every training step, the total gradient norm before clipping is logged as ``diagnostics/grad_norm``
    (``on_before_optimizer_step``: in Lightning 2.x ``Precision._after_closure`` calls this hook, then clips; with
    AMP the gradients are already unscaled).

    Probe numbers go to every logger (``log_metrics`` at the probe's step). At the end of training: the curves as
    ``<dirpath>/gradient_flow.json`` (rewritten after every probe), PNGs in ``dirpath``, the same images to
    TensorBoard (``add_image``) and to loggers with ``log_image`` (W&B), and the final probe's summary in
    ``trainer.callback_metrics``, which ``rnnlab.train`` copies into the run record's ``metrics``:
    ``diagnostics/grad_ratio_<lag>`` (lags 1, 2, 5, 10, 20, 50, ...), ``diagnostics/sigma_max`` and
    ``diagnostics/spectral_radius`` (largest over blocks), ``diagnostics/gamma_sigma_max`` (gamma * sigma_max: below 1
    the gradients vanish), ``diagnostics/hidden_norm`` (at the last probed step), ``diagnostics/grad_norm_max``.

    Models that cannot run one step at a time with a carried state (bidirectional, subsampling, structured inputs)
    get the spectra and gradient norms only, with a logged note (also in the JSON). Probes run on global rank 0.
    The probe happens at the start of a training batch, outside ``rnnlab.record.RunStats``'s step time.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        probe_size: int = 8,
        max_steps: int = 1000,
        loss: str = "task",
        gamma: float | None = None,
        plots: bool = True,
        dirpath: str | None = None,
    ):
        require_positive(every_n_steps=every_n_steps, probe_size=probe_size)
        require_choice("loss", loss, LOSSES)
        if max_steps < 2:
            raise ConfigError("max_steps", f"must be at least 2 (gradient flow needs two steps), got {max_steps}")
        if gamma is not None and not gamma > 0:
            raise ConfigError("gamma", f"must be positive or null (from the model's activation), got {gamma!r}")
        self.every_n_steps = every_n_steps
        self.probe_size = probe_size
        self.max_steps = max_steps
        self.loss = loss
        self.gamma = gamma
        self.plots = plots
        self.dirpath = dirpath
        self.probe_batch: dict | None = None
        self.stepwise_checked = False  # the step-by-step run was compared with a whole-sequence run
        self.note: str | None = None  # why gradient flow is not measured for this model
        self.history: list[dict] = []
        self._next_probe_step = 0
        self._reset_norms()
        self._grad_norm_max = 0.0

    # ---------------------------------------------------------------- Lightning hooks

    def state_dict(self) -> dict:
        return {"history": self.history, "grad_norm_max": self._grad_norm_max}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        self._grad_norm_max = float(state_dict.get("grad_norm_max", 0.0))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.probe_batch is None:
            self.probe_batch = self.make_probe_batch(batch, per_step=getattr(pl_module, "spec", None) is not None
                                                     and pl_module.spec.per_step)
        if trainer.global_step >= self._next_probe_step:  # a learning rule may take several steps per batch
            self.probe(trainer, pl_module)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0).detach().float()
        pl_module.log(PREFIX + "grad_norm", norm, on_step=True, on_epoch=True, batch_size=1)
        self._norm_sum = self._norm_sum + norm
        self._norm_max = torch.maximum(self._norm_max.to(norm.device), norm)
        self._norm_count += 1

    def on_train_end(self, trainer, pl_module):
        if self.probe_batch is None:
            return
        self.probe(trainer, pl_module, final=True)
        if not trainer.is_global_zero:
            return
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in self.summary().items()})
        if self.plots:
            self.plot(trainer)

    # ---------------------------------------------------------------- probing

    def make_probe_batch(self, batch: dict, per_step: bool) -> dict:
        """The ``probe_size`` longest rows of ``batch`` (all of them when fewer), cut to the shortest of those lengths
        and to ``max_steps`` so that every probed step is valid (inputs, target_mask, and targets when
        ``per_step``), detached."""
        lengths = batch["lengths"]
        rows = torch.argsort(lengths, descending=True, stable=True)[: self.probe_size].sort().values
        steps = min(int(lengths[rows].min()), self.max_steps)
        probe = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == lengths.shape[0]:
                value = value[rows].detach().clone()
                if (key in ("inputs", "target_mask") or key == "targets" and per_step) and value.dim() > 1:
                    value = value[:, :steps]
            probe[key] = value
        probe["lengths"] = torch.full_like(probe["lengths"], steps)
        return probe

    def probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, final: bool = False) -> None:
        step = trainer.global_step
        self._next_probe_step = (step // self.every_n_steps + 1) * self.every_n_steps
        grad_norm = self._take_norms()
        if not trainer.is_global_zero:
            return
        model = getattr(pl_module, "model", pl_module)
        entry = {"step": step, "epoch": trainer.current_epoch, "final": final, "loss": self.loss,
                 "gamma": self.resolved_gamma(trainer), "grad_norm": grad_norm}
        entry["spectra"] = recurrent_spectra(model)
        curve = self.measure_flow(pl_module, model, entry)
        entry["grad_norm_by_lag"] = curve.grad_norms.tolist() if curve is not None else None
        entry["hidden_norm"] = curve.hidden_norms.tolist() if curve is not None else None
        entry["grad_ratio"] = {str(lag): r for lag, r in curve.ratios().items()} if curve is not None else {}
        if self.history and self.history[-1]["step"] == step:
            self.history.pop()  # the end-of-training probe replaces one at the same step
        self.history.append(entry)
        for logger in trainer.loggers:
            logger.log_metrics(self.probe_metrics(entry), step=step)
        self.write_json(trainer)

    def measure_flow(self, pl_module, model: nn.Module, entry: dict) -> FlowCurve | None:
        """The gradient-flow curve on the probe batch, or None (with ``self.note`` set) for models it cannot probe."""
        if self.note is not None:
            return None
        if getattr(model, "batch_keys", ()):
            self.skip(f"{type(model).__name__} reads batch structure {tuple(model.batch_keys)}")
            return None
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.probe_batch.items()}
        embedding = getattr(pl_module, "embedding", None)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                x = batch["inputs"] if embedding is None else embedding(batch["inputs"]).detach()
                if x.shape[1] < 2:
                    self.skip(f"the probe batch has {x.shape[1]} step(s); gradient flow needs two")
                    return None
                loss = partial(self.probe_loss, pl_module, batch=batch, entry=entry)  # outputs -> loss
                curve = measure_gradient_flow(model, x, loss, check=not self.stepwise_checked)
                self.stepwise_checked = True
                return curve
        except StepwiseMismatch as error:
            self.skip(str(error))
            return None
        finally:
            model.train(was_training)

    def probe_loss(self, pl_module, outputs: torch.Tensor, batch: dict, entry: dict) -> torch.Tensor:
        if self.loss == "task":
            loss = last_step_task_loss(pl_module, outputs, batch)
            if loss is not None:
                return loss
            entry["loss"] = "output"
        return output_projection_loss(outputs)

    def skip(self, reason: str) -> None:
        self.note = f"gradient flow not measured: {reason}"
        log.warning("%s (spectra and gradient norms are still recorded)", self.note)

    def _reset_norms(self) -> None:
        self._norm_sum, self._norm_max, self._norm_count = torch.zeros(()), torch.zeros(()), 0

    def _take_norms(self) -> dict | None:
        """Mean and max of the pre-clipping gradient norms since the previous probe (None before any step)."""
        if self._norm_count == 0:
            return None
        taken = {"mean": float(self._norm_sum) / self._norm_count, "max": float(self._norm_max),
                 "steps": self._norm_count}
        self._grad_norm_max = max(self._grad_norm_max, taken["max"])
        self._reset_norms()
        return taken

    # ---------------------------------------------------------------- outputs

    def resolved_gamma(self, trainer: pl.Trainer) -> float:
        if self.gamma is not None:
            return float(self.gamma)
        return activation_gamma(getattr(trainer.lightning_module, "model", trainer.lightning_module))

    def probe_metrics(self, entry: dict) -> dict[str, float]:
        """One probe's numbers for the loggers, finite values only."""
        metrics = {f"{PREFIX}grad_ratio_{lag}": r for lag, r in entry["grad_ratio"].items()}
        if entry["hidden_norm"]:
            metrics[PREFIX + "hidden_norm"] = entry["hidden_norm"][-1]
        for block, values in entry["spectra"].items():
            metrics.update({f"{PREFIX}{name}/{block}": value for name, value in values.items()})
        return {k: v for k, v in metrics.items() if is_finite(v)}

    def summary(self) -> dict[str, float]:
        """The final probe's numbers for the run record (module docstring), finite values only."""
        if not self.history:
            return {}
        last = self.history[-1]
        summary = {f"{PREFIX}grad_ratio_{lag}": r for lag, r in last["grad_ratio"].items()}
        if last["hidden_norm"]:
            summary[PREFIX + "hidden_norm"] = last["hidden_norm"][-1]
        sigmas = [v["sigma_max"] for v in last["spectra"].values() if is_finite(v["sigma_max"])]
        radii = [v["spectral_radius"] for v in last["spectra"].values() if is_finite(v["spectral_radius"])]
        if sigmas:
            summary[PREFIX + "sigma_max"] = max(sigmas)
            summary[PREFIX + "gamma_sigma_max"] = max(sigmas) * last.get("gamma", 1.0)
        if radii:
            summary[PREFIX + "spectral_radius"] = max(radii)
        if any(entry["grad_norm"] for entry in self.history):
            summary[PREFIX + "grad_norm_max"] = self._grad_norm_max
        return {k: float(v) for k, v in summary.items() if is_finite(v)}

    def output_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "diagnostics"

    def write_json(self, trainer: pl.Trainer) -> None:
        gamma = self.resolved_gamma(trainer)
        probed = self.probe_batch["lengths"] if self.probe_batch is not None else None
        document = {
            "lag_definition": "grad_norm_by_lag[lag-1] = ||dL/ds_{T-lag}||, s_k the carried state after step k, L "
                              "the probe loss at step T; grad_ratio[lag] = ||dL/ds_{T-lag}|| / ||dL/ds_{T-1}||",
            "hidden_norm_definition": "hidden_norm[t-1] = sqrt(mean over the probe batch of ||h_t||^2)",
            "gamma": gamma,
            "threshold": 1.0 / gamma,
            "probe": None if probed is None else {"sequences": int(probed.shape[0]), "steps": int(probed[0])},
            "note": self.note,
            "probes": finite_or_none(self.history),
        }
        directory = self.output_dir(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / JSON_NAME).write_text(json.dumps(document, indent=1, allow_nan=False))

    def plot(self, trainer: pl.Trainer) -> None:
        """PNGs in the output folder, and the same images to TensorBoard and to loggers with ``log_image`` (W&B)."""
        directory = self.output_dir(trainer)
        gamma = self.resolved_gamma(trainer)
        figures = {
            "gradient_flow": plot_gradient_flow(self.history),
            "hidden_norm": plot_hidden_norms(self.history),
            "spectra": plot_spectra(self.history, gamma),
            "grad_norm": plot_grad_norms(self.history, trainer.gradient_clip_val, trainer.gradient_clip_algorithm),
        }
        for name, figure in figures.items():
            if figure is None:
                continue
            path = directory / f"{name}.png"
            figure.savefig(path, dpi=100)
            image = figure_rgb(figure)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(PREFIX + name, image, trainer.global_step, dataformats="HWC")
                elif hasattr(logger, "log_image"):
                    logger.log_image(key=PREFIX + name, images=[str(path)], step=trainer.global_step)


def is_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def finite_or_none(value):
    """``value`` (nested lists / dicts) with every non-finite float replaced by None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value
