"""The command line of ``rnnlab-bench``'s models mode (``rnnlab-bench`` without ``--heads`` or ``--loop``; the
measurement is :mod:`rnnlab.bench.models`): arguments, one printed line per row, the table and the ``--json`` document.

Each row is printed when it finishes and the table at the end; ``--json`` is rewritten after every row
(``"complete": false`` until the last), so a bench that is stopped keeps what it measured.

The pipeline's functions are called through their module (``models.run_bench``), so that a test patching
:mod:`rnnlab.bench.models` reaches them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rnnlab.bench import models
from rnnlab.bench.common import CLOCKS, bench_settings, environment, format_value, table_caption, write_json
from rnnlab.errors import EXIT_BAD_INPUT, ConfigError
from rnnlab.record import one_line

log = logging.getLogger(__name__)


def row_line(row: models.Row) -> str:
    """A finished row as one line of plain text, printed while the bench runs."""
    parts = [f"{row.label:<30}", f"{row.status:<7}", f"{format_value(row.params, ','):>11} params"]
    if row.batch_ms is not None:
        parts += [f"{row.batch_ms:9.1f} ms/batch", f"x{row.ratio:.2f} nn.LSTM", f"median of {row.repeats}"]
    if row.peak_memory_mb is not None:
        parts.append(f"model peak {row.peak_memory_mb:.1f} MB")
    return "  ".join([*parts, row.reason or ""]).rstrip()


def results_table(
    reference: models.Row,
    rows: list[models.Row],
    sizes: models.Sizes,
    max_ratio: float,
    param_budget: int | None = None,
) -> Table:
    shape = f"batch {sizes.batch} x length {sizes.length}, input {sizes.input}"
    size = f"at {param_budget:,} parameters" if param_budget else f"hidden {sizes.hidden}"
    columns = (
        "model", "hidden", "params", "ms / batch", "ms / time step", "tokens/s", "x nn.LSTM", "n", "model peak MB",
        "note",
    )
    table = Table(*columns, title=f"forward+backward, {shape}, {size}")
    for row in [reference, *rows]:
        ratio = format_value(row.ratio, ".2f")
        if row.ratio is not None and row.ratio > max_ratio:
            ratio = f"[red]{ratio}[/red]"
        note = escape(row.reason or "")
        if row.status == "error":
            note = f"[red]{note}[/red]"
        elif row.status in ("timeout", "skipped"):
            note = f"[yellow]{row.status}[/yellow]: {note}"
        table.add_row(
            escape(row.label),
            format_value(row.hidden_size, "d"),
            format_value(row.params, ","),
            format_value(row.batch_ms, ".1f"),
            format_value(row.step_ms, ".3f"),
            format_value(row.tokens_per_s, ",.0f"),
            ratio,
            format_value(row.repeats, "d"),
            format_value(row.peak_memory_mb, ".1f"),
            note,
        )
    return table


def positive_number(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number of ``kind`` above zero."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = models.Sizes()
    parser = argparse.ArgumentParser(prog="rnnlab-bench", description=models.__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--length", type=int, default=defaults.length, help="time steps T")
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="model.hidden_size")
    parser.add_argument("--input", type=int, default=defaults.input, help="input features I")
    parser.add_argument("--output", type=int, default=defaults.output, help="output features of the readout")
    parser.add_argument(
        "--param-budget",
        type=positive_number(int),
        metavar="N",
        help="build every model (and the reference nn.LSTM) at N trainable parameters instead of --hidden",
    )
    parser.add_argument("--models", default="", help="comma-separated conf/model names (default: all)")
    parser.add_argument(
        "--variants",
        default="implementation=cell",
        help="comma-separated model KEY=VALUE; a model whose config has KEY with another default gets a row with it",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model at most (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument(
        "--time-cap",
        type=positive_number(float),
        default=30.0,
        metavar="SECONDS",
        help="wall time per model row; past it the row is a timeout (repeats stop at half of it)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall time, or CPU time of the process (less sensitive to other processes' load; CPU only, best with "
        "--threads 1 as idle threads may spin)",
    )
    parser.add_argument("--max-ratio", type=float, default=5.0, help="ratios above this are shown in red")
    parser.add_argument("--json", type=Path, help="write the results here (rewritten after every row)")
    parser.add_argument(
        "--heads", action="store_true", help="time output layers over a vocabulary instead (--heads --help)"
    )
    parser.add_argument(
        "--loop", action="store_true", help="time the training loop against a bare PyTorch loop (--loop --help)"
    )
    args = parser.parse_args(argv)
    for key in ("batch", "length", "hidden", "input", "output", "repeats"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key} must be positive")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.threads is not None and args.threads <= 0:
        parser.error("--threads must be positive")
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures CPU time; use it with --device cpu")
    try:
        torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device: {one_line(error)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.param_budget:
        try:
            models.reference_hidden_size(models.Sizes(input=args.input, output=args.output), args.param_budget)
        except ConfigError as error:
            parser.error(f"--param-budget: the reference nn.LSTM cannot be sized to it: {error.message}")
    return args


def main(argv: list[str]) -> int:
    """``rnnlab-bench`` (models): run the bench; exit status 1 when a model failed (its row says why; skips and
    timeouts are not failures), 2 for bad arguments."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="rnnlab-bench: %(message)s")  # progress on stderr
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's C++ log would report the missing GPU on stderr
    try:
        names = models.selected_models(args.models)
    except ValueError as error:
        print(f"rnnlab-bench: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sizes = models.Sizes(args.batch, args.length, args.hidden, args.input, args.output)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    configs = models.model_configs(names, sizes.hidden, variants, param_budget=args.param_budget)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(device)
    settings = bench_settings(args, sizes, env) | {"time_cap": args.time_cap, "param_budget": args.param_budget}
    console = Console(width=200)
    finished: list[models.Row] = []

    def report(row: models.Row) -> None:
        console.print(escape(row_line(row)), soft_wrap=True, highlight=False)
        finished.append(row)
        if args.json:
            write_json(args.json, results_json(settings, finished, complete=len(finished) == len(configs) + 1))

    reference, rows = models.run_bench(
        configs, sizes, args.repeats, args.warmup, device, CLOCKS[args.clock], args.time_cap, args.param_budget,
        on_row=report,
    )
    table = results_table(reference, rows, sizes, args.max_ratio, args.param_budget)
    table.caption = table_caption(
        env, args, "x nn.LSTM: median ratio of paired steps; n: timed steps that ran (fewer for slow rows)"
    )
    console.print(table)
    if args.json:
        log.info("wrote %s", args.json)
    return 1 if any(row.status == "error" for row in rows) else 0


def results_json(settings: dict[str, Any], finished: list[models.Row], complete: bool) -> dict[str, Any]:
    """The ``--json`` document: settings, the reference (the first finished row) and the model rows so far."""
    reference, *rows = finished
    return settings | {
        "complete": complete,
        "reference": asdict(reference),
        "rows": [asdict(row) | {"label": row.label} for row in rows],
    }
