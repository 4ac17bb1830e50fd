"""Measured columns for the survey's tables and verdicts on its claims (the rows and claims: rnnlab.report.survey).

A claim's verdict comes only from runs of one study (identical conditions), pairing arms that differ in nothing but
the compared model/rule/optimizer: ``supported`` / ``contradicted`` (Welch's t-test at p < 0.05 where runs vary, a
plain comparison for deterministic counts such as parameters; "not worse" and "comparable" claims by a
non-inferiority or equivalence test with a stated margin), ``inconclusive`` (no significant difference, or too few
runs to test; the evidence names the seeds per arm, or the lengths, that would decide it), ``mixed`` (pairs
disagree) or ``not measured``.

What verdicts and measured columns are computed from (pairs of arms, reach, cost fits): ``rnnlab.report.quantities``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from rnnlab.report.collect import Arm, Study, hidden_size, metric
from rnnlab.report.quantities import (
    CostSeries,
    Reach,
    arm_matches,
    budget_matched,
    common_lag,
    cost_series,
    log_ratio_at,
    pairs,
    reach_pairs,
    reaches,
    verdict_series,
)
from rnnlab.report.stats import Summary, equivalence_p, seeds_needed, summarize, welch_p, welch_shifted_p
from rnnlab.report.survey import CLAIMS, Claim, SurveyRow, describe_where
from rnnlab.report.tables import COSTS, COUNT_COSTS, format_count, higher_is_better

ALPHA = 0.05
ROW_COSTS = ("params", "flops_per_step", "cpu_ms_per_step", "model_memory_mb")  # the survey tables' cost cells
# Claims on these compare architectures at one hidden size (the survey's setting); arms matched by a parameter budget
# make them equal by construction and are left out of those verdicts.
SIZE_COSTS = ROW_COSTS


@dataclass
class Settings:
    """How verdicts are reached: the primary metric per study, solved threshold, exponent tolerance."""

    primary: dict[str, str | None]  # study name -> metric
    solved_fraction: float = 0.1  # solved: test/loss below this fraction of the task's trivial baseline
    tolerance: float = 0.5  # |fitted - claimed exponent| within which a complexity claim is supported
    alpha: float = ALPHA
    margin: float = 0.1  # "not worse" / "similar": within this fraction of the compared arm's mean


@dataclass
class Judgement:
    claim: Claim
    study: str
    verdict: str
    evidence: str


# ---------------------------------------------------------------------------------------------------------------
# Verdicts


def combine(verdicts: list[str]) -> str:
    distinct = set(verdicts)
    if not distinct:
        return "not measured"
    if len(distinct) == 1:
        return verdicts[0]
    if {"supported", "contradicted"} <= distinct:
        return "mixed"
    return "supported" if "supported" in distinct else "contradicted" if "contradicted" in distinct else "inconclusive"


def directional(xa: list[float], xb: list[float], a_greater: bool, deterministic: bool, alpha: float
                ) -> tuple[str, str]:
    """Verdict on "a > b" (or "a < b"): Welch's test where runs vary; a plain comparison of exact counts. An
    undecided test names the runs per arm that would decide the observed difference."""
    sa, sb = summarize(xa), summarize(xb)
    if sa.n == 0 or sb.n == 0:
        return "not measured", ""
    holds = sa.mean > sb.mean if a_greater else sa.mean < sb.mean
    numbers = f"{_num(sa)} vs {_num(sb)}"
    if deterministic:
        return ("supported" if holds else "contradicted"), numbers
    p = welch_p(xa, xb)
    if p is None:
        if sa.n > 1 and sb.n > 1:  # both constant
            return ("supported" if holds else "contradicted"), numbers + " (no spread)"
        return "inconclusive", numbers + " (too few runs for a test: 3 seeds per arm would)"
    numbers += f", Welch p = {p:.3g}"
    if p >= alpha:
        return "inconclusive", numbers + _needed(seeds_needed(xa, xb, sa.mean - sb.mean, alpha))
    return ("supported" if holds else "contradicted"), numbers


def judge_ratio(claim: Claim, xa: list[float], xb: list[float]) -> tuple[str, str]:
    """"a is about ``factor`` times b": the ratio of the means within ``factor * (1 ± tolerance)``."""
    sa, sb = summarize(xa), summarize(xb)
    if sa.n == 0 or sb.n == 0 or not sb.mean:
        return "not measured", ""
    ratio = sa.mean / sb.mean
    low, high = claim.factor * (1 - claim.tolerance), claim.factor * (1 + claim.tolerance)
    numbers = f"{_num(sa)} / {_num(sb)} = {ratio:.3g} (claimed {claim.factor:g}x, accepted {low:.3g}-{high:.3g})"
    return ("supported" if low <= ratio <= high else "contradicted"), numbers


def _num(summary: Summary) -> str:
    std = f" ± {summary.std:.2g}" if summary.n > 1 and math.isfinite(summary.std) and summary.std > 0 else ""
    return f"{summary.mean:.5g}{std} (n={summary.n})"


def _needed(runs: int | None) -> str:
    return f"; about {runs} seeds per arm would decide it" if runs else ""


def _reach_budget(a: Reach, b: Reach) -> str:
    """What would tell two equal reaches apart: longer lengths when both solve the longest tried, more training
    when neither solves the shortest."""
    if a.solved and a.longest >= max(a.lengths):
        return f"; both solve every length tried: lengths beyond T = {max(a.lengths):g} would decide it"
    if not a.solved:
        return f"; neither solves T = {min(a.lengths):g}: more updates (steps) per run would decide it"
    return ""

def judge_primary(relation: str, xa: list[float], xb: list[float], metric_name: str, settings: Settings
                  ) -> tuple[str, str]:
    """``worse`` (Welch), ``not_worse`` (non-inferiority) or ``similar`` (equivalence, two one-sided tests) on the
    primary metric, in its better direction. The margin is ``settings.margin`` times b's mean: a is "not worse" when
    it is worse by less than the margin (one-sided Welch p < alpha), "similar" when the difference lies within
    ±margin; each is contradicted when the difference lies beyond the margin with p < alpha."""
    sa, sb = summarize(xa), summarize(xb)
    if sa.n == 0 or sb.n == 0:
        return "not measured", ""
    alpha = settings.alpha
    sign = -1.0 if higher_is_better(metric_name) else 1.0  # sign * (a - b) > 0: a is worse
    worse_a, worse_b = [sign * x for x in xa], [sign * x for x in xb]
    worse_by = sign * (sa.mean - sb.mean)
    numbers = f"{metric_name} {_num(sa)} vs {_num(sb)}"
    if welch_p(xa, xb) is None:
        return "inconclusive", numbers + " (too few runs for a test: 3 seeds per arm would)"
    if relation == "worse":
        p = welch_p(xa, xb)
        numbers += f", Welch p = {p:.3g}"
        if p >= alpha:
            return "inconclusive", numbers + _needed(seeds_needed(xa, xb, worse_by, alpha))
        return ("supported" if worse_by > 0 else "contradicted"), numbers
    margin = settings.margin * abs(sb.mean)
    numbers += f", margin ±{margin:.3g} ({settings.margin:.0%} of b)"
    beyond = welch_shifted_p(worse_a, worse_b, margin, "greater")  # worse by more than the margin
    if relation == "not_worse":
        within = welch_shifted_p(worse_a, worse_b, margin, "less")
        numbers += f", non-inferiority p = {within:.3g}"
        if within < alpha:
            return "supported", numbers
        if beyond < alpha:
            return "contradicted", numbers + f" (worse beyond the margin, p = {beyond:.3g})"
        return "inconclusive", numbers + _needed(seeds_needed(xa, xb, margin - worse_by, alpha, one_sided=True))
    better_beyond = welch_shifted_p(worse_a, worse_b, -margin, "less")  # better by more than the margin
    p = equivalence_p(worse_a, worse_b, margin)
    numbers += f", equivalence (TOST) p = {p:.3g}"
    if p < alpha:
        return "supported", numbers
    if min(beyond, better_beyond) < alpha:
        return "contradicted", numbers + f" (differs beyond the margin, p = {min(beyond, better_beyond):.3g})"
    return "inconclusive", numbers + _needed(seeds_needed(xa, xb, margin - abs(worse_by), alpha, one_sided=True))


def judge(claim: Claim, study: Study, settings: Settings, fits: list[CostSeries] | None = None,
          reach_groups: list[Reach] | None = None) -> Judgement | None:
    """The claim's verdict in one study, or None when the study has no runs for it."""
    if claim.relation == "exponent":
        fits = cost_series(study) if fits is None else fits
        relevant = [s for s in verdict_series(fits)
                    if len(s.fit.sizes) >= 3 and all(claim.a.matches(r) for r in s.runs)]
        if not relevant:
            return None
        verdicts, evidence = [], []
        for series in relevant:
            close = abs(series.fit.exponent - claim.exponent) <= settings.tolerance
            verdicts.append("supported" if close else "contradicted")
            beside = [f"{s.measure} {s.fit.describe()}" for s in fits
                      if s.label == series.label and s is not series and s.fit]
            evidence.append(f"{series.label}: {series.measure} per data point fitted {series.fit.describe()} vs "
                            f"claimed N^{claim.exponent:g}" + (f" ({'; '.join(beside)})" if beside else ""))
        return Judgement(claim, study.name, combine(verdicts), "; ".join(evidence))
    if claim.quantity == "reach":
        groups = reaches(study, settings.solved_fraction) if reach_groups is None else reach_groups
        found = reach_pairs(study, groups, claim.a, claim.b)
        if not found:
            return None
        verdicts, evidence = [], []
        for ga, gb in found:
            verdict = ("supported" if ga.longest > gb.longest else "contradicted" if ga.longest < gb.longest
                       else "inconclusive")
            verdicts.append(verdict)
            evidence.append(f"{_arm_name(ga.arms[0], study)}: {ga.describe()} vs "
                            f"{_arm_name(gb.arms[0], study)}: {gb.describe()}"
                            + (_reach_budget(ga, gb) if verdict == "inconclusive" else ""))
        return Judgement(claim, study.name, combine(verdicts), "; ".join(evidence))
    found = pairs(study, claim.a, claim.b)
    if claim.quantity in SIZE_COSTS:  # "more parameters / computation / memory" compares models of one size
        found = [(a, b) for a, b in found if not (budget_matched(a) or budget_matched(b))]
    verdicts, evidence = [], []
    for arm_a, arm_b in found:
        if claim.quantity == "grad_ratio":
            lag = common_lag([arm_a, arm_b])
            if lag is None:
                continue
            get, what = log_ratio_at(lag), f"log10 grad ratio at lag {lag}"
        elif claim.quantity == "primary":
            name = settings.primary.get(study.name)
            if not name:
                continue
            get, what = (lambda r, name=name: metric(r, name)), name
        else:
            get, what = COSTS[claim.quantity][1], COSTS[claim.quantity][0]
        xa, xb = arm_a.values(get), arm_b.values(get)
        if claim.relation == "ratio":
            if len({hidden_size(r) for r in arm_a.completed + arm_b.completed}) != 1:
                continue  # "of the same hidden size": only pairs that share it
            verdict, numbers = judge_ratio(claim, xa, xb)
            numbers = f"{what} {numbers}"
        elif claim.quantity == "primary":
            verdict, numbers = judge_primary(claim.relation, xa, xb, what, settings)
        else:
            verdict, numbers = directional(xa, xb, claim.relation == "greater", claim.quantity == "params",
                                           settings.alpha)
            numbers = f"{what} {numbers}"
        if verdict == "not measured":
            continue
        verdicts.append(verdict)
        evidence.append(f"{_arm_name(arm_a, study)} vs {_arm_name(arm_b, study)}: {numbers}")
    if not verdicts:
        return None
    return Judgement(claim, study.name, combine(verdicts), "; ".join(evidence))


