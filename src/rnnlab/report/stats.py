"""Summary statistics over seeds, Welch's t-test, and power-law fits of cost against network size."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1; NaN for one value) of ``n`` finite values."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 4) -> str:
        if self.n == 0:
            return "-"
        if self.n == 1 or not math.isfinite(self.std):
            return f"{self.mean:.{digits}g}"
        if self.std <= 1e-9 * abs(self.mean):  # equal values up to rounding
            return f"{self.mean:.{digits}g} ± 0"
        return f"{self.mean:.{digits}g} ± {self.std:.2g}"


def summarize(values: list[float]) -> Summary:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Summary(math.nan, math.nan, 0)
    array = np.asarray(finite, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else math.nan
    return Summary(float(array.mean()), std, len(array))


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None when a side has < 2 values or both are constant."""
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return float(p) if math.isfinite(p) else None


def welch_shifted_p(a: list[float], b: list[float], shift: float, alternative: str) -> float | None:
    """One-sided Welch p of H1: mean(a) - mean(b) < shift (``less``) or > shift (``greater``)."""
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(np.asarray(a, dtype=float) - shift, b, equal_var=False, alternative=alternative).pvalue
    return float(p) if math.isfinite(p) else None


def equivalence_p(a: list[float], b: list[float], margin: float) -> float | None:
    """Two one-sided Welch tests (TOST): p of H1 |mean(a) - mean(b)| < ``margin``, the larger of the two p-values."""
    below = welch_shifted_p(a, b, margin, "less")
    above = welch_shifted_p(a, b, -margin, "greater")
    return None if below is None or above is None else max(below, above)


def seeds_needed(a: list[float], b: list[float], difference: float, alpha: float = 0.05, power: float = 0.8,
                 one_sided: bool = False) -> int | None:
    """Runs per arm at which a Welch test at ``alpha`` detects ``difference`` with probability ``power``, from the
    arms' observed spread (normal approximation, n = (z_alpha + z_power)^2 (var_a + var_b) / difference^2), and at
    least one more than the arms have now (the approximation is optimistic at few runs)."""
    if len(a) < 2 or len(b) < 2 or difference == 0:
        return None
    variance = float(np.var(a, ddof=1) + np.var(b, ddof=1))
    z = stats.norm.ppf(1 - (alpha if one_sided else alpha / 2)) + stats.norm.ppf(power)
    return max(max(len(a), len(b)) + 1, math.ceil(z * z * variance / difference**2))


def significance(p: float | None) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, else nothing."""
    if p is None:
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


@dataclass(frozen=True)
class PowerFit:
    """``y = c * N**exponent``, fitted by least squares on log y against log N."""

    exponent: float
    stderr: float  # standard error of the exponent (NaN with two sizes)
    coefficient: float
    r2: float
    sizes: tuple[float, ...]
    tail_exponent: float  # slope between the two largest sizes, where per-step overheads weigh least

    def describe(self) -> str:
        se = f" ± {self.stderr:.2f}" if math.isfinite(self.stderr) else ""
        sizes = ", ".join(f"{n:g}" for n in self.sizes)
        tail = f"; last pair N^{self.tail_exponent:.2f}" if len(self.sizes) > 2 else ""
        return f"N^{self.exponent:.2f}{se} (R² {self.r2:.3f}; N = {sizes}{tail})"


def fit_power_law(sizes: list[float], costs: list[float]) -> PowerFit | None:
    """Fit the exponent of cost vs size; repeated sizes are averaged first. None with fewer than two sizes."""
    by_size: dict[float, list[float]] = {}
    for n, y in zip(sizes, costs):
        if n and y and n > 0 and y > 0 and math.isfinite(y):
            by_size.setdefault(float(n), []).append(float(y))
    if len(by_size) < 2:
        return None
    ns = np.array(sorted(by_size))
    x = np.log(ns)
    y = np.log([np.mean(by_size[n]) for n in ns])
    fit = stats.linregress(x, y)  # least squares on log-log: slope, its standard error, r
    stderr = float(fit.stderr) if len(x) > 2 else math.nan
    r2 = float(fit.rvalue**2) if np.ptp(y) > 0 else 1.0
    tail = float((y[-1] - y[-2]) / (x[-1] - x[-2]))
    return PowerFit(float(fit.slope), stderr, float(math.exp(fit.intercept)), r2, tuple(float(n) for n in ns), tail)
