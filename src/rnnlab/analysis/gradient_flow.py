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

Here: the measurement. The callback is ``rnnlab.analysis.diagnostics_callback``, its plots
``rnnlab.analysis.flow_plots``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.utils import parametrize

from rnnlab.models.initialization import is_recurrent, square_blocks

ACTIVATION_GAMMA = {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25}  # sup |f'|; relu's derivative is at most 1


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
