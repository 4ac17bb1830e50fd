"""``rnnlab-report DIR [DIR ...]``: one table row per run record found under the given directories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rnnlab.record import read_records

HEADLINE_METRICS = ("test/loss", "test/mse", "test/acc", "test/bpc", "test/ppl", "test/ler", "test/nll", "val/loss")


def records_table(records: list[dict]) -> Table:
    metrics = [m for m in HEADLINE_METRICS if any(m in r.get("metrics", {}) for r in records)]
    table = Table("run", "status", "model", "data", "optimizer", "seed", "params", "steps", *metrics, "step ms", "error")
    for record in records:
        values = [record.get("metrics", {}).get(m) for m in metrics]
        table.add_row(
            record["run_dir"],
            record.get("status", "?"),
            str(record.get("model")),
            str(record.get("data")),
            str(record.get("optimizer")),
            str(record.get("seed")),
            f"{record['params']:,}" if record.get("params") else "-",
            str(record.get("steps", "-")),
            *("-" if v is None else f"{v:.4g}" for v in values),
            str((record.get("timing") or {}).get("step_ms") or "-"),
            record.get("error") or "",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnnlab-report", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories to search for summary.json")
    args = parser.parse_args(argv)
    records = []
    for directory in args.dirs:
        if not directory.is_dir():
            print(f"rnnlab-report: error: {directory} is not a directory", file=sys.stderr)
            return 2
        records += read_records(directory)
    if not records:
        print(f"rnnlab-report: no summary.json under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    Console(width=200).print(records_table(records))
    counts = {s: sum(r.get("status") == s for r in records) for s in ("completed", "diverged", "failed")}
    print(", ".join(f"{n} {status}" for status, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
