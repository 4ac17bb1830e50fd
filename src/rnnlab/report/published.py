"""Published figures beside measured ones: the literature's number, its setting, and ours under our setting.

``published.yaml`` (next to this module) lists figures from the papers behind the survey's tables: sequential and
permuted MNIST accuracy, Penn Treebank perplexity and bits per character, JSB Chorales NLL, adding-problem lengths
and Table II's complexity exponents. A figure stands for the arms of a study whose records name one of its models
(or learning rules) and its data config, and whose resolved config has its ``match`` values. Each matching arm gets
one row: the figure, its citation and setting, our mean ± std over the arm's completed seeds, and every setting in
which our runs differ from the published ones (``model.hidden_size 100 vs 32``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from rnnlab.report.collect import Arm, Study, config_value, metric, number, training_rule
from rnnlab.report.stats import summarize
from rnnlab.report.tables import Table

FILE = "published.yaml"
REQUIRED = ("id", "figure", "unit", "metric", "citation", "checked")
CITATION_FIELDS = ("authors", "year", "venue")
RULES = ("bptt", "tbptt", "rtrl", "bu", "ffp", "gf")  # training group files (conf/training; ffp has none)
TIME_EXPONENT = "time_exponent"  # a study-level quantity: the fitted exponent of cost per data point against N
HEADERS = ["published figure", "citation", "their setting", "our arm", "our measured value", "differences of setting"]


class PublishedError(ValueError):
    """An entry of published.yaml is malformed or names a config that does not exist."""


@dataclass(frozen=True)
class Figure:
    """One published number, the runs it stands for and the setting it was obtained in."""

    id: str
    figure: float
    unit: str
    metric: str
    citation: dict[str, Any]
    checked: str
    models: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    data: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    setting: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    scale: float = 1.0

    @property
    def cite(self) -> str:
        c = self.citation
        title = f", \"{c['title']}\"" if c.get("title") else ""
        return f"{c['authors']} ({c['year']}){title}, {c['venue']}"

    @property
    def shown(self) -> str:
        if self.metric == TIME_EXPONENT:
            return f"O(N^{self.figure:g}) ({self.unit})"
        return f"{self.figure:g} {self.unit}"

    def describe_setting(self) -> str:
        keys = "; ".join(f"{key} {_value(value)}" for key, value in self.setting.items())
        return "; ".join(part for part in (self.notes, keys) if part) or "-"

    def stands_for(self, record: dict) -> bool:
        """Whether a run is of this figure's models/rules, data config and matched settings."""
        if self.models and record.get("model") not in self.models:
            return False
        if self.rules and training_rule(record) not in self.rules:
            return False
        if self.data is not None and record.get("data") != self.data:
            return False
        return all(config_value(record, key) == value for key, value in self.match.items())


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse(entry: dict, models: set[str] | None = None, data: set[str] | None = None) -> Figure:
    """One entry of published.yaml as a Figure; PublishedError names what is missing or unknown.

    ``models`` / ``data``: the config names that exist (conf/model, conf/data); None skips that check.
    """
    name = entry.get("id", "<no id>") if isinstance(entry, dict) else "<not a mapping>"
    if not isinstance(entry, dict):
        raise PublishedError(f"{name}: an entry is a mapping, got {entry!r}")
    missing = [key for key in REQUIRED if entry.get(key) in (None, "")]
    if missing:
        raise PublishedError(f"{name}: missing {', '.join(missing)}")
    citation = entry["citation"]
    if not isinstance(citation, dict) or any(not citation.get(key) for key in CITATION_FIELDS):
        raise PublishedError(f"{name}: citation needs {', '.join(CITATION_FIELDS)}")
    if not isinstance(entry["figure"], (int, float)) or isinstance(entry["figure"], bool):
        raise PublishedError(f"{name}: figure must be a number, got {entry['figure']!r}")
    figure = Figure(
        id=str(entry["id"]), figure=float(entry["figure"]), unit=str(entry["unit"]), metric=str(entry["metric"]),
        citation=dict(citation), checked=str(entry["checked"]), models=tuple(entry.get("models") or ()),
        rules=tuple(entry.get("rules") or ()), data=entry.get("data"), match=dict(entry.get("match") or {}),
        setting=dict(entry.get("setting") or {}), notes=str(entry.get("notes") or ""),
        scale=float(entry.get("scale", 1.0)),
    )
    if not (figure.models or figure.rules):
        raise PublishedError(f"{name}: names no models and no rules, so it matches no run")
    if figure.metric == TIME_EXPONENT and not figure.rules:
        raise PublishedError(f"{name}: a {TIME_EXPONENT} figure names the learning rules it is about")
    if figure.metric != TIME_EXPONENT and figure.data is None:
        raise PublishedError(f"{name}: a metric figure names its data config")
    if figure.metric != TIME_EXPONENT and "/" not in figure.metric:
        raise PublishedError(f"{name}: metric {figure.metric!r} is not a record metric (stage/name) or "
                             f"{TIME_EXPONENT}")
    unknown_rules = [rule for rule in figure.rules if rule not in RULES]
    if unknown_rules:
        raise PublishedError(f"{name}: unknown learning rule {', '.join(unknown_rules)}; known: {', '.join(RULES)}")
    if models is not None and (unknown := [m for m in figure.models if m not in models]):
        raise PublishedError(f"{name}: no conf/model/{unknown[0]}.yaml")
    if data is not None and figure.data is not None and figure.data not in data:
        raise PublishedError(f"{name}: no conf/data/{figure.data}.yaml")
    return figure


