"""``rnnlab-report DIR... [--out OUTDIR]``: compare the runs of sweeps under identical conditions.

One table per study (runs sharing an experiment ``name``), one row per arm (the swept settings, less the seed) with
mean ± std over seeds, costs, every metric, and Welch's t-test against a baseline arm; the survey's Tables II-IV with
measured columns and verdicts on its claims. Without --out the tables go to the console; with it, report.html (one
self-contained page), report.md and CSV files are written there. Exit 2 on bad input, including runs whose non-swept
settings differ (unless --allow-mixed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from rnnlab.errors import EXIT_BAD_INPUT
from rnnlab.record import RecordError
from rnnlab.report.build import Report, build_report
from rnnlab.report.collect import MixedConditionsError, load_records, wandb_records
from rnnlab.report.render import counts, write_report
from rnnlab.report.tables import Table, arm_table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rnnlab-report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", type=Path, help="sweep (multirun) or run directories holding summary.json")
    p.add_argument("--out", type=Path, help="write report.html, report.md and CSV files into this directory")
    p.add_argument("--baseline", help="arm the others are tested against: 'model=lstm' or 'lstm' (all else equal)")
    p.add_argument("--study", help="report only this study (experiment name)")
    p.add_argument("--allow-mixed", action="store_true", help="put runs whose non-swept settings differ in one table")
    p.add_argument("--metric", help="primary metric (default: the records' own test metric, e.g. test/bpc)")
    p.add_argument("--solved-fraction", type=float, default=0.1,
                   help="a length counts as solved when test/loss < this fraction of the task's baseline (0.1)")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="a complexity claim holds when the fitted exponent is within this of the claimed one (0.5)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read runs from this W&B project (needs a login)")
    p.add_argument("--group", help="the W&B group (the sweep's name) to read with --wandb")
    return p


def fail(message: str) -> int:
    sys.stderr.write(f"rnnlab-report: error: {message}\n")
    return EXIT_BAD_INPUT


def rich_table(table: Table, title: str) -> RichTable:
    out = RichTable(*table.headers, title=title, caption=table.caption)
    for row in table.rows:
        out.add_row(*row)
    return out


def show(report: Report, console: Console) -> None:
    for study in report.studies:
        console.print(rich_table(arm_table(study.table), f"study {study.study.name}"))
    problems = [r for r in report.records if r.get("status") != "completed"]
    for record in problems:
        console.print(f"{record.get('status')}: {record['run_dir']}: {record.get('error') or ''}", markup=False,
                      highlight=False)
    for line in report.skipped:
        console.print(f"skipped: {line}", markup=False, highlight=False)
    verdicts = [j for j in report.judgements if j.verdict != "not measured"]
    for judgement in verdicts:
        console.print(f"[{judgement.verdict}] {judgement.claim.text} ({judgement.study})", markup=False,
                      highlight=False)
    skipped = f", {len(report.skipped)} skipped (unreadable records)" if report.skipped else ""
    console.print(counts(report.records) + skipped, markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="rnnlab-report: %(message)s")
    if not args.dirs and not args.wandb:
        return fail("give run or sweep directories, or --wandb ENTITY/PROJECT")
    for directory in args.dirs:
        if not directory.is_dir():
            return fail(f"{directory} is not a directory")
    skipped: list[RecordError] = []
    records = load_records(args.dirs, skipped)
    sources = [str(d) for d in args.dirs]
    if args.wandb:
        records += wandb_records(args.wandb, args.group)
        sources.append(f"wandb:{args.wandb}" + (f" group {args.group}" if args.group else ""))
    if not records:
        also = f" ({len(skipped)} unreadable ones skipped)" if skipped else ""
        sys.stderr.write(f"rnnlab-report: no run records (summary.json) in {', '.join(sources)}{also}\n")
        return 1
    try:
        report = build_report(records, sources, baseline=args.baseline, study=args.study,
                              allow_mixed=args.allow_mixed, metric=args.metric, solved_fraction=args.solved_fraction,
                              tolerance=args.tolerance, figures=args.out is not None)
    except (MixedConditionsError, ValueError) as error:
        return fail(str(error))
    report.skipped = [str(error) for error in skipped]
    console = Console(width=220)
    show(report, console)
    if args.out is not None:
        paths = write_report(report, args.out)
        console.print(f"report: {paths['report.html']}", markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
