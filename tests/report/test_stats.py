"""Mean/std over seeds, Welch's t-test and the power-law fit, checked against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rnnlab.report.stats import fit_power_law, significance, summarize, welch_p


def test_summary_is_the_sample_mean_and_std():
    values = [0.1, 0.4, 0.25, float("nan")]  # a NaN (diverged metric) is not a value
    summary = summarize(values)
    mean = (0.1 + 0.4 + 0.25) / 3
    std = math.sqrt(((0.1 - mean) ** 2 + (0.4 - mean) ** 2 + (0.25 - mean) ** 2) / 2)
    assert summary.n == 3
    assert summary.mean == pytest.approx(mean, abs=1e-15)
    assert summary.std == pytest.approx(std, abs=1e-15)
    single = summarize([2.0])
    assert single.n == 1 and math.isnan(single.std) and single.format() == "2"
    assert summarize([]).n == 0 and summarize([]).format() == "-"


def test_welch_p_matches_the_hand_formula_and_scipy():
    a, b = [0.52, 0.61, 0.55, 0.58], [0.70, 0.78, 0.72]
    ma, mb = np.mean(a), np.mean(b)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    p_hand = 2 * stats.t.sf(abs(t), df)
    assert welch_p(a, b) == pytest.approx(p_hand, rel=1e-10)
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert 0.001 < p_hand < 0.05  # a clear difference on these numbers


def test_welch_needs_two_values_a_side_and_some_spread():
    assert welch_p([1.0], [2.0, 3.0]) is None
    assert welch_p([1.0, 1.0], [2.0, 2.0]) is None
    assert significance(None) == "" and significance(0.2) == ""
    assert significance(0.03) == "*" and significance(0.004) == "**"


def test_power_law_fit_recovers_a_known_exponent():
    sizes = [8, 16, 32, 64, 128]
    exact = fit_power_law(sizes, [2.5e-4 * n**3 for n in sizes])
    assert exact.exponent == pytest.approx(3.0, abs=1e-9)
    assert exact.coefficient == pytest.approx(2.5e-4, rel=1e-9)
    assert exact.r2 == pytest.approx(1.0) and exact.tail_exponent == pytest.approx(3.0, abs=1e-9)
    assert exact.stderr == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(0)
    noisy_sizes = [n for n in sizes for _ in range(3)]  # three seeds per size, averaged before the fit
    noisy = fit_power_law(noisy_sizes, [1e-3 * n**3 * math.exp(rng.normal(0, 0.05)) for n in noisy_sizes])
    assert noisy.exponent == pytest.approx(3.0, abs=0.05)
    assert 0 < noisy.stderr < 0.05 and noisy.sizes == tuple(float(n) for n in sizes)
    assert fit_power_law([16, 16], [1.0, 2.0]) is None  # one size: nothing to fit
