"""What the survey's claims are judged on and its measured columns read, per arm and per run: pairs of arms that
differ only in the compared setting, gradient ratios, long-term dependency reach (the longest length solved), and
cost per data point against network size with its power-law fit. The verdicts: ``rnnlab.report.verdicts``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable

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
from rnnlab.report.stats import PowerFit, fit_power_law
from rnnlab.report.survey import Selector

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Arms, pairs and per-run quantities


def arm_matches(arm: Arm, selector: Selector) -> bool:
    return bool(arm.runs) and selector.matches(arm.runs[0])


def pairs(study: Study, a: Selector, b: Selector) -> list[tuple[Arm, Arm]]:
    """Arms of ``a`` and ``b`` equal on every swept key except those that tell ``a`` and ``b`` apart."""
    apart = a.config_keys + b.config_keys
    found = []
    for arm_a in (arm for arm in study.arms if arm_matches(arm, a)):
        for arm_b in (arm for arm in study.arms if arm_matches(arm, b) and arm is not arm_a):
            if settings_agree(study, arm_a.settings, arm_b.settings, apart):
                found.append((arm_a, arm_b))
    return found


def settings_agree(study: Study, first: dict[str, str], second: dict[str, str], apart: list[str]) -> bool:
    """Equal on every swept key but those of the config keys ``apart`` (``training``, ``model``), where a key that
    only one side's option has (``training.k1`` of ``training=tbptt``, unset ``-`` under ``training=bptt``) belongs
    to that option, not to the conditions."""
    identity = study.swept_matching(apart)
    for key in first:
        if key in identity or first[key] == second[key]:
            continue
        if "-" in (first[key], second[key]) and any(key.startswith(group + ".") for group in apart):
            continue
        return False
    return True


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



def reach_pairs(study: Study, groups: list[Reach], a: Selector, b: Selector) -> list[tuple[Reach, Reach]]:
    apart = a.config_keys + b.config_keys

    def matches(group: Reach, selector: Selector) -> bool:
        return any(arm_matches(arm, selector) for arm in group.arms)

    return [(ga, gb) for ga in groups if matches(ga, a) for gb in groups if gb is not ga and matches(gb, b)
            and settings_agree(study, ga.settings, gb.settings, apart)]


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
        label = " ".join(f"{k}={v}" for k, v in others if v != "-") or study.name  # "-": a key its option lacks
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
