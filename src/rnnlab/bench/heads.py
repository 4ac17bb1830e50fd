"""``rnnlab-bench --heads``: the training step of each output layer against the full softmax.

Each output layer of :mod:`rnnlab.tasks.heads` at one vocabulary size (survey section VI.A). Word frequencies are
Zipf's law (count of the r-th word ~ 1 / r, close to PTB's), targets drawn from it with a fixed seed. Per head, each
timed step is paired with a full-softmax step run right after it; a speed-up is the median over pairs of (full
softmax time / head time):
  head: forward+backward of the head's training loss on batch x length feature vectors of size hidden;
  step: the whole language-model step, nn.Embedding -> nn.LSTM(hidden) -> head loss, forward+backward;
  eval: the exact log-probabilities of the batch (what val/test compute), no gradient.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rnnlab.bench.common import CLOCKS, bench_settings, environment, format_value, table_caption, timed, write_json
from rnnlab.record import one_line
from rnnlab.tasks.heads import HEAD_CLASSES, HEADS, SampledHead

log = logging.getLogger(__name__)


@dataclass
class HeadSizes:
    batch: int = 32
    length: int = 35
    hidden: int = 256
    vocab: int = 10_000
    samples: int = 64  # nce, sampled: noise words per step


@dataclass
class HeadRow:
    """One output layer: times in ms for one batch; speed-ups over the full softmax (1.0 for ``full`` itself)."""

    head: str
    status: str = "ok"  # ok | error
    reason: str | None = None
    params: int | None = None
    head_ms: float | None = None
    head_speedup: float | None = None
    step_ms: float | None = None
    step_speedup: float | None = None
    eval_ms: float | None = None
    eval_speedup: float | None = None


class HeadLanguageModel(torch.nn.Module):
    """nn.Embedding -> nn.LSTM(hidden) -> an output head; forward returns the head's training loss."""

    def __init__(self, head: torch.nn.Module, sizes: HeadSizes):
        super().__init__()
        self.embedding = torch.nn.Embedding(sizes.vocab, sizes.hidden)
        self.rnn = torch.nn.LSTM(sizes.hidden, sizes.hidden, batch_first=True)
        self.head = head

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        features = self.rnn(self.embedding(inputs))[0]
        return self.head.loss(features.reshape(-1, features.shape[-1]), targets.reshape(-1))


def zipf_counts(vocab: int) -> torch.Tensor:
    """Unigram counts following Zipf's law: word r (from 0) occurs round(10^6 / (r + 1)) times."""
    return (1e6 / torch.arange(1, vocab + 1, dtype=torch.float64)).round().long()


