"""Per-study arm tables: mean ± std over seeds, cost columns, and Welch's t-test against a baseline arm."""

from __future__ import annotations

import csv
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rnnlab.report.collect import Arm, Study, memory, metric, number, timing
from rnnlab.report.stats import Summary, significance, summarize, welch_p

# Headline test metrics in the order one is picked as a study's primary metric (metric names, not config names).
PRIMARY_ORDER = ("test/mse", "test/acc", "test/bpc", "test/ppl", "test/ler", "test/nll", "test/loss", "val/loss")
HIGHER_IS_BETTER = ("acc", "accuracy", "f1", "auc")
# The cost columns: key -> (header, getter). Cost claims rest on the counted ones (params, FLOPs, the allocator's
# model memory) and CPU time; wall time and the process's resident set are shown, never judged.
COSTS: dict[str, tuple[str, Callable[[dict], float | None]]] = {
    "params": ("params", lambda r: number(r, "params")),
    "flops_per_step": ("FLOPs/step", lambda r: timing(r, "flops_per_step")),
    "cpu_ms_per_step": ("CPU ms/step", lambda r: timing(r, "cpu_ms_per_step")),
    "model_memory_mb": ("model MB", lambda r: memory(r, "model_memory_mb")),
    "step_ms": ("wall ms/step", lambda r: timing(r, "step_ms")),
    "tokens_per_s": ("tokens/s", lambda r: timing(r, "tokens_per_s")),
    "peak_memory_mb": ("process MB", lambda r: number(r, "peak_memory_mb")),
}
COST_NOTE = (
    "params: trainable parameters; FLOPs/step: one training step's FLOPs counted by torch.utils.flop_counter "
    "(matrix products); CPU ms/step: the process's CPU time per step (threads as recorded); model MB: the "
    "allocator's peak in one training step plus parameters and optimizer state; wall ms/step, tokens/s and process "
    "MB (peak resident set) depend on the machine's load and the job's place in a sweep, and carry no verdict."
)
COUNT_COSTS = ("params", "tokens_per_s", "peak_memory_mb")  # shown as whole numbers


