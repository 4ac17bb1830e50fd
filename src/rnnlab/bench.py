"""``rnnlab-bench``: forward+backward speed, parameters and peak memory of every model, against fused ``nn.LSTM``.

Every ``conf/model/*.yaml`` is a row (the Hydra config group is the registry, GUIDE.md section 1), built exactly as
``rnnlab-train`` builds it: the model config composed from the primary config with ``model=<name>`` and
``model.hidden_size=H``, then :func:`rnnlab.train.build_model`. A model whose config has a key named in
``--variants`` (default ``implementation=cell``) with a different default gets a second row with that override, so
the hand-written cells are measured beside the fused kernels.

One timed step is forward and backward of ``out.mean()`` on a random [batch, length, input] batch, gradients
cleared in between. The reference is ``torch.nn.LSTM(input, hidden, batch_first=True)`` plus a linear readout to
the same output size (what the ``lstm`` config builds), timed in the same process: each model step is paired with
a reference step run right after it, and ``ratio`` is the median of the per-pair ratios, so load from other
processes affects both sides alike. Times are medians over ``--repeats`` after ``--warmup`` untimed steps.

Peak memory is the largest amount of memory torch held during one forward+backward above what it held before
(parameters and input are not counted; activations, gradients and workspaces are). CUDA: from
``torch.cuda.max_memory_allocated``. CPU: from the allocation and free events torch's CPU allocator reports to
``torch.profiler`` (``profile_memory=True``), summed in time order; memory that bypasses torch's allocator (the
Python heap, a library's private buffers) is not seen.

A model class that cannot read a [batch, time, features] tensor declares it with a class attribute
``input_layout`` naming what it reads (e.g. ``"[batch, time, channels, height, width]"``) and a classmethod
``example_inputs(batch_size, input_size)``; its row times that batch (image and video frames enlarged to 28 x 28,
one channel), its note names the shapes, and its ratio still divides by the same ``nn.LSTM`` step. A model that
fails to build or run is a row with its error; the others still run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rnnlab.config_check import CONF_DIR, PRIMARY_CONFIG, group_options
from rnnlab.record import one_line
from rnnlab.train import build_model

log = logging.getLogger(__name__)

SEQUENCE_LAYOUT = "[batch, time, features]"
REFERENCE_NAME = "torch.nn.LSTM (reference)"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Sizes:
    batch: int = 64
    length: int = 100
    hidden: int = 128
    input: int = 32
    output: int = 10


@dataclass
class Row:
    """One benchmarked model. ``batch_ms``: one forward+backward of the batch; ``step_ms``: that per time step
    (batch_ms / T); ``ratio``: this model's batch time over the reference's."""

    model: str
    overrides: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | skipped | error
    reason: str | None = None
    target: str | None = None
    hidden_size: int | None = None
    params: int | None = None
    batch_ms: float | None = None
    step_ms: float | None = None
    tokens_per_s: float | None = None
    reference_batch_ms: float | None = None
    ratio: float | None = None
    peak_memory_mb: float | None = None

    @property
    def label(self) -> str:
        return self.model + (f"[{','.join(self.overrides)}]" if self.overrides else "")


def selected_models(models: str) -> list[str]:
    """The names in the comma-separated ``models``, or every ``conf/model/*.yaml`` when it is empty."""
    available = group_options("model")
    names = [name.strip() for name in models.split(",") if name.strip()] or available
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(f"unknown model {', '.join(unknown)}; allowed: {', '.join(available)}")
    return names


def model_configs(names: list[str], hidden: int, variants: list[str]) -> dict[str, tuple[str, list[str], Any]]:
    """``label -> (name, overrides, model config or the exception composing it)`` for each name and variant.

    Each model is composed once, as ``rnnlab-train model=<name>`` would compose it; ``hidden_size=H`` (where the
    model has that key) and the variant's override are then set on the composed node, with values parsed by
    Hydra's override grammar, as ``model.hidden_size=H`` on the command line would set them.
    """
    parser = OverridesParser.create()
    configs: dict[str, tuple[str, list[str], Any]] = {}
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in names:
            try:
                defaults = compose(PRIMARY_CONFIG, overrides=[f"model={name}"]).model
            except Exception as error:  # a broken config is that model's row, not the bench's end
                configs[name] = (name, [], error)
                continue
            base = [f"hidden_size={hidden}"] if "hidden_size" in defaults else []
            runs = [[]]
            for variant in variants:
                key, _, value = variant.partition("=")
                if key in defaults and str(defaults[key]) != value:
                    runs.append([variant])
            for extra in runs:
                label = name + (f"[{','.join(extra)}]" if extra else "")
                cfg = defaults.copy()
                try:
                    for override in parser.parse_overrides([*base, *extra]):
                        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
                    configs[label] = (name, extra, cfg)
                except Exception as error:
                    configs[label] = (name, extra, error)
    return configs


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: torch.nn.Module, inputs: dict[str, Any]) -> Callable[[], None]:
    """One forward+backward of ``out.mean()`` on ``model(**inputs)``; gradients are cleared first so every step
    allocates the same."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        for p in params:
            p.grad = None
        out = model(**inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.float().mean().backward()

    return step


def timed(step: Callable[[], None], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    synchronize(device)
    start = clock()
    step()
    synchronize(device)
    return clock() - start


def peak_memory_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak memory torch allocated during ``step`` above what it held before (see the module docstring)."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


class Reference(torch.nn.Module):
    """Fused ``nn.LSTM`` and a linear readout: what the ``lstm`` config builds with the fused kernel."""

    def __init__(self, sizes: Sizes):
        super().__init__()
        self.rnn = torch.nn.LSTM(sizes.input, sizes.hidden, batch_first=True)
        self.readout = torch.nn.Linear(sizes.hidden, sizes.output)

    def forward(self, x):
        return self.readout(self.rnn(x)[0])


def measure(
    row: Row,
    model: torch.nn.Module,
    reference: Callable[[], None] | None,
    inputs: dict[str, Any],
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Fill ``row`` with times (each paired with a ``reference`` step; None: this is the reference), parameters and
    peak memory; ``inputs`` are the forward() keyword arguments."""
    step = train_step(model, inputs)
    x = inputs["x"]
    device = x.device
    row.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    times, reference_times = [], []
    for repeat in range(warmup + repeats):
        elapsed = timed(step, device, clock)
        reference_elapsed = timed(reference, device, clock) if reference is not None else elapsed
        if repeat >= warmup:
            times.append(elapsed)
            reference_times.append(reference_elapsed)
    batch_s = statistics.median(times)
    row.batch_ms = batch_s * 1e3
    row.step_ms = row.batch_ms / x.shape[1]
    row.tokens_per_s = x.shape[0] * x.shape[1] / batch_s
    row.reference_batch_ms = statistics.median(reference_times) * 1e3
    row.ratio = statistics.median(t / r for t, r in zip(times, reference_times))
    model.zero_grad(set_to_none=True)  # freed before the measurement, not inside it
    row.peak_memory_mb = peak_memory_bytes(step, device) / 2**20


def layout_inputs(model_class: type, sizes: Sizes, device: torch.device) -> tuple[int, dict[str, Any]]:
    """(input_size, forward kwargs) for a model that reads another layout: its ``example_inputs`` at the bench's
    batch size; image / video frames ([B, T, C, H, W]) are one channel, enlarged to 28 x 28 at full length."""
    example = model_class.example_inputs(sizes.batch, 1)
    if example["x"].dim() == 5:
        batch, steps = example["x"].shape[:2]
        example = {**example, "x": torch.randn(batch, steps, 1, 28, 28), "lengths": torch.full((batch,), steps)}
        input_size = 1
    else:
        example = model_class.example_inputs(sizes.batch, sizes.input)
        input_size = sizes.input
    return input_size, {key: value.to(device) for key, value in example.items()}


def describe_inputs(inputs: dict[str, Any]) -> str:
    return ", ".join(f"{key} {list(value.shape)}" for key, value in inputs.items())


def bench_one(label, name, overrides, cfg, sizes, reference, x, repeats, warmup, clock) -> Row:
    row = Row(model=name, overrides=overrides)
    if isinstance(cfg, Exception):
        row.status, row.reason = "error", one_line(cfg)
        return row
    try:
        row.target = cfg.get("_target_")
        model_class = get_class(row.target)
        input_size, inputs = sizes.input, {"x": x}
        if getattr(model_class, "input_layout", SEQUENCE_LAYOUT) != SEQUENCE_LAYOUT:
            input_size, inputs = layout_inputs(model_class, sizes, x.device)
            row.reason = f"reads {model_class.input_layout}: {describe_inputs(inputs)}"
        torch.manual_seed(0)
        model = build_model(cfg, input_size, sizes.output).to(x.device)
        row.hidden_size = getattr(model, "hidden_size", None)
        model.train()
        measure(row, model, reference, inputs, repeats, warmup, clock)
    except Exception as error:  # one model's failure is its row; the bench goes on
        log.debug("%s failed", label, exc_info=True)
        row.status, row.reason = "error", one_line(error)
    return row


def run_bench(
    configs: dict[str, tuple[str, list[str], Any]],
    sizes: Sizes,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Row, list[Row]]:
    """Benchmark each of ``configs`` (from :func:`model_configs`); returns the reference row and the model rows.

    ``clock``: ``time.perf_counter`` (wall time) or ``time.process_time`` (CPU time of all the process's threads).
    """
    device = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(sizes.batch, sizes.length, sizes.input, device=device)
    reference_model = Reference(sizes).to(device)
    reference = train_step(reference_model, {"x": x})
    reference_row = Row(model=REFERENCE_NAME, target="torch.nn.LSTM", hidden_size=sizes.hidden)
    measure(reference_row, reference_model, None, {"x": x}, repeats, warmup, clock)
    rows = []
    for label, (name, overrides, cfg) in configs.items():
        log.info("bench %s", label)
        rows.append(bench_one(label, name, overrides, cfg, sizes, reference, x, repeats, warmup, clock))
    return reference_row, rows


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(reference: Row, rows: list[Row], sizes: Sizes, max_ratio: float) -> Table:
    title = f"forward+backward, batch {sizes.batch} x length {sizes.length}, input {sizes.input}, hidden {sizes.hidden}"
    columns = ("model", "params", "ms / batch", "ms / time step", "tokens/s", "x nn.LSTM", "peak MB", "note")
    table = Table(*columns, title=title)
    for row in [reference, *rows]:
        ratio = _fmt(row.ratio, ".2f")
        if row.ratio is not None and row.ratio > max_ratio:
            ratio = f"[red]{ratio}[/red]"
        note = escape(row.reason or "")
        if row.status == "error":
            note = f"[red]{note}[/red]"
        table.add_row(
            escape(row.label),
            _fmt(row.params, ","),
            _fmt(row.batch_ms, ".1f"),
            _fmt(row.step_ms, ".3f"),
            _fmt(row.tokens_per_s, ",.0f"),
            ratio,
            _fmt(row.peak_memory_mb, ".1f"),
            note,
        )
    return table


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "host": platform.node(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Sizes()
    parser = argparse.ArgumentParser(prog="rnnlab-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--length", type=int, default=defaults.length, help="time steps T")
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="model.hidden_size")
    parser.add_argument("--input", type=int, default=defaults.input, help="input features I")
    parser.add_argument("--output", type=int, default=defaults.output, help="output features of the readout")
    parser.add_argument("--models", default="", help="comma-separated conf/model names (default: all)")
    parser.add_argument(
        "--variants",
        default="implementation=cell",
        help="comma-separated model KEY=VALUE; a model whose config has KEY with another default gets a row with it",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
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
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--heads", action="store_true", help="time output layers over a vocabulary instead (--heads --help)"
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
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; exit status 1 when a model failed (its row says why), 2 for bad arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--heads" in argv:  # the output-layer bench (section "Output heads" below)
        return heads_main([arg for arg in argv if arg != "--heads"])
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="rnnlab-bench: %(message)s")  # progress on stderr
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's C++ log would report the missing GPU on stderr
    try:
        names = selected_models(args.models)
    except ValueError as error:
        print(f"rnnlab-bench: error: {error}", file=sys.stderr)
        return 2
    sizes = Sizes(args.batch, args.length, args.hidden, args.input, args.output)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    configs = model_configs(names, sizes.hidden, variants)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    reference, rows = run_bench(configs, sizes, args.repeats, args.warmup, device, CLOCKS[args.clock])
    table = results_table(reference, rows, sizes, args.max_ratio)
    return report_rows(
        args, table, device, sizes, rows, "x nn.LSTM: median ratio of paired steps",
        reference=asdict(reference), rows=[asdict(row) | {"label": row.label} for row in rows],
    )


def report_rows(args, table: Table, device: torch.device, sizes, measured: list, note: str, **json_rows) -> int:
    """Print ``table`` with the machine in its caption, write ``--json`` (settings, env and ``json_rows``), and
    return the exit status: 1 when a row failed."""
    env = environment(device)
    table.caption = f"{env['device']}, {env['threads']} threads, {args.clock} clock, median of {args.repeats}; {note}"
    Console(width=200).print(table)
    if args.json:
        result = {
            "sizes": asdict(sizes), "repeats": args.repeats, "warmup": args.warmup, "clock": args.clock, "env": env,
            **json_rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        log.info("wrote %s", args.json)
    return 1 if any(row.status == "error" for row in measured) else 0


# ---------------------------------------------------------------------------------------------------- Output heads
# ``rnnlab-bench --heads``: the training step of each output layer of rnnlab.tasks.heads against the full softmax at
# one vocabulary size (survey section VI.A). Word frequencies are Zipf's law (count of the r-th word ~ 1 / r, close
# to PTB's), targets drawn from it with a fixed seed. Per head, each timed step is paired with a full-softmax step run
# right after it; a speed-up is the median over pairs of (full softmax time / head time):
#   head: forward+backward of the head's training loss on batch x length feature vectors of size hidden;
#   step: the whole language-model step, nn.Embedding -> nn.LSTM(hidden) -> head loss, forward+backward;
#   eval: the exact log-probabilities of the batch (what val/test compute), no gradient.


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
    from rnnlab.tasks.heads import make_head  # the bench of models does not need it

    counts = zipf_counts(sizes.vocab)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.multinomial(counts.double(), sizes.batch * (sizes.length + 1), True, generator=generator)
    tokens = tokens.view(sizes.batch, sizes.length + 1).to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    torch.manual_seed(0)
    head = make_head(name, sizes.hidden, counts, samples=sizes.samples).to(device)
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
            _fmt(row.params, ","),
            _fmt(row.head_ms, ".2f"),
            _fmt(row.head_speedup, ".2f"),
            _fmt(row.step_ms, ".2f"),
            _fmt(row.step_speedup, ".2f"),
            _fmt(row.eval_ms, ".2f"),
            _fmt(row.eval_speedup, ".2f"),
            f"[red]{escape(row.reason)}[/red]" if row.reason else "",
        )
    return table


def parse_heads_args(argv: list[str]) -> argparse.Namespace:
    from rnnlab.tasks.heads import HEADS

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


def heads_main(argv: list[str]) -> int:
    """``rnnlab-bench --heads``: exit status 1 when a head failed (its row says why), 2 for bad arguments."""
    args = parse_heads_args(argv)
    logging.basicConfig(level=logging.INFO, format="rnnlab-bench: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = HeadSizes(args.batch, args.length, args.hidden, args.vocab, args.samples)
    device = torch.device(args.device)
    rows = run_head_bench(sizes, args.names, args.repeats, args.warmup, device, CLOCKS[args.clock])
    table = heads_table(rows, sizes)
    return report_rows(
        args, table, device, sizes, rows, "x faster: median over paired steps of full softmax time / head time",
        rows=[asdict(row) for row in rows],
    )


if __name__ == "__main__":
    sys.exit(main())
