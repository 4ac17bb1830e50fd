"""The gradient-flow diagnostics' figures (matplotlib's Agg canvas, no pyplot state): gradient flow against lag,
hidden-state norm against time, recurrent spectra and gradient norms over training, from the probe history of
``rnnlab.analysis.diagnostics_callback.GradientFlowCallback``.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def figure_rgb(figure: Figure) -> np.ndarray:
    """The figure rendered by Agg, [height, width, 3] uint8."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


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