def _arm_name(arm: Arm, study: Study) -> str:
    return arm.label if study.swept else str(arm.runs[0].get("model") or arm.label)


def judge_all(studies: list[Study], settings: Settings) -> list[Judgement]:
    """Every claim in every study that measures it; claims measured nowhere get one ``not measured`` entry."""
    judgements = []
    for claim in CLAIMS:
        found = []
        for study in studies:
            fits = cost_series(study) if claim.relation == "exponent" else None
            groups = reaches(study, settings.solved_fraction) if claim.quantity == "reach" else None
            judgement = judge(claim, study, settings, fits, groups)
            if judgement is not None:
                found.append(judgement)
        judgements += found or [Judgement(claim, "-", "not measured", _missing(claim))]
    return judgements


def _missing(claim: Claim) -> str:
    needs = {
        "time_exponent": "a sweep over model.hidden_size (3+ sizes) with this training rule",
        "reach": "a sweep over the task length (data.seq_len / data.delay) on a task with a baseline, both models",
        "grad_ratio": "grad_ratio_<lag> keys from the gradient-flow diagnostics, both models",
        "primary": "both arms in one study",
    }.get(claim.quantity, "both arms in one study")
    other = f" vs {claim.b.describe()}" if claim.b else ""
    return f"needs {needs}: {claim.a.describe()}{other}"


# ---------------------------------------------------------------------------------------------------------------
# Measured columns of the survey tables


def row_measures(row: SurveyRow, study: Study, settings: Settings, fits: list[CostSeries],
                 reach_groups: list[Reach]) -> dict[str, str] | None:
    """The measured cells of one survey row from one study's runs, or None when none of its runs match."""
    arms = [arm for arm in study.arms if arm_matches(arm, row.selector)]
    runs = [run for arm in arms for run in arm.completed]
    if not arms:
        return None
    cells = {"runs": f"{sum(len(a.runs) for a in arms)} ({len(runs)} completed)"}
    for key in ROW_COSTS:
        summary = summarize([v for v in (COSTS[key][1](r) for r in runs) if v is not None])
        cells[key] = format_count(summary) if key in COUNT_COSTS else summary.format(3)
    if row.table == "II":
        relevant = [s for s in fits if s.fit and all(row.selector.matches(r) for r in s.runs)]
        cells["time exponent"] = "; ".join(f"{s.label}: {s.measure} {s.fit.describe()}" for s in relevant) or "-"
        return cells
    primary = settings.primary.get(study.name)
    if primary:
        means = [m for m in (summarize(arm.values(lambda r: metric(r, primary))) for arm in arms) if m.n]
        if len(means) == 1:
            cells["primary"] = f"{primary} {means[0].format()}"
        elif means:
            low, high = min(m.mean for m in means), max(m.mean for m in means)
            cells["primary"] = f"{primary} {low:.4g}–{high:.4g} over {len(means)} arms"
    lag = common_lag([arm for arm in arms if arm.completed]) if any(a.completed for a in arms) else None
    if lag is not None:
        logs = [v for v in (log_ratio_at(lag)(r) for r in runs) if v is not None]
        cells["grad ratio"] = f"{10 ** float(np.mean(logs)):.3g} at lag {lag} (geometric mean, n={len(logs)})"
    reach = [g for g in reach_groups if any(arm in arms for arm in g.arms)]
    if reach:
        cells["reach"] = "; ".join(g.describe() for g in reach)
    return cells


def configured(row: SurveyRow, registry: Callable[[str], list[str]]) -> str:
    """The row's config names, each marked when its group has no such config (Hydra groups are the registry)."""
    parts = []
    selector = row.selector
    groups = (("model", selector.models), ("training", selector.rules), ("optimizer", selector.optimizers))
    for group, names in groups:
        options = registry(group)
        for name in names:
            missing = options and name not in options
            parts.append(f"{group}={name}" + (" (no config yet)" if missing else ""))
    if not parts:
        return "no config"
    return ", ".join(parts + [describe_where(key, allowed) for key, allowed in row.selector.where])