def head_steps(name: str, sizes: HeadSizes, device: torch.device) -> tuple[int, dict[str, Callable[[], None]]]:
    """The head's parameter count and its timed closures: ``head``, ``step`` and ``eval`` (see above)."""
    counts = zipf_counts(sizes.vocab)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.multinomial(counts.double(), sizes.batch * (sizes.length + 1), True, generator=generator)
    tokens = tokens.view(sizes.batch, sizes.length + 1).to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    torch.manual_seed(0)
    head_class = HEAD_CLASSES[name]
    options = {"samples": sizes.samples} if issubclass(head_class, SampledHead) else {}
    head = head_class(sizes.hidden, counts, **options).to(device)
    model = HeadLanguageModel(head, sizes).to(device)
    features = torch.randn(sizes.batch * sizes.length, sizes.hidden, device=device, requires_grad=True)
    flat_targets = targets.reshape(-1)

    def backward(loss_of: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            for p in params:
                p.grad = None
            loss_of().backward()

        return step

    def evaluate() -> None:
        with torch.no_grad():
            head.log_probs(features)

    steps = {
        "head": backward(lambda: head.loss(features, flat_targets), [features, *head.parameters()]),
        "step": backward(lambda: model(inputs, targets), list(model.parameters())),
        "eval": evaluate,
    }
    return sum(p.numel() for p in head.parameters()), steps


def run_head_bench(
    sizes: HeadSizes,
    names: list[str],
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> list[HeadRow]:
    """One row per head in ``names`` (``full`` first: the reference every other step is paired with)."""
    device = torch.device(device)
    _, reference = head_steps("full", sizes, device)
    rows = []
    for name in ["full", *(n for n in names if n != "full")]:
        log.info("bench head %s", name)
        row = HeadRow(head=name)
        try:
            row.params, steps = head_steps(name, sizes, device)
            for kind, step in steps.items():
                times, ratios = [], []
                for repeat in range(warmup + repeats):
                    elapsed = timed(step, device, clock)
                    paired = elapsed if name == "full" else timed(reference[kind], device, clock)
                    if repeat >= warmup:
                        times.append(elapsed)
                        ratios.append(paired / elapsed)
                setattr(row, f"{kind}_ms", statistics.median(times) * 1e3)
                setattr(row, f"{kind}_speedup", statistics.median(ratios))
        except Exception as error:  # one head's failure is its row; the bench goes on
            log.debug("head %s failed", name, exc_info=True)
            row.status, row.reason = "error", one_line(error)
        rows.append(row)
    return rows


def heads_table(rows: list[HeadRow], sizes: HeadSizes) -> Table:
    title = (
        f"output layers, training step: batch {sizes.batch} x length {sizes.length}, hidden {sizes.hidden}, "
        f"vocabulary {sizes.vocab:,}, {sizes.samples} noise samples"
    )
    columns = (
        "head", "params", "head ms", "x faster", "LM step ms", "x faster", "eval ms", "x faster", "note"
    )
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(
            row.head,
            format_value(row.params, ","),
            format_value(row.head_ms, ".2f"),
            format_value(row.head_speedup, ".2f"),
            format_value(row.step_ms, ".2f"),
            format_value(row.step_speedup, ".2f"),
            format_value(row.eval_ms, ".2f"),
            format_value(row.eval_speedup, ".2f"),
            f"[red]{escape(row.reason)}[/red]" if row.reason else "",
        )
    return table


def parse_args(argv: list[str]) -> argparse.Namespace:
    defaults = HeadSizes()
    parser = argparse.ArgumentParser(
        prog="rnnlab-bench --heads", description="Training-step time of output layers against the full softmax."
    )
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--length", type=int, default=defaults.length, help="time steps T")
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="features read by the head, LSTM size")
    parser.add_argument("--vocab", type=int, default=defaults.vocab, help="vocabulary size V (>= 2)")
    parser.add_argument("--samples", type=int, default=defaults.samples, help="nce, sampled: noise words per step")
    parser.add_argument("--names", default=",".join(HEADS), help="comma-separated heads (full is always timed)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per head (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help="wall time or process CPU time")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    for key in ("batch", "length", "hidden", "samples", "repeats"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key} must be positive")
    if args.vocab < 2:
        parser.error("--vocab must be at least 2")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.threads is not None and args.threads <= 0:
        parser.error("--threads must be positive")
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures CPU time; use it with --device cpu")
    args.names = [name.strip() for name in args.names.split(",") if name.strip()]
    unknown = [name for name in args.names if name not in HEADS]
    if unknown:
        parser.error(f"unknown head {', '.join(unknown)}; allowed: {', '.join(HEADS)}")
    return args


def main(argv: list[str]) -> int:
    """``rnnlab-bench --heads``: exit status 1 when a head failed (its row says why), 2 for bad arguments."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="rnnlab-bench: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = HeadSizes(args.batch, args.length, args.hidden, args.vocab, args.samples)
    device = torch.device(args.device)
    rows = run_head_bench(sizes, args.names, args.repeats, args.warmup, device, CLOCKS[args.clock])
    table = heads_table(rows, sizes)
    env = environment(device)
    table.caption = table_caption(env, args, "x faster: median over paired steps of full softmax time / head time")
    Console(width=200).print(table)
    if args.json:
        write_json(args.json, bench_settings(args, sizes, env) | {"rows": [asdict(row) for row in rows]})
        log.info("wrote %s", args.json)
    return 1 if any(row.status == "error" for row in rows) else 0
