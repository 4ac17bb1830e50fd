"""Gradient flow through time and stability diagnostics (survey III.B, eqs. 11-16), as a Lightning callback.

Back-propagated through time, the loss at the last step T reaches an earlier carried state s_k through the product
of step Jacobians (eqs. 11-16):

    dL_T/ds_k = dL_T/ds_T * prod_{i=k+1..T} ds_i/ds_{i-1}

so its norm shrinks (vanishes) or grows (explodes) geometrically with the lag T - k. For a recurrent matrix W_hh
with largest singular value lambda_1 and an activation whose derivative is bounded by gamma (1 for tanh, 1/4 for
sigmoid), lambda_1 < 1/gamma is sufficient for vanishing and lambda_1 > 1/gamma necessary for exploding gradients
(Pascanu et al. 2013, survey III.B).

Measured here:

* ``measure_gradient_flow``: the model runs one step at a time through the model interface
  (CONTRIBUTING.md, 'The model interface'), carrying its state; a zero tensor z_k (requires_grad) is added to the
  carried state after step k, so dL/dz_k = dL/ds_k for every k in one backward pass. The curve is ||dL/ds_{T-lag}|| for
  lag = 1 .. T-1 (the state after step T-lag, every tensor of the state together: h, and c for an LSTM, all layers); the
  initial state (lag T) is the model's own and not reachable from outside.
  ``grad_ratio_<lag>`` = ||dL/ds_{T-lag}|| / ||dL/ds_{T-1}||, so lag 1 is 1.
* ``recurrent_spectra``: largest singular value and spectral radius of every square gate block of every recurrent
  matrix (``weight_hh*`` or a module named ``recurrent``, ``rnnlab.models.initialization.is_recurrent``; torch's
  gate order: LSTM i, f, g, o; GRU r, z, n).
* :class:`GradientFlowCallback` adds the gradient norm before clipping and the hidden-state norm over time.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.nn.utils import parametrize

from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.initialization import is_recurrent, square_blocks

log = logging.getLogger(__name__)

LOSSES = ("task", "output")
PREFIX = "diagnostics/"
ACTIVATION_GAMMA = {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25}  # sup |f'|; relu's derivative is at most 1
JSON_NAME = "gradient_flow.json"


class StepwiseMismatch(RuntimeError):
    """The model cannot be run one step at a time with its carried state (bidirectional, subsampling, ...)."""


def ratio_lags(max_lag: int) -> list[int]:
    """Lags 1, 2, 5, 10, 20, 50, 100, ... up to ``max_lag``."""
    lags, scale = [], 1
    while scale <= max_lag:
        lags.extend(lag for lag in (scale, 2 * scale, 5 * scale) if lag <= max_lag)
        scale *= 10
    return lags


def state_leaves(state) -> list[torch.Tensor]:
    """The floating-point tensors of a carried state (a tensor, or tuples / lists / dicts of them), depth first."""
    if isinstance(state, torch.Tensor):
        return [state] if state.is_floating_point() or state.is_complex() else []
    if isinstance(state, (tuple, list)):
        return [leaf for part in state for leaf in state_leaves(part)]
    if isinstance(state, dict):
        return [leaf for part in state.values() for leaf in state_leaves(part)]
    return []


def replace_leaves(state, leaves: Iterator[torch.Tensor]):
    """``state`` with its floating-point tensors taken, in ``state_leaves`` order, from ``leaves``."""
    if isinstance(state, torch.Tensor):
        return next(leaves) if state.is_floating_point() or state.is_complex() else state
    if isinstance(state, (tuple, list)):
        return type(state)(replace_leaves(part, leaves) for part in state)
    if isinstance(state, dict):
        return {key: replace_leaves(part, leaves) for key, part in state.items()}
    return state


@dataclass
class FlowCurve:
    """One probe of gradient flow: ``grad_norms`` [T-1] (index lag-1: ||dL/ds_{T-lag}||), ``hidden_norms`` [T]
    (index t-1: root mean square over the batch of ||h_t||, h the state's first tensor) and the model's
    ``outputs`` [B, T, C] run step by step (detached)."""

    grad_norms: torch.Tensor
    hidden_norms: torch.Tensor
    outputs: torch.Tensor

    def ratios(self) -> dict[int, float]:
        """``{lag: ||dL/ds_{T-lag}|| / ||dL/ds_{T-1}||}`` at ``ratio_lags``; empty when the lag-1 gradient is 0."""
        reference = float(self.grad_norms[0]) if len(self.grad_norms) else 0.0
        if not reference > 0 or not math.isfinite(reference):
            return {}
        return {lag: float(self.grad_norms[lag - 1]) / reference for lag in ratio_lags(len(self.grad_norms))}


def measure_gradient_flow(
    model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], check: bool = True
) -> FlowCurve:
    """||dL/ds_k|| for every carried state s_k of ``model`` on ``x`` [B, T, ...] (all steps valid).

    ``loss_fn(outputs [B, T, C]) -> scalar`` is the loss L (e.g. the loss at the last step). The model runs
    ``forward(x[:, k:k+1], None, state=s_k)`` for k = 0 .. T-1; ``check`` compares those outputs with one call on
    the whole sequence and raises :class:`StepwiseMismatch` where they differ (or the model cannot take a state).
    """
    steps = x.shape[1]
    if steps < 2:
        raise ValueError(f"gradient flow needs at least 2 time steps, got {steps}")
    state, outputs, probes, hidden = None, [], [], []
    try:
        for k in range(steps):
            if k > 0:
                zeros = [torch.zeros_like(leaf, requires_grad=True) for leaf in state_leaves(state)]
                state = replace_leaves(state, iter([leaf + z for leaf, z in zip(state_leaves(state), zeros)]))
                probes.append(zeros)
            out, state = model(x[:, k : k + 1], None, state=state)
            outputs.append(out)
            leaves = state_leaves(state)
            hidden.append(leaves[0].detach().abs().pow(2).sum() / x.shape[0] if leaves else torch.tensor(math.nan))
    except (TypeError, ValueError, RuntimeError) as error:
        raise StepwiseMismatch(f"{type(model).__name__} cannot run one step at a time: {error}") from error
    outputs = torch.cat(outputs, dim=1)
    if check:
        check_stepwise(model, x, outputs)
    flat = [z for zeros in probes for z in zeros]
    if not flat:
        raise StepwiseMismatch(f"{type(model).__name__} carries no floating-point state")
    grads = iter(torch.autograd.grad(loss_fn(outputs), flat, allow_unused=True))
    norms = torch.zeros(len(probes), dtype=torch.float64)
    for k, zeros in enumerate(probes):
        parts = [next(grads) for _ in zeros]
        norms[k] = sum(float(g.detach().abs().double().pow(2).sum()) for g in parts if g is not None) ** 0.5
    return FlowCurve(
        grad_norms=norms.flip(0),  # norms[j] belongs to s_{j+1}, lag T - (j + 1)
        hidden_norms=torch.stack([h.double().cpu() for h in hidden]).sqrt(),
        outputs=outputs.detach(),
    )


@torch.no_grad()
def check_stepwise(model: nn.Module, x: torch.Tensor, stepwise: torch.Tensor) -> None:
    """Raise :class:`StepwiseMismatch` unless ``stepwise`` [B, T, C] equals one forward over all of ``x``."""
    whole, _ = model(x, None)
    if whole.shape != stepwise.shape:
        raise StepwiseMismatch(f"{type(model).__name__}: step-by-step outputs have shape {tuple(stepwise.shape)}, "
                               f"the whole sequence {tuple(whole.shape)}")
    scale = max(1.0, float(whole.abs().max()))
    error = float((whole - stepwise).abs().max())
    if not error <= 1e-4 * scale:
        raise StepwiseMismatch(
            f"{type(model).__name__} run one step at a time with its carried state differs from the whole sequence "
            f"(max |difference| {error:.3g}): bidirectional, subsampling or not carrying all of its state"
        )


def recurrent_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every recurrent matrix of ``model`` by parameter name (``is_recurrent``), parametrised ones as computed."""
    found = {}
    for module_name, module in model.named_modules():
        names = [name for name, _ in module.named_parameters(recurse=False)]
        if parametrize.is_parametrized(module):
            names += list(module.parametrizations.keys())
        for name in names:
            full = f"{module_name}.{name}" if module_name else name
            if is_recurrent(full):
                tensor = getattr(module, name)
                if tensor.dim() == 2:
                    found[full] = tensor.detach()
    return found


@torch.no_grad()
def recurrent_spectra(model: nn.Module) -> dict[str, dict[str, float | None]]:
    """``{"<matrix>[<gate block>]": {"sigma_max", "spectral_radius"}}`` for every block of every recurrent matrix.

    A [k*H, H] matrix is k square blocks (``name[0]`` .. ``name[k-1]``, one per gate); a square matrix is one block
    (its name alone); other shapes get sigma_max only (spectral_radius None). Computed in double precision on CPU;
    a block with non-finite entries (a diverged run) gets NaN.
    """
    spectra = {}
    for name, matrix in recurrent_matrices(model).items():
        blocks = square_blocks(matrix)
        for index, block in enumerate(blocks):
            block = block.to("cpu", torch.complex128 if block.is_complex() else torch.float64)
            key = f"{name}[{index}]" if len(blocks) > 1 else name
            square = block.shape[0] == block.shape[1]
            if not bool(torch.isfinite(block).all()):
                spectra[key] = {"sigma_max": math.nan, "spectral_radius": math.nan if square else None}
                continue
            spectra[key] = {
                "sigma_max": float(torch.linalg.matrix_norm(block, ord=2)),
                "spectral_radius": float(torch.linalg.eigvals(block).abs().max()) if square else None,
            }
    return spectra


def activation_gamma(model: nn.Module) -> float:
    """sup |f'| of the model's ``activation`` / ``nonlinearity`` (tanh, relu 1; sigmoid 1/4); 1 when unnamed."""
    for attribute in ("activation", "nonlinearity"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value in ACTIVATION_GAMMA:
            return ACTIVATION_GAMMA[value]
    return 1.0


def output_projection_loss(outputs: torch.Tensor) -> torch.Tensor:
    """Target-free probe loss: mean over the batch of <v, y_T>, v a fixed unit vector (seed 0) of outputs [B, T, C]."""
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(outputs.shape[-1], generator=generator, dtype=torch.float64)
    direction = (direction / direction.norm()).to(outputs.device, outputs.dtype)
    return (outputs[:, -1] @ direction).mean()


def last_step_task_loss(task: pl.LightningModule, outputs: torch.Tensor, batch: dict) -> torch.Tensor | None:
    """The task's own loss (``loss_and_count`` of ``rnnlab.tasks.sequence.SequenceTask``) of the prediction at the
    last step, outputs [B, T, C] against ``batch``'s targets at that step (per-step data) or per sequence; None when
    the task has no per-step loss (CTC) or no target counts at the last step."""
    spec = getattr(task, "spec", None)
    if spec is None or spec.kind == "ctc" or not hasattr(task, "loss_and_count"):
        return None
    from rnnlab.data.base import IGNORE_INDEX

    steps = outputs.shape[1]
    ones = torch.ones(outputs.shape[0], dtype=torch.long, device=outputs.device)
    targets, mask = batch["targets"], batch.get("target_mask")
    if spec.per_step:
        targets = targets[:, steps - 1 : steps]
        mask = None if mask is None else mask[:, steps - 1 : steps]
        if mask is not None and spec.kind == "classification":
            targets, mask = targets.masked_fill(~mask, IGNORE_INDEX), None
        loss, count = task.loss_and_count(outputs[:, -1:], targets, ones, mask)
    else:
        loss, count = task.loss_and_count(outputs[:, -1], targets, ones)
    return loss if count > 0 else None


def figure_rgb(figure: Figure) -> np.ndarray:
    """The figure rendered by Agg, [height, width, 3] uint8."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


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


def _colours(count: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(1, count - 1)) for i in range(count)]


def plot_gradient_flow(history: list[dict]) -> Figure | None:
    """||dL/ds_{T-lag}|| / ||dL/ds_{T-1}|| against lag, one line per probe (coloured by step)."""
    probes = [e for e in history if e["grad_norm_by_lag"] and e["grad_norm_by_lag"][0] > 0]
    if not probes:
        return None
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for entry, colour in zip(probes, _colours(len(probes))):
        norms = np.asarray(entry["grad_norm_by_lag"])
        axes.plot(np.arange(1, len(norms) + 1), norms / norms[0], color=colour, lw=2 if entry["final"] else 1,
                  label=f"step {entry['step']}" if entry is probes[0] or entry is probes[-1] else None)
    axes.set(xlabel="lag T - k", ylabel="||dL/ds_k|| / ||dL/ds_{T-1}||", yscale="log",
             title="Gradient flow through time (survey eqs. 11-16)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_hidden_norms(history: list[dict]) -> Figure | None:
    """||h_t|| against t, one line per probe."""
    probes = [e for e in history if e["hidden_norm"]]
    if not probes:
        return None
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for entry, colour in zip(probes, _colours(len(probes))):
        norms = entry["hidden_norm"]
        axes.plot(np.arange(1, len(norms) + 1), norms, color=colour, lw=2 if entry["final"] else 1,
                  label=f"step {entry['step']}" if entry is probes[0] or entry is probes[-1] else None)
    axes.set(xlabel="time step t", ylabel="||h_t|| (RMS over the probe batch)", title="Hidden-state norm")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_spectra(history: list[dict], gamma: float) -> Figure | None:
    """sigma_max (solid) and spectral radius (dashed) of each recurrent block over training, and the line 1/gamma."""
    blocks = list(history[-1]["spectra"]) if history else []
    if not blocks:
        return None
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    steps = [e["step"] for e in history]
    for block, colour in zip(blocks, _colours(len(blocks))):
        sigma = [e["spectra"].get(block, {}).get("sigma_max", math.nan) for e in history]
        radius = [e["spectra"].get(block, {}).get("spectral_radius") for e in history]
        axes.plot(steps, sigma, color=colour, marker=".", label=f"{block} sigma_max")
        if any(r is not None for r in radius):
            axes.plot(steps, [math.nan if r is None else r for r in radius], color=colour, ls="--")
    axes.axhline(1.0 / gamma, color="red", lw=1, label=f"1/gamma = {1.0 / gamma:g}")
    axes.set(xlabel="training step", ylabel="sigma_max (solid), spectral radius (dashed)",
             title="Recurrent matrices: below 1/gamma gradients vanish")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6)
    figure.tight_layout()
    return figure


def plot_grad_norms(history: list[dict], clip_val, clip_algorithm) -> Figure | None:
    """Mean and max gradient norm before clipping between probes, and the clipping threshold when clipping by norm."""
    probes = [e for e in history if e["grad_norm"]]
    if not probes:
        return None
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    steps = [e["step"] for e in probes]
    axes.plot(steps, [e["grad_norm"]["mean"] for e in probes], marker=".", label="mean since previous probe")
    axes.plot(steps, [e["grad_norm"]["max"] for e in probes], marker=".", label="max since previous probe")
    if clip_val and clip_algorithm == "norm":
        axes.axhline(float(clip_val), color="red", lw=1, label=f"clip at {float(clip_val):g}")
    axes.set(xlabel="training step", ylabel="||grad|| before clipping", yscale="log", title="Gradient norm")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure
