"""Measured columns for the survey's tables and verdicts on its claims (the rows and claims: rnnlab.report.survey).

A claim's verdict comes only from runs of one study (identical conditions), pairing arms that differ in nothing but
the compared model/rule/optimizer: ``supported`` / ``contradicted`` (Welch's t-test at p < 0.05 where runs vary, a
plain comparison for deterministic counts such as parameters; "not worse" and "comparable" claims by a
non-inferiority or equivalence test with a stated margin), ``inconclusive`` (no significant difference, or too few
runs to test; the evidence names the seeds per arm, or the lengths, that would decide it), ``mixed`` (pairs
disagree) or ``not measured``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable

import numpy as np

from rnnlab.report.collect import (
    LENGTH_KEYS,
    SIZE_KEYS,
    Arm,
    Study,
    config_value,
    grad_ratios,
    hidden_size,
    metric,
    timing,
)
from rnnlab.report.stats import (
    PowerFit,
    Summary,
    equivalence_p,
    fit_power_law,
    seeds_needed,
    summarize,
    welch_p,
    welch_shifted_p,
)
from rnnlab.report.survey import CLAIMS, Claim, Selector, SurveyRow, describe_where
from rnnlab.report.tables import COSTS, COUNT_COSTS, format_count, higher_is_better

log = logging.getLogger(__name__)

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
# Arms, pairs and per-run quantities


def arm_matches(arm: Arm, selector: Selector) -> bool:
    return bool(arm.runs) and selector.matches(arm.runs[0])


def pairs(study: Study, a: Selector, b: Selector) -> list[tuple[Arm, Arm]]:
    """Arms of ``a`` and ``b`` equal on every swept key except those that tell ``a`` and ``b`` apart."""
    identity = study.swept_matching(a.config_keys + b.config_keys)
    found = []
    for arm_a in (arm for arm in study.arms if arm_matches(arm, a)):
        for arm_b in (arm for arm in study.arms if arm_matches(arm, b) and arm is not arm_a):
            if all(arm_a.settings[k] == arm_b.settings[k] for k in study.swept if k not in identity):
                found.append((arm_a, arm_b))
    return found


def budget_matched(arm: Arm) -> bool:
    """The arm's hidden size was chosen to meet a parameter budget (``model.param_budget``)."""
    return any(config_value(run, "model.param_budget") is not None for run in arm.runs)


def common_lag(arms: Iterable[Arm]) -> int | None:
    """The largest lag with a gradient ratio in some completed run of every arm."""
    lag_sets = [set().union(*(grad_ratios(r) for r in arm.completed)) if arm.completed else set() for arm in arms]
    common = set.intersection(*lag_sets) if lag_sets else set()
    return max(common) if common else None


def log_ratio_at(lag: int) -> Callable[[dict], float | None]:
    def get(record: dict) -> float | None:
        ratio = grad_ratios(record).get(lag)
        return math.log10(ratio) if ratio is not None and ratio > 0 else None

    return get


# ---------------------------------------------------------------------------------------------------------------
# Long-term dependency reach


@lru_cache(maxsize=64)
def _datamodule_baseline(data_json: str) -> float | None:
    """The trivial-predictor loss a datamodule documents (``task.baseline``), rebuilt from the recorded data config."""
    from hydra.utils import get_class

    config = json.loads(data_json)
    try:
        cls = get_class(config.pop("_target_"))
        return getattr(getattr(cls(**config), "task", None), "baseline", None)
    except Exception as error:  # a datamodule that cannot be rebuilt here has no known baseline
        log.debug("no baseline for %s: %s", data_json, error)
        return None


def task_baseline(record: dict) -> float | None:
    """The record's ``baseline`` key, or the datamodule's documented baseline for its data config."""
    if isinstance(record.get("baseline"), (int, float)):
        return float(record["baseline"])
    data = config_value(record, "data")
    if not isinstance(data, dict) or "_target_" not in data:
        return None
    return _datamodule_baseline(json.dumps(data, sort_keys=True, default=str))


def run_solved(record: dict, fraction: float) -> bool:
    """Completed with test/loss below ``fraction`` of the task's trivial-predictor baseline."""
    loss, baseline = metric(record, "test/loss"), task_baseline(record)
    return (record.get("status") == "completed" and loss is not None and baseline is not None
            and math.isfinite(loss) and loss < fraction * baseline)


def length_key(study: Study) -> str | None:
    return next((k for k in study.swept if k.startswith("data.") and k.rsplit(".", 1)[-1] in LENGTH_KEYS), None)


@dataclass
class Reach:
    """Longest sequence length solved by at least half of an arm's runs, over the lengths one group of arms tried."""

    settings: dict[str, str]  # the group's other swept settings
    arms: list[Arm]
    lengths: list[float]
    solved: list[float]

    @property
    def longest(self) -> float:
        return max(self.solved, default=0.0)

    def describe(self) -> str:
        tried = ", ".join(f"{t:g}" for t in self.lengths)
        if not self.solved:
            return f"none solved (T = {tried})"
        return f"T = {self.longest:g} (solved {', '.join(f'{t:g}' for t in self.solved)} of {tried})"


def reaches(study: Study, fraction: float) -> list[Reach]:
    key = length_key(study)
    if key is None:
        return []
    groups: dict[tuple, Reach] = {}
    for arm in study.arms:
        try:
            length = float(arm.settings[key])
        except ValueError:
            continue
        others = {k: v for k, v in arm.settings.items() if k != key}
        if not any(task_baseline(run) is not None for run in arm.runs):
            continue
        group = groups.setdefault(tuple(others.items()), Reach(others, [], [], []))
        group.arms.append(arm)
        group.lengths.append(length)
        solved = sum(run_solved(run, fraction) for run in arm.runs)
        if solved and 2 * solved >= len(arm.runs):
            group.solved.append(length)
    for group in groups.values():
        group.lengths.sort()
        group.solved.sort()
    return list(groups.values())


def _reach_budget(a: Reach, b: Reach) -> str:
    """What would tell two equal reaches apart: longer lengths when both solve the longest tried, more training
    when neither solves the shortest."""
    if a.solved and a.longest >= max(a.lengths):
        return f"; both solve every length tried: lengths beyond T = {max(a.lengths):g} would decide it"
    if not a.solved:
        return f"; neither solves T = {min(a.lengths):g}: more updates (steps) per run would decide it"
    return ""


def reach_pairs(study: Study, groups: list[Reach], a: Selector, b: Selector) -> list[tuple[Reach, Reach]]:
    identity = study.swept_matching(a.config_keys + b.config_keys)

    def matches(group: Reach, selector: Selector) -> bool:
        return any(arm_matches(arm, selector) for arm in group.arms)

    return [(ga, gb) for ga in groups if matches(ga, a) for gb in groups if gb is not ga and matches(gb, b)
            and all(ga.settings[k] == gb.settings[k] for k in ga.settings if k not in identity)]


# ---------------------------------------------------------------------------------------------------------------
# Cost against network size


@dataclass
class CostSeries:
    """Cost per data point against hidden size N for one group of arms: ``measure`` names which cost."""

    label: str
    measure: str
    runs: list[dict]
    sizes: list[float]
    costs: list[float]
    fit: PowerFit | None


def flops_per_data_point(record: dict) -> float | None:
    """FLOPs of training per data point (one valid time step of one sequence), counted in the measured step."""
    return timing(record, "flops_per_token")


def cpu_us_per_data_point(record: dict) -> float | None:
    """CPU microseconds of training per data point: ``timing.cpu_ms_per_step`` over the tokens of a mean step."""
    cpu_ms, tokens = timing(record, "cpu_ms_per_step"), timing(record, "tokens_per_step")
    return 1000 * cpu_ms / tokens if cpu_ms and tokens else None


# Cost per data point, in the order a complexity verdict prefers them: FLOPs count the algorithm's arithmetic and
# carry no per-step overhead, which dominates CPU time at small N (the CPU-time fit is shown beside it).
COST_MEASURES: dict[str, Callable[[dict], float | None]] = {
    "FLOPs": flops_per_data_point,
    "CPU µs": cpu_us_per_data_point,
}


def cost_series(study: Study) -> list[CostSeries]:
    """Runs grouped by every swept setting but the size keys; a group over two or more sizes gets a fit per cost
    measure the runs recorded."""
    size_keys = [k for k in study.swept if k.rsplit(".", 1)[-1] in SIZE_KEYS]
    groups: dict[tuple, list[dict]] = {}
    for arm in study.arms:
        others = tuple((k, v) for k, v in arm.settings.items() if k not in size_keys)
        groups.setdefault(others, []).extend(arm.completed)
    series = []
    for others, runs in groups.items():
        label = " ".join(f"{k}={v}" for k, v in others) or study.name
        for measure, cost in COST_MEASURES.items():
            points = [(hidden_size(r), cost(r)) for r in runs]
            points = [(n, y) for n, y in points if n and y]
            if len({n for n, _ in points}) < 2:
                continue
            sizes, costs = [n for n, _ in points], [y for _, y in points]
            series.append(CostSeries(label, measure, runs, sizes, costs, fit_power_law(sizes, costs)))
    return series


def verdict_series(series: list[CostSeries]) -> list[CostSeries]:
    """Per group of runs, the series of the first cost measure (COST_MEASURES order) that has a fit."""
    chosen: dict[str, CostSeries] = {}
    for measure in COST_MEASURES:
        for s in series:
            if s.measure == measure and s.fit is not None and s.label not in chosen:
                chosen[s.label] = s
    return list(chosen.values())


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
    groups = (("model", selector.models), ("training.rule", selector.rules), ("optimizer", selector.optimizers))
    for group, names in groups:
        options = registry(group)
        for name in names:
            missing = options and name not in options
            parts.append(f"{group}={name}" + (" (no config yet)" if missing else ""))
    if not parts:
        return "no config"
    return ", ".join(parts + [describe_where(key, allowed) for key, allowed in row.selector.where])