def load(text: str | None = None, *, check_configs: bool = True) -> list[Figure]:
    """Every figure of published.yaml (or of ``text``), validated; ids are unique."""
    if text is None:
        text = resources.files("rnnlab.report").joinpath(FILE).read_text(encoding="utf-8")
    document = yaml.safe_load(text) or {}
    entries = document.get("figures") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise PublishedError(f"{FILE}: a top-level 'figures' list is required")
    models = data = None
    if check_configs:
        from rnnlab.conf_dir import group_options

        models, data = set(group_options("model")), set(group_options("data"))
    figures = [parse(entry, models, data) for entry in entries]
    seen: set[str] = set()
    for figure in figures:
        if figure.id in seen:
            raise PublishedError(f"{figure.id}: duplicate id")
        seen.add(figure.id)
    return figures


@lru_cache(maxsize=1)
def figures() -> tuple[Figure, ...]:
    return tuple(load())


# ---------------------------------------------------------------------------------------------------------------
# Figures beside a study's arms


def setting_value(record: dict, key: str) -> Any:
    """What a run had for a setting key: ``params`` is the record's parameter count, others dotted config keys."""
    if key == "params":
        return number(record, "params")
    return config_value(record, key)


def _shown(value: Any) -> str:
    """A setting as text, numbers in one form (100 == 100.0) and large counts with separators."""
    if value is None:
        return "unset"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.0f}" if abs(value) >= 10000 and float(value).is_integer() else f"{value:g}"
    return _value(value)


def differences(figure: Figure, arm: Arm) -> list[str]:
    """``key published vs ours`` for every setting key whose value in the arm's runs differs from the figure's."""
    out = []
    for key, published in figure.setting.items():
        ours = list(dict.fromkeys(_shown(setting_value(run, key)) for run in arm.runs))
        if ours != [_shown(published)]:
            out.append(f"{key} {_shown(published)} vs {'/'.join(ours)}")
    return out


def measured(figure: Figure, arm: Arm) -> str:
    values = [v * figure.scale for v in arm.values(lambda r: metric(r, figure.metric))]
    summary = summarize(values)
    if summary.n == 0:
        return "not measured"
    return f"{summary.format()} (n={summary.n}; {figure.metric}{f' x {figure.scale:g}' if figure.scale != 1 else ''})"


def _arm_label(arm: Arm, study: Study) -> str:
    first = arm.runs[0]
    label = arm.label if study.swept else "(all runs)"
    names = " ".join(f"{key}={first[key]}" for key in ("model", "data") if first.get(key)
                     and f"{key}={first[key]}" not in label)
    return " ".join(part for part in (label, names) if part and part != "(all runs)") or label


def figure_rows(study: Study, catalogue: tuple[Figure, ...] | list[Figure] | None = None) -> list[list[str]]:
    """One row per (published figure, matching arm) of the study; time-exponent figures get one per fitted series."""
    catalogue = figures() if catalogue is None else catalogue
    rows = []
    for figure in catalogue:
        if figure.metric == TIME_EXPONENT:
            rows += _exponent_rows(figure, study)
            continue
        for arm in study.arms:
            if arm.runs and figure.stands_for(arm.runs[0]):
                rows.append([figure.shown, figure.cite, figure.describe_setting(), _arm_label(arm, study),
                             measured(figure, arm), "; ".join(differences(figure, arm)) or "none found"])
    return rows


def _exponent_rows(figure: Figure, study: Study) -> list[list[str]]:
    from rnnlab.report.quantities import cost_series  # quantities reads the survey; imported only when needed

    rows = []
    for series in cost_series(study):
        if series.fit is None or not series.runs or not all(figure.stands_for(run) for run in series.runs):
            continue
        sizes, measure = series.fit.sizes, series.measure
        rows.append([figure.shown, figure.cite, figure.describe_setting(),
                     f"{series.label} ({measure} per data point)",
                     f"fitted {series.fit.describe()}",
                     f"N from {min(sizes):g} to {max(sizes):g} ({len(sizes)} sizes); asymptotic vs measured exponent"])
    return rows


def published_table(study: Study, catalogue: tuple[Figure, ...] | list[Figure] | None = None) -> Table | None:
    """The study's "Published figures" table, or None when no figure matches any of its arms."""
    rows = figure_rows(study, catalogue)
    if not rows:
        return None
    caption = ("Published figures beside this study's runs: ours is the mean ± std over completed seeds of the arm; "
               "a difference of setting names the published value first. Figures from published.yaml "
               "(rnnlab.report.published), each checked as its entry says.")
    return Table(list(HEADERS), rows, caption)


def published_tables(studies: list[Study]) -> list[tuple[str, Table]]:
    """(title, table) for each study with a matching published figure."""
    found = []
    for study in studies:
        table = published_table(study)
        if table is not None:
            found.append((f"Published figures: {study.name}", table))
    return found
