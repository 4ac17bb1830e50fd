"""Everything a report shows, computed once from the records: study tables, figures, survey tables and verdicts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import rnnlab.study as study_files
from rnnlab.conf_dir import CONF_DIR, group_options
from rnnlab.report import plots
from rnnlab.report.collect import Study, check_conditions, group_studies
from rnnlab.report.published import published_tables
from rnnlab.report.quantities import CostSeries, Reach, cost_series, reaches
from rnnlab.report.survey import CLAIMS, SURVEY, TABLES
from rnnlab.report.tables import (
    COSTS,
    StudyTable,
    Table,
    default_baseline_spec,
    matches_spec,
    parse_arm_spec,
    primary_metric,
    runs_table,
    study_table,
)
from rnnlab.report.verdicts import ROW_COSTS, Judgement, Settings, configured, judge_all, row_measures

log = logging.getLogger(__name__)

MEASURED = {
    "II": ("runs", *ROW_COSTS, "time exponent"),
    "III": ("runs", *ROW_COSTS, "primary", "grad ratio", "reach"),
    "IV": ("runs", *ROW_COSTS, "primary", "grad ratio", "reach"),
}
MEASURED_HEADERS = {"runs": "runs (measured)", **{key: COSTS[key][0] for key in ROW_COSTS},
                    "time exponent": "cost per data point vs N (fit)", "primary": "primary metric",
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
    published: list[tuple[str, Table]] = field(default_factory=list)  # (title, table) per study a figure matches
    skipped: list[str] = field(default_factory=list)  # "<path>: <reason>" of each unreadable record left out


def registry(group: str) -> list[str]:
    """Config names of a group (Hydra groups are the registry: ``training`` lists the learning rules), or [] when
    unknown."""
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
        spec, reason = choose_baseline(s, baseline, forced=bool(study))
        if baseline and spec != baseline:
            log.warning("--baseline %s matches no arm of study %s; using %s (%s)", baseline, s.name, spec, reason)
        report = StudyReport(study_table(s, primary[s.name], spec, reason), cost_series(s),
                             reaches(s, solved_fraction))
        if figures:
            report.figures = study_figures(report)
        study_reports.append(report)
    judgements = judge_all(studies, settings)
    kept = [r for s in studies for r in s.records]
    primary_by_run = {r["run_dir"]: primary[s.name] for s in studies for r in s.records}
    return Report(sources, kept, study_reports, judgements, survey_tables(study_reports, settings, judgements),
                  runs_table(kept, primary_by_run), settings, published_tables(studies))


def choose_baseline(study: Study, requested: str | None, forced: bool) -> tuple[str | None, str]:
    """The arm the study's others are tested against, and why: ``--baseline`` (always when ``forced``, else where it
    matches), the baseline the study file declares (``sweeps/<study>.yaml``, found from the runs' ``name``), or the
    first arm's value of the first swept key."""
    if requested and (forced or _matches_any(study, requested)):
        return requested, "--baseline"
    declared, source = declared_baseline(study.name)
    if declared and _matches_any(study, declared):
        return declared, f"declared by {source}"
    spec = default_baseline_spec(study)
    if spec is None:
        return None, "one arm, nothing to compare"
    return spec, f"no baseline declared for study {study.name!r}: the first arm's value of its first swept key"


def declared_baseline(study_name: str) -> tuple[str | None, str | None]:
    """``baseline`` of the study file that ran ``study_name`` (rnnlab-sweep names runs ``<study>-<group>``): the
    group's own, else the file's."""
    study, _, group = study_name.partition("-")
    try:
        spec = study_files.load_study(study)
    except study_files.SweepError:
        return None, None
    source = f"sweeps/{study}.yaml" if (study_files.SWEEPS_DIR / f"{study}.yaml").is_file() else None
    group_spec = (spec.get("groups") or {}).get(group) or {}
    if group_spec.get("baseline"):
        return group_spec["baseline"], f"{source} (group {group})"
    return spec.get("baseline"), source


def _matches_any(study: Study, spec: str) -> bool:
    pairs = parse_arm_spec(spec)
    return any(matches_spec(arm, pairs) for arm in study.arms)


def study_figures(report: StudyReport) -> list[tuple[str, bytes]]:
    made = [
        ("Learning curves", plots.learning_curves(report.study)),
        (f"{report.table.primary} vs parameters", plots.metric_against(report.table, "params")),
        (f"{report.table.primary} vs CPU time per step", plots.metric_against(report.table, "cpu_ms_per_step")),
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
        headers = ["row", "source", "configs", *qualitative, *(MEASURED_HEADERS[m] for m in MEASURED[key]),
                   "claims"]
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
                row.name, row.source, configured(row, registry), *(row.cell(q) for q in qualitative),
                *("; ".join(measured.get(m, [])) or "not measured" for m in MEASURED[key]),
                "; ".join(verdicts) or "-",
            ])
        caption = (f"Qualitative columns paraphrase Salehinejad et al., 'Recent Advances in Recurrent Neural "
                   f"Networks' where the source is '{SURVEY}'; other rows (and cells marked [...]) come from the "
                   "cited paper, not the survey. Measured columns come from the runs in this report.")
        tables[key] = (title, Table(headers, body, caption))
    return tables


def claims_table(judgements: list[Judgement]) -> Table:
    rows = [[f"Table {j.claim.table}", j.claim.subject, j.claim.text, j.claim.source, j.study, j.verdict, j.evidence]
            for j in judgements]
    return Table(["table", "row", "claim", "source", "study", "verdict", "evidence"], rows,
                 f"{len(CLAIMS)} claims; supported / contradicted at p < 0.05 (Welch) where runs vary. Source "
                 f"'{SURVEY}': the survey's claim; otherwise the cited paper's, not the survey's.")
