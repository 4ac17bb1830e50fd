"""Everything a report shows, computed once from the records: study tables, figures, survey tables and verdicts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from rnnlab.config_check import CONF_DIR, group_options
from rnnlab.report import plots
from rnnlab.report.collect import Study, check_conditions, group_studies
from rnnlab.report.survey import CLAIMS, TABLES
from rnnlab.report.verdicts import (
    CostSeries,
    Judgement,
    Reach,
    Settings,
    configured,
    cost_series,
    judge_all,
    reaches,
    row_measures,
)
from rnnlab.report.tables import (
    StudyTable,
    Table,
    default_baseline_spec,
    matches_spec,
    parse_arm_spec,
    primary_metric,
    runs_table,
    study_table,
)

log = logging.getLogger(__name__)

MEASURED = {
    "II": ("runs", "params", "step_ms", "peak_memory_mb", "time exponent"),
    "III": ("runs", "params", "step_ms", "peak_memory_mb", "primary", "grad ratio", "reach"),
    "IV": ("runs", "params", "step_ms", "peak_memory_mb", "primary", "grad ratio", "reach"),
}
MEASURED_HEADERS = {"runs": "runs (measured)", "params": "params", "step_ms": "step ms", "peak_memory_mb": "peak MB",
                    "time exponent": "time per data point vs N (fit)", "primary": "primary metric",
                    "grad ratio": "vanishing gradients: grad ratio", "reach": "long-term reach (longest T solved)"}


@dataclass
class StudyReport:
    table: StudyTable
    fits: list[CostSeries]
    reach: list[Reach]
    figures: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def study(self) -> Study:
        return self.table.study


@dataclass
class Report:
    sources: list[str]
    records: list[dict]
    studies: list[StudyReport]
    judgements: list[Judgement]
    survey: dict[str, tuple[str, Table]]
    runs: Table
    settings: Settings


def registry(group: str) -> list[str]:
    """Config names of a group (Hydra groups are the registry), or [] when unknown. Learning rules are values of
    ``training.rule``, listed by the training package."""
    if group == "training.rule":
        try:
            from rnnlab.training.rules import RULES
        except ImportError:
            return []
        return list(RULES)
    return group_options(group) if (CONF_DIR / group).is_dir() else []


def build_report(records: list[dict], sources: list[str], *, baseline: str | None = None, study: str | None = None,
                 allow_mixed: bool = False, metric: str | None = None, solved_fraction: float = 0.1,
                 tolerance: float = 0.5, figures: bool = True) -> Report:
    """Group, check and summarize ``records``.

    Raises MixedConditionsError for a study whose non-swept settings differ (unless ``allow_mixed``), and ValueError
    for a ``study`` or ``baseline`` that matches nothing.
    """
    studies = group_studies(records)
    if study is not None:
        chosen = [s for s in studies if s.name == study]
        if not chosen:
            raise ValueError(f"--study {study!r} is not among the studies found: {', '.join(s.name for s in studies)}")
        studies = chosen
    if not allow_mixed:
        check_conditions(studies)
    if baseline and not study and not any(_matches_any(s, baseline) for s in studies):
        arms = "; ".join(f"{s.name}: {arm.label}" for s in studies for arm in s.arms)
        raise ValueError(f"--baseline {baseline!r} matches no arm; the arms are {arms}")
    primary = {s.name: primary_metric(s, metric) for s in studies}
    if metric and not any(primary.values()):
        raise ValueError(f"--metric {metric!r} is in no record's metrics")
    settings = Settings(primary, solved_fraction=solved_fraction, tolerance=tolerance)
    study_reports = []
    for s in studies:
        spec = baseline if baseline and (study or _matches_any(s, baseline)) else default_baseline_spec(s)
        if baseline and spec != baseline:
            log.warning("--baseline %s matches no arm of study %s; using %s", baseline, s.name, spec)
        report = StudyReport(study_table(s, primary[s.name], spec), cost_series(s), reaches(s, solved_fraction))
        if figures:
            report.figures = study_figures(report)
        study_reports.append(report)
    judgements = judge_all(studies, settings)
    kept = [r for s in studies for r in s.records]
    primary_by_run = {r["run_dir"]: primary[s.name] for s in studies for r in s.records}
    return Report(sources, kept, study_reports, judgements, survey_tables(study_reports, settings, judgements),
                  runs_table(kept, primary_by_run), settings)


def _matches_any(study: Study, spec: str) -> bool:
    pairs = parse_arm_spec(spec)
    return any(matches_spec(arm, pairs) for arm in study.arms)


def study_figures(report: StudyReport) -> list[tuple[str, bytes]]:
    made = [
        ("Learning curves", plots.learning_curves(report.study)),
        (f"{report.table.primary} vs parameters", plots.metric_against(report.table, "params")),
        (f"{report.table.primary} vs step time", plots.metric_against(report.table, "step_ms")),
        ("Gradient norm ratio vs lag", plots.gradient_vs_lag(report.study)),
        ("Cost vs hidden size N", plots.cost_vs_size(report.fits)),
    ]
    return [(title, image) for title, image in made if image]


def survey_tables(reports: list[StudyReport], settings: Settings, judgements: list[Judgement]
                  ) -> dict[str, tuple[str, Table]]:
    """Tables II-IV: the survey's columns, the configs that measure each row, measured cells and claim verdicts."""
    tables = {}
    several = len(reports) > 1
    for key, (title, rows) in TABLES.items():
        qualitative = list(rows[0].survey)
        headers = ["row", "configs", *qualitative, *(MEASURED_HEADERS[m] for m in MEASURED[key]), "claims"]
        body = []
        for row in rows:
            measured: dict[str, list[str]] = {}
            for report in reports:
                cells = row_measures(row, report.study, settings, report.fits, report.reach)
                for name, value in (cells or {}).items():
                    measured.setdefault(name, []).append(f"{value} [{report.study.name}]" if several else value)
            verdicts = [f"{j.claim.text}: {j.verdict}" + (f" [{j.study}]" if several and j.study != "-" else "")
                        for j in judgements if j.claim.subject == row.name and j.claim.table == key]
            body.append([
                row.name, configured(row, registry), *(row.survey[q] for q in qualitative),
                *("; ".join(measured.get(m, [])) or "not measured" for m in MEASURED[key]),
                "; ".join(verdicts) or "-",
            ])
        caption = ("Survey columns paraphrase Salehinejad et al., 'Recent Advances in Recurrent Neural Networks'; "
                   "measured columns come from the runs in this report.")
        tables[key] = (title, Table(headers, body, caption))
    return tables


def claims_table(judgements: list[Judgement]) -> Table:
    rows = [[f"Table {j.claim.table}", j.claim.subject, j.claim.text, j.study, j.verdict, j.evidence]
            for j in judgements]
    return Table(["survey", "row", "claim", "study", "verdict", "evidence"], rows,
                 f"{len(CLAIMS)} claims; supported / contradicted at p < 0.05 (Welch) where runs vary.")
