"""Report figures as PNG bytes (matplotlib's Agg canvas; no display, no pyplot state)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rnnlab.report.collect import Arm, Study, grad_ratios
from rnnlab.report.quantities import CostSeries
from rnnlab.report.tables import COSTS, StudyTable

CURVE_COLUMNS = (("train/loss_step", "train/loss"), ("val/loss",))  # first present column of each group is drawn


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def metrics_csv(run_dir: str) -> Path | None:
    """The CSV logger's file in a run directory (conf/logger/csv.yaml: ``<run dir>/csv/metrics.csv``)."""
    root = Path(run_dir)
    if not root.is_dir():
        return None
    direct = root / "csv" / "metrics.csv"
    return direct if direct.is_file() else next(iter(sorted(root.rglob("metrics.csv"))), None)


def read_curve(path: Path, columns: tuple[str, ...]) -> dict[float, float]:
    """``{step: value}`` of the first of ``columns`` the file has (later rows at the same step win)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        column = next((c for c in columns if c in (reader.fieldnames or [])), None)
        if column is None:
            return {}
        curve = {}
        for row in reader:
            try:
                step, value = float(row["step"]), float(row[column])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                curve[step] = value
        return curve


def arm_curve(arm: Arm, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean over the arm's runs (every status: a diverged curve is part of the story) at each logged step."""
    by_step: dict[float, list[float]] = {}
    for run in arm.runs:
        path = metrics_csv(run["run_dir"])
        if path is None:
            continue
        for step, value in read_curve(path, columns).items():
            by_step.setdefault(step, []).append(value)
    if not by_step:
        return None
    steps = np.array(sorted(by_step))
    return steps, np.array([np.mean(by_step[s]) for s in steps])


def learning_curves(study: Study) -> bytes | None:
    panels = []
    for columns in CURVE_COLUMNS:
        curves = [(arm.label, arm_curve(arm, columns)) for arm in study.arms]
        curves = [(label, c) for label, c in curves if c is not None]
        if curves:
            panels.append((columns[-1], curves))
    if not panels:
        return None
    figure = Figure(figsize=(5.5 * len(panels), 3.6))
    for index, (name, curves) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for label, (steps, values) in curves:
            axes.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
        axes.set(xlabel="step", ylabel=name, title=f"{name} (mean over seeds)")
        values = np.concatenate([v for _, (_, v) in curves])
        if values.min() > 0 and values.max() > 10 * values.min():
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=7)
    return png(figure)


def metric_against(table: StudyTable, cost: str) -> bytes | None:
    """The primary metric (mean ± std over seeds) of each arm against one cost column (params, step_ms)."""
    if not table.primary:
        return None
    points = [(row.arm.label, row.summaries[cost], row.summaries[table.primary]) for row in table.rows]
    points = [(label, x, y) for label, x, y in points if x.n and y.n]
    if len({round(x.mean, 9) for _, x, _ in points}) < 2:
        return None  # every arm at the same cost: nothing to plot against
    figure = Figure(figsize=(5.5, 3.8))
    axes = figure.add_subplot()
    for label, x, y in points:
        axes.errorbar(x.mean, y.mean, xerr=_err(x), yerr=_err(y), fmt="o", capsize=3, label=label)
    label = COSTS[cost][0]
    axes.set(xlabel=label, ylabel=table.primary, title=f"{table.primary} vs {label}")
    if cost == "params" and max(x.mean for _, x, _ in points) > 10 * min(x.mean for _, x, _ in points):
        axes.set_xscale("log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return png(figure)


def _err(summary) -> float | None:
    return summary.std if summary.n > 1 and math.isfinite(summary.std) else None


def gradient_vs_lag(study: Study) -> bytes | None:
    """Gradient-flow ratio ``grad_ratio_<lag>`` (geometric mean over completed seeds) against lag, per arm."""
    figure = Figure(figsize=(5.5, 3.8))
    axes = figure.add_subplot()
    drawn = False
    for arm in study.arms:
        by_lag: dict[int, list[float]] = {}
        for run in arm.completed:
            for lag, ratio in grad_ratios(run).items():
                if ratio > 0:
                    by_lag.setdefault(lag, []).append(math.log10(ratio))
        if by_lag:
            lags = sorted(by_lag)
            axes.plot(lags, [10 ** np.mean(by_lag[lag]) for lag in lags], marker="o", label=arm.label)
            drawn = True
    if not drawn:
        return None
    axes.set(xlabel="lag (steps back)", ylabel="gradient norm ratio", yscale="log", title="Gradient flow through time")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return png(figure)


def cost_vs_size(series: list[CostSeries]) -> bytes | None:
    """Time per data point against hidden size N on log-log axes, with each fitted power law."""
    series = [s for s in series if s.fit]
    if not series:
        return None
    figure = Figure(figsize=(5.5, 3.8))
    axes = figure.add_subplot()
    for s in series:
        line = axes.loglog(s.sizes, s.costs, "o", alpha=0.6)[0]
        grid = np.geomspace(min(s.sizes), max(s.sizes), 50)
        axes.loglog(grid, s.fit.coefficient * grid ** s.fit.exponent, color=line.get_color(),
                    label=f"{s.label}: N^{s.fit.exponent:.2f}")
    axes.set(xlabel="hidden size N", ylabel="µs per data point", title="Cost vs network size")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7)
    return png(figure)