def higher_is_better(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in HIGHER_IS_BETTER


def study_metrics(study: Study) -> list[str]:
    """Every metric name in the study's records: test, then val, then train, then the rest."""
    names = {name for record in study.records for name in (record.get("metrics") or {})}
    order = {"test": 0, "val": 1, "train": 2}
    return sorted(names, key=lambda n: (order.get(n.split("/", 1)[0], 3), n))


def primary_metric(study: Study, requested: str | None = None) -> str | None:
    names = study_metrics(study)
    if requested:
        return requested if requested in names else None
    declared = {record.get("metric") for record in study.records} - {None}  # the data's own test metric
    if len(declared) == 1 and (metric := declared.pop()) in names:
        return metric
    return next((name for name in PRIMARY_ORDER if name in names), names[0] if names else None)


def parse_arm_spec(spec: str) -> list[tuple[str | None, str]]:
    """``"model=lstm data.seq_len=50"`` -> ``[("model", "lstm"), ("data.seq_len", "50")]``; a bare value has key
    None."""
    pairs: list[tuple[str | None, str]] = []
    for token in filter(None, re.split(r"\s+|,(?![^\[\]]*\])", spec)):  # commas inside [...] belong to a value
        key, sep, value = token.partition("=")
        pairs.append((key, value) if sep else (None, token))
    return pairs


def matches_spec(arm: Arm, pairs: list[tuple[str | None, str]]) -> bool:
    return all(arm.settings.get(k) == v if k else v in arm.settings.values() for k, v in pairs)


def spec_keys(arm: Arm, pairs: list[tuple[str | None, str]]) -> set[str]:
    keys = {k for k, _ in pairs if k}
    for key, value in pairs:
        if key is None:
            keys |= {k for k, v in arm.settings.items() if v == value}
    return keys


def default_baseline_spec(study: Study) -> str | None:
    """The first arm's value of the first swept key: each arm is tested against that value, all else equal."""
    if not study.swept or not study.arms:
        return None
    key = study.swept[0]
    return f"{key}={study.arms[0].settings[key]}"


def baseline_arms(study: Study, spec: str | None) -> dict[int, Arm | None]:
    """For each arm (by index), the arm matching ``spec`` that agrees with it on every other swept key.

    Raises ValueError when no arm of the study matches the spec.
    """
    result: dict[int, Arm | None] = {i: None for i in range(len(study.arms))}
    if not spec:
        return result
    pairs = parse_arm_spec(spec)
    candidates = [arm for arm in study.arms if matches_spec(arm, pairs)]
    if not candidates:
        raise ValueError(
            f"--baseline {spec!r} matches no arm of study '{study.name}'; its arms: "
            + "; ".join(arm.label for arm in study.arms)
        )
    for index, arm in enumerate(study.arms):
        for candidate in candidates:
            fixed = spec_keys(candidate, pairs)
            if all(candidate.settings[k] == v for k, v in arm.settings.items() if k not in fixed):
                result[index] = candidate
                break
    return result


@dataclass
class ArmStats:
    arm: Arm
    summaries: dict[str, Summary]
    baseline: Arm | None = None
    p_value: float | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        return self.baseline is self.arm


@dataclass
class StudyTable:
    study: Study
    primary: str | None
    baseline_spec: str | None
    metrics: list[str]
    rows: list[ArmStats]
    baseline_reason: str = ""


def study_table(study: Study, primary: str | None, baseline_spec: str | None, baseline_reason: str = "") -> StudyTable:
    """Mean ± std over each arm's completed runs of every cost and metric; Welch p of the primary vs its baseline."""
    metrics = study_metrics(study)
    if primary in metrics:
        metrics = [primary] + [m for m in metrics if m != primary]
    getters: dict[str, Callable[[dict], Any]] = {key: get for key, (_, get) in COSTS.items()}
    getters.update({name: (lambda r, name=name: metric(r, name)) for name in metrics})
    baselines = baseline_arms(study, baseline_spec)
    rows = []
    for index, arm in enumerate(study.arms):
        samples = {key: arm.values(get) for key, get in getters.items()}
        rows.append(ArmStats(arm, {key: summarize(v) for key, v in samples.items()}, baselines[index], samples=samples))
    by_arm = {id(row.arm): row for row in rows}
    for row in rows:
        if primary and row.baseline is not None and row.baseline is not row.arm:
            row.p_value = welch_p(row.samples[primary], by_arm[id(row.baseline)].samples[primary])
    return StudyTable(study, primary, baseline_spec, metrics, rows, baseline_reason)


def format_count(summary: Summary) -> str:
    if summary.n == 0:
        return "-"
    if summary.n == 1 or not summary.std:
        return f"{summary.mean:,.0f}"
    return f"{summary.mean:,.0f} ± {summary.std:,.0f}"


@dataclass
class Table:
    """Headers and string cells, rendered to Markdown, HTML or a rich table."""

    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


def arm_table(table: StudyTable) -> Table:
    """The report's table for one study: swept settings, counts, costs, primary metric with p, other metrics."""
    swept = table.study.swept
    headers = [*(swept or ["arm"]), "runs", "n", "failed", "diverged", *(label for label, _ in COSTS.values())]
    primary = table.primary
    if primary:
        headers += [primary, "p vs baseline"]
    others = [m for m in table.metrics if m != primary]
    headers += others
    rows = []
    for row in table.rows:
        s = row.summaries
        cells = [row.arm.settings[k] for k in swept] or [row.arm.label]
        cells += [str(len(row.arm.runs)), str(s[primary].n if primary else len(row.arm.completed)),
                  str(row.arm.count("failed")), str(row.arm.count("diverged"))]
        cells += [format_count(s[key]) if key in COUNT_COSTS else s[key].format(3) for key in COSTS]
        if primary:
            cells += [s[primary].format(), p_cell(row)]
        cells += [s[m].format() for m in others]
        rows.append(cells)
    reason = f" ({table.baseline_reason})" if table.baseline_reason else ""
    baseline = f"; baseline {table.baseline_spec}{reason}" if table.baseline_spec else ""
    caption = (f"Mean ± std over completed seeds (n); failed and diverged runs counted, not averaged. "
               f"Welch's t-test on {primary}{baseline}: * p < 0.05, ** p < 0.01. {COST_NOTE}")
    return Table(headers, rows, caption)


def p_cell(row: ArmStats) -> str:
    if row.is_baseline:
        return "baseline"
    if row.p_value is None:
        return "-"
    return f"{row.p_value:.3g}{significance(row.p_value)}"


def runs_table(records: list[dict], primary_by_run: dict[str, str | None]) -> Table:
    headers = ["run", "status", "model", "data", "optimizer", "seed", "params", "steps", "metric", "value",
               "wall ms/step", "error"]
    rows = []
    for record in records:
        name = primary_by_run.get(record["run_dir"])
        value = metric(record, name) if name else None
        rows.append([
            record["run_dir"], str(record.get("status", "?")), str(record.get("model") or "-"),
            str(record.get("data") or "-"), str(record.get("optimizer") or "-"), str(record.get("seed", "-")),
            f"{record['params']:,}" if isinstance(record.get("params"), int) else "-",
            str(record.get("steps", "-")), name or "-", "-" if value is None else f"{value:.4g}",
            "-" if timing(record, "step_ms") is None else f"{timing(record, 'step_ms'):.3g}",
            str(record.get("error") or ""),
        ])
    return Table(headers, rows, "Every run record, whatever its fate.")


def to_markdown(table: Table) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, table.headers)) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in table.rows]
    if table.caption:
        lines += ["", f"_{table.caption}_"]
    return "\n".join(lines)


def to_html(table: Table, css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in table.rows
    )
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    klass = f' class="{css_class}"' if css_class else ""
    return f"<table{klass}>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_arms_csv(path: Path, tables: list[StudyTable]) -> None:
    """One row per arm of every study: settings, counts, and mean/std/n of every cost and metric (plain numbers)."""
    swept = list(dict.fromkeys(key for t in tables for key in t.study.swept))
    quantities = list(dict.fromkeys([*COSTS, *(m for t in tables for m in t.metrics)]))
    header = ["study", "arm", *swept, "runs", "completed", "failed", "diverged", "primary_metric", "baseline",
              "p_value"]
    for q in quantities:
        header += [f"{q}_mean", f"{q}_std", f"{q}_n"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for table in tables:
            for row in table.rows:
                arm = row.arm
                line = [table.study.name, arm.label, *(arm.settings.get(k, "") for k in swept), len(arm.runs),
                        len(arm.completed), arm.count("failed"), arm.count("diverged"), table.primary or "",
                        row.baseline.label if row.baseline is not None else "",
                        "" if row.p_value is None else repr(row.p_value)]
                for q in quantities:
                    s = row.summaries.get(q)
                    line += ["", "", 0] if s is None or s.n == 0 else [
                        repr(s.mean), "" if not math.isfinite(s.std) else repr(s.std), s.n]
                writer.writerow(line)


def write_rows_csv(path: Path, table: Table) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.headers)
        writer.writerows(table.rows)
