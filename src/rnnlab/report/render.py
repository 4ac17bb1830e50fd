"""The report as Markdown, CSV files and one self-contained HTML page (figures inlined as base64 PNG)."""

from __future__ import annotations

import base64
import datetime
import html
import json
from pathlib import Path

from rnnlab.report.build import Report, StudyReport, claims_table
from rnnlab.report.tables import Table, arm_table, to_html, to_markdown, write_arms_csv, write_rows_csv

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
.scroll { overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
caption { caption-side: bottom; text-align: left; font-size: .8rem; color: #555; padding-top: .3rem; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; } figcaption { font-size: .8rem; color: #555; }
img { max-width: 100%; }
.warning { background: #fff3cd; border: 1px solid #e0c96b; padding: .5rem .8rem; }
.supported { color: #176117; font-weight: 600; } .contradicted { color: #a11; font-weight: 600; }
.mixed { color: #9a5b00; font-weight: 600; }
.meta { color: #555; font-size: .9rem; }
"""


def counts(records: list[dict]) -> str:
    statuses = [r.get("status") for r in records]
    return ", ".join(f"{statuses.count(s)} {s}" for s in ("completed", "diverged", "failed"))


def study_header(report: StudyReport) -> list[str]:
    table, study = report.table, report.study
    lines = [
        f"Runs: {len(study.records)} ({counts(study.records)}); arms: {len(study.arms)}",
        f"Swept: {', '.join(study.swept) or 'nothing (one arm)'}; seeds are the repeats",
        f"Primary metric: {table.primary or '-'}; baseline arm: {table.baseline_spec or '-'}"
        + (f" ({table.baseline_reason})" if table.baseline_reason else ""),
    ]
    return lines


def conditions_table(report: StudyReport) -> Table:
    rows = [[key, json.dumps(value, default=str)] for key, value in report.study.conditions.items()]
    return Table(["setting", "value"], rows, "Non-swept settings, identical for every run of the study.")


def differences(report: StudyReport) -> list[str]:
    return [d.describe() for d in report.study.differences]


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def render_markdown(report: Report) -> str:
    out = ["# rnnlab report", "", f"Sources: {', '.join(report.sources)}", "",
           f"Runs: {len(report.records)} ({counts(report.records)}); studies: {len(report.studies)}", ""]
    if report.skipped:
        out += [f"**Skipped {len(report.skipped)} unreadable run records**:", ""]
        out += [f"- {line}" for line in report.skipped] + [""]
    for study in report.studies:
        out += [f"## Study: {study.study.name}", ""]
        out += [f"- {line}" for line in study_header(study)] + [""]
        if study.study.differences:
            out += ["**Mixed conditions (--allow-mixed)**: " + "; ".join(differences(study)), ""]
        out += [to_markdown(arm_table(study.table)), ""]
        if study.figures:
            out += ["Figures: " + ", ".join(title for title, _ in study.figures) + " (in report.html)", ""]
    out += ["## Survey claims", "", to_markdown(claims_table(report.judgements)), ""]
    for key, (title, table) in report.survey.items():
        out += [f"## {title}", "", to_markdown(table), ""]
    for title, table in report.published:
        out += [f"## {title}", "", to_markdown(table), ""]
    out += ["## All runs", "", to_markdown(report.runs), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# HTML


def _figure(title: str, image: bytes) -> str:
    data = base64.b64encode(image).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _table(table: Table, css_class: str = "") -> str:
    return f'<div class="scroll">{to_html(table, css_class)}</div>'


def _verdict_cells(markup: str) -> str:
    for verdict in ("supported", "contradicted", "mixed"):
        markup = markup.replace(f"<td>{verdict}</td>", f'<td class="{verdict}">{verdict}</td>')
    return markup


def render_html(report: Report) -> str:
    esc = html.escape
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = ['<a href="#claims">Survey claims</a>', '<a href="#survey">Survey tables</a>', '<a href="#runs">All runs</a>']
    nav = [f'<a href="#study-{i}">Study {esc(s.study.name)}</a>' for i, s in enumerate(report.studies)] + nav
    body = [
        "<h1>rnnlab report</h1>",
        f'<p class="meta">Generated {now} from {esc(", ".join(report.sources))}. '
        f"Runs: {len(report.records)} ({esc(counts(report.records))}); studies: {len(report.studies)}.</p>",
        "<nav>" + " · ".join(nav) + "</nav>",
    ]
    if report.skipped:
        body.append(f'<p class="warning">Skipped {len(report.skipped)} unreadable run records:</p><ul>'
                    + "".join(f"<li>{esc(line)}</li>" for line in report.skipped) + "</ul>")
    for index, study in enumerate(report.studies):
        body.append(f'<section id="study-{index}"><h2>Study: {esc(study.study.name)}</h2>')
        body.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in study_header(study)) + "</ul>")
        if study.study.differences:
            body.append('<p class="warning">Mixed conditions (--allow-mixed): '
                        + esc("; ".join(differences(study))) + "</p>")
        body.append(_table(arm_table(study.table), "arms"))
        body += [_figure(title, image) for title, image in study.figures]
        if study.study.conditions:
            body.append("<details><summary>Identical conditions</summary>"
                        + _table(conditions_table(study)) + "</details>")
        body.append("</section>")
    body.append('<section id="claims"><h2>Survey claims</h2>'
                + _verdict_cells(_table(claims_table(report.judgements), "claims")) + "</section>")
    body.append('<section id="survey"><h2>Survey tables</h2>')
    for key, (title, table) in report.survey.items():
        body.append(f"<h3>{esc(title)}</h3>" + _table(table, f"survey-{key}"))
    body.append("</section>")
    if report.published:
        tables = "".join(f"<h3>{esc(title)}</h3>" + _table(table, "published") for title, table in report.published)
        body.append(f'<section id="published"><h2>Published figures</h2>{tables}</section>')
    body.append(f'<section id="runs"><h2>All runs</h2>{_table(report.runs, "runs")}</section>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>rnnlab report</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Write report.html, report.md, arms.csv, claims.csv, survey.csv and runs.csv into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("report.html", "report.md", "arms.csv", "claims.csv", "survey.csv",
                                           "runs.csv")}
    paths["report.html"].write_text(render_html(report), encoding="utf-8")
    paths["report.md"].write_text(render_markdown(report), encoding="utf-8")
    write_arms_csv(paths["arms.csv"], [s.table for s in report.studies])
    write_rows_csv(paths["claims.csv"], claims_table(report.judgements))
    survey_rows = [[key, row[0], column, cell] for key, (_, table) in report.survey.items() for row in table.rows
                   for column, cell in zip(table.headers[1:], row[1:])]  # long form: the tables differ in columns
    write_rows_csv(paths["survey.csv"], Table(["table", "row", "column", "value"], survey_rows))
    write_rows_csv(paths["runs.csv"], report.runs)
    return paths
