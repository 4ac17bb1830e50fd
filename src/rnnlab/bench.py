"""``rnnlab-bench``: forward+backward speed, parameters and model peak memory of every model, against ``nn.LSTM``.

Every ``conf/model/*.yaml`` is a row (the Hydra config group is the registry, CONTRIBUTING.md, 'Conventions'), built
exactly as ``rnnlab-train`` builds it: the model config composed from the primary config with ``model=<name>`` and
``model.hidden_size=H``, then :func:`rnnlab.train.build_model`. With ``--param-budget N`` the composed config gets
``model.param_budget=N`` instead, so ``build_model`` picks each model's hidden size for N trainable parameters (within
5%); a model without a ``hidden_size`` key, or whose budget cannot be met, is a ``skipped`` row saying so. A model
whose config has a key named in ``--variants`` (default ``implementation=cell``) with a different default gets a
second row with that override, so the hand-written cells are measured beside the fused kernels.

One timed step is forward and backward of ``out.mean()`` on a random [batch, length, input] batch, gradients
cleared in between. The reference is ``torch.nn.LSTM(input, hidden, batch_first=True)`` plus a linear readout to
the same output size (what the ``lstm`` config builds; with ``--param-budget`` its hidden size gives N parameters),
timed in the same process on the same device: each model step is paired with a reference step run right after it,
and ``ratio`` is the median of the per-pair ratios, so load from other processes affects both sides alike. After
``--warmup`` untimed steps come up to ``--repeats`` timed ones; times are the median of those that ran (``repeats``
in a row: how many).

Time cap: each row (build, steps with their paired reference steps, the memory step) has ``--time-cap`` seconds of
wall time. It stops repeating once it has used half of them (after one timed step at least), and ends as a
``timeout`` row, keeping what it measured, when the cap passes: SIGALRM interrupts Python code (a build, a model's
time loop), and a step that the previous one says would end past the cap is not started. One call into torch that
does not return to Python (a backward) finishes first. Timeouts are rows, not failures. The reference row stops
repeating at the same share of the cap but is never cut off (every ratio needs it).

Model peak memory: the most memory torch's allocator held during one forward+backward of the model alone (a step of
its own after the timed ones, no reference step in it), above what it held before the step: parameters and the
input are not counted; activations, gradients and workspaces are. CUDA: ``torch.cuda.max_memory_allocated``. CPU:
the allocation and free events torch's CPU allocator reports to ``torch.profiler`` (``rnnlab.measure``). It is the
allocator's figure, not the process's resident set: memory that bypasses torch's allocator (the Python heap, a
library's private buffers, the profiler's own records) is not seen.

A model class that cannot read a [batch, time, features] tensor declares it with a class attribute
``input_layout`` naming what it reads (e.g. ``"[batch, time, channels, height, width]"``) and a classmethod
``example_inputs(batch_size, input_size)``; its row times that batch, its note names the shapes, and its ratio still
divides by the same ``nn.LSTM`` step. Image and video frames are enlarged to 28 x 28, one channel, and a batch holds
as many pixels as the sequence batch has time steps (the default 64 x 100 gives 3 clips of 3 frames): an image
model's recurrence runs over pixels, so this matches the recurrent steps of a row, not the count of sequences. A
frame predictor (its config selects ``task=frames``) outputs a frame per step, C*H*W features, as in training. A
model that fails to build or run is a row with its error; the others still run.

Each row is printed when it finishes and the table at the end; ``--json`` is rewritten after every row
(``"complete": false`` until the last), so a bench that is stopped keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rnnlab.config_check import CONF_DIR, PRIMARY_CONFIG, group_options
from rnnlab.errors import ConfigError
from rnnlab.measure import AllocatorPeak, synchronize
from rnnlab.models.budget import hidden_size_for_budget
from rnnlab.record import one_line
from rnnlab.train import build_model

log = logging.getLogger(__name__)

SEQUENCE_LAYOUT = "[batch, time, features]"
REFERENCE_NAME = "torch.nn.LSTM (reference)"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
FRAME_SIZE = 28  # image and video models read frames of FRAME_SIZE x FRAME_SIZE pixels, one channel
REPEAT_SHARE = 0.5  # a row starts no more repeats once it has used this share of its time cap


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
    (batch_ms / T); ``ratio``: this model's batch time over the reference's; ``repeats``: timed steps that ran."""

    model: str
    overrides: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | skipped | timeout | error
    reason: str | None = None
    target: str | None = None
    hidden_size: int | None = None
    params: int | None = None
    repeats: int | None = None
    batch_ms: float | None = None
    step_ms: float | None = None
    tokens_per_s: float | None = None
    reference_batch_ms: float | None = None
    ratio: float | None = None
    peak_memory_mb: float | None = None

    @property
    def label(self) -> str:
        return self.model + (f"[{','.join(self.overrides)}]" if self.overrides else "")

    def add_note(self, note: str) -> None:
        self.reason = f"{self.reason}; {note}" if self.reason else note


class ModelRun(NamedTuple):
    """One row to measure: the model's config name, the variant's overrides, its composed model config (or the
    exception composing it), and the ``task`` group choice that config selects (``frames``: it predicts frames)."""

    name: str
    overrides: list[str]
    cfg: Any
    task: str = "sequence"


class SkipRow(Exception):
    """A model the bench does not time (e.g. it cannot be sized to the parameter budget); the message says why."""


class RowTimeout(BaseException):
    """A row ran past its time cap. A BaseException, so that no ``except Exception`` on the way (Hydra's
    instantiate, a model's own handlers) turns it into an error."""


class TimeCap:
    """A row's limit of ``seconds`` of wall time (None: none), entered as a context manager.

    While entered, SIGALRM raises :class:`RowTimeout` when the cap passes (main thread only; elsewhere only the
    checks below apply); the handler and timer in place before are restored on exit. ``check(seconds)`` raises it
    at once when work expected to take ``seconds`` would end past the cap. ``repeats_done`` says that the row has
    used ``repeat_seconds`` (default: ``REPEAT_SHARE`` of the cap), after which it starts no more repeats.
    """

    def __init__(self, seconds: float | None, repeat_seconds: float | None = None):
        self.seconds = seconds
        self.repeat_seconds = REPEAT_SHARE * seconds if repeat_seconds is None and seconds else repeat_seconds
        self.start = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def repeats_done(self) -> bool:
        return self.repeat_seconds is not None and self.used() > self.repeat_seconds

    def check(self, seconds: float) -> None:
        if self.seconds is not None and self.used() + seconds > self.seconds:
            raise RowTimeout(self.message(f"the next step would end past it at about {self.used() + seconds:.1f} s"))

    def message(self, detail: str) -> str:
        return f"ran past the {self.seconds:g} s time cap ({detail})"

    def _expire(self, signum, frame) -> None:
        raise RowTimeout(self.message(f"stopped at {self.used():.1f} s"))

    def __enter__(self) -> TimeCap:
        self.start = time.perf_counter()
        self._armed = (
            self.seconds is not None
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        if self._armed:
            self._previous_handler = signal.signal(signal.SIGALRM, self._expire)
            self._previous_timer = signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._armed:
            return
        try:  # nested, so that an alarm arriving right here still restores the previous handler
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, self._previous_handler)
            delay, interval = self._previous_timer
            if delay:  # an outer timer, less the time this row took
                signal.setitimer(signal.ITIMER_REAL, max(delay - self.used(), 1e-3), interval)


def selected_models(models: str) -> list[str]:
    """The names in the comma-separated ``models``, or every ``conf/model/*.yaml`` when it is empty."""
    available = group_options("model")
    names = [name.strip() for name in models.split(",") if name.strip()] or available
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(f"unknown model {', '.join(unknown)}; allowed: {', '.join(available)}")
    return names


def model_configs(
    names: list[str], hidden: int, variants: list[str], param_budget: int | None = None
) -> dict[str, ModelRun]:
    """``label -> ModelRun`` for each name and variant.

    Each model is composed once, as ``rnnlab-train model=<name>`` would compose it; ``hidden_size=H`` (or, given
    ``param_budget``, ``param_budget=N``) where the model has a ``hidden_size`` key, and the variant's override, are
    then set on the composed node, with values parsed by Hydra's override grammar, as ``model.hidden_size=H`` on the
    command line would set them. Under a budget, a model without ``hidden_size`` gets a :class:`SkipRow`.
    """
    parser = OverridesParser.create()
    configs: dict[str, ModelRun] = {}
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in names:
            try:
                composed = compose(PRIMARY_CONFIG, overrides=[f"model={name}"], return_hydra_config=True)
            except Exception as error:  # a broken config is that model's row, not the bench's end
                configs[name] = ModelRun(name, [], error)
                continue
            defaults, task = composed.model, composed.hydra.runtime.choices.get("task", "sequence")
            sized = "hidden_size" in defaults
            base = [f"param_budget={param_budget}" if param_budget else f"hidden_size={hidden}"] if sized else []
            runs = [[]]
            for variant in variants:
                key, _, value = variant.partition("=")
                if key in defaults and str(defaults[key]) != value:
                    runs.append([variant])
            for extra in runs:
                label = name + (f"[{','.join(extra)}]" if extra else "")
                if param_budget and not sized:
                    unsized = SkipRow(f"no hidden_size key: not sized to {param_budget:,} params")
                    configs[label] = ModelRun(name, extra, unsized, task)
                    continue
                cfg = defaults.copy()
                try:
                    with open_dict(cfg):
                        for override in parser.parse_overrides([*base, *extra]):
                            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
                    configs[label] = ModelRun(name, extra, cfg, task)
                except Exception as error:
                    configs[label] = ModelRun(name, extra, error, task)
    return configs


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
    """The allocator's peak during ``step`` above what it held before (see the module docstring)."""
    peak = AllocatorPeak(device)
    peak.start()
    step()
    return peak.stop()


class Reference(torch.nn.Module):
    """Fused ``nn.LSTM`` and a linear readout: what the ``lstm`` config builds with the fused kernel."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.rnn = torch.nn.LSTM(input_size, hidden_size, batch_first=True)
        self.readout = torch.nn.Linear(hidden_size, output_size)

    def forward(self, x):
        return self.readout(self.rnn(x)[0])


def reference_hidden_size(sizes: Sizes, param_budget: int | None) -> int:
    """The reference's hidden size: ``sizes.hidden``, or the one closest to ``param_budget`` parameters
    (ConfigError when none is within 5%)."""
    if not param_budget:
        return sizes.hidden
    factory = partial(Reference, sizes.input, output_size=sizes.output)
    return hidden_size_for_budget(factory, param_budget)


def measure(
    row: Row,
    model: torch.nn.Module,
    reference: Callable[[], None] | None,
    inputs: dict[str, Any],
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
    cap: TimeCap | None = None,
) -> None:
    """Fill ``row`` with times (each paired with a ``reference`` step; None: this is the reference), parameters and
    peak memory; ``inputs`` are the forward() keyword arguments. Under a ``cap``, warm-up and repeats stop once it
    has used its share (one timed step at least), and a step it cannot hold raises :class:`RowTimeout`."""
    cap = cap or TimeCap(None)
    step = train_step(model, inputs)
    x = inputs["x"]
    device = x.device
    row.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    times, reference_times = [], []
    warm, last_s = 0, 0.0
    while len(times) < repeats:
        cap.check(last_s)
        counts = warm >= warmup or cap.repeats_done()
        started = time.perf_counter()
        elapsed = timed(step, device, clock)
        reference_elapsed = timed(reference, device, clock) if reference is not None else elapsed
        last_s = time.perf_counter() - started
        if not counts:
            warm += 1
            continue
        times.append(elapsed)
        reference_times.append(reference_elapsed)
        record_times(row, times, reference_times, x.shape)
        if cap.repeats_done():
            break
    model.zero_grad(set_to_none=True)  # freed before the measurement, not inside it
    cap.check(last_s)
    row.peak_memory_mb = peak_memory_bytes(step, device) / 2**20


def record_times(row: Row, times: list[float], reference_times: list[float], shape: torch.Size) -> None:
    """Medians of the timed steps so far (a row that then times out keeps them)."""
    batch_s = statistics.median(times)
    row.repeats = len(times)
    row.batch_ms = batch_s * 1e3
    row.step_ms = row.batch_ms / shape[1]
    row.tokens_per_s = shape[0] * shape[1] / batch_s
    row.reference_batch_ms = statistics.median(reference_times) * 1e3
    row.ratio = statistics.median(t / r for t, r in zip(times, reference_times))


def layout_inputs(model_class: type, sizes: Sizes, device: torch.device) -> tuple[int, dict[str, Any]]:
    """(input_size, forward kwargs) for a model that reads another layout: its ``example_inputs`` at the bench's
    batch size. Image and video batches ([B, T, C, H, W]) are frames of one channel enlarged to ``FRAME_SIZE`` x
    ``FRAME_SIZE``, as many as it takes to hold as many pixels as the sequence batch has time steps (batch x
    length), in clips of the example's length (one clip at least)."""
    example = model_class.example_inputs(sizes.batch, 1)
    if example["x"].dim() != 5:
        example = model_class.example_inputs(sizes.batch, sizes.input)
        return sizes.input, {key: value.to(device) for key, value in example.items()}
    steps = example["x"].shape[1]
    frames = -(-sizes.batch * sizes.length // FRAME_SIZE**2)
    clips = -(-frames // steps)
    x = torch.randn(clips, steps, 1, FRAME_SIZE, FRAME_SIZE, device=device)
    return 1, {"x": x, "lengths": torch.full((clips,), steps, device=device)}


def describe_inputs(inputs: dict[str, Any]) -> str:
    return ", ".join(f"{key} {list(value.shape)}" for key, value in inputs.items())


def bench_one(run: ModelRun, sizes, reference, x, repeats, warmup, clock, time_cap=None) -> Row:
    """The row of one model config (or of the exception composing it), measured under ``time_cap`` seconds."""
    cfg = run.cfg
    row = Row(model=run.name, overrides=run.overrides)
    if isinstance(cfg, Exception):
        row.status, row.reason = ("skipped", str(cfg)) if isinstance(cfg, SkipRow) else ("error", one_line(cfg))
        return row
    try:
        with TimeCap(time_cap) as cap:
            row.target = cfg.get("_target_")
            model_class = get_class(row.target)
            input_size, output_size, inputs = sizes.input, sizes.output, {"x": x}
            if getattr(model_class, "input_layout", SEQUENCE_LAYOUT) != SEQUENCE_LAYOUT:
                input_size, inputs = layout_inputs(model_class, sizes, x.device)
                row.reason = f"reads {model_class.input_layout}: {describe_inputs(inputs)}"
                if run.task == "frames" and inputs["x"].dim() == 5:  # a frame predictor outputs a frame per step
                    output_size = inputs["x"][0, 0].numel()
                    row.add_note(f"predicts frames (task=frames): output C*H*W = {output_size}")
            torch.manual_seed(0)
            model = build_model(cfg, input_size, output_size).to(x.device)
            row.hidden_size = getattr(model, "hidden_size", None)
            model.train()
            measure(row, model, reference, inputs, repeats, warmup, clock, cap)
    except RowTimeout as timeout:
        row.status = "timeout"
        row.add_note(str(timeout))
    except Exception as error:  # one model's failure is its row; the bench goes on
        if isinstance(error, ConfigError) and error.key == "param_budget":  # said, not failed
            row.status = "skipped"
            row.add_note(f"param_budget {cfg.get('param_budget'):,}: {error.message}")
        else:
            log.debug("%s failed", row.label, exc_info=True)
            row.status, row.reason = "error", one_line(error)
    return row


def run_bench(
    configs: dict[str, ModelRun],
    sizes: Sizes,
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    clock: Callable[[], float] = time.perf_counter,
    time_cap: float | None = None,
    param_budget: int | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> tuple[Row, list[Row]]:
    """Benchmark each of ``configs`` (from :func:`model_configs`, or (name, overrides, cfg) tuples); returns the
    reference row and the model rows.

    ``clock``: ``time.perf_counter`` (wall time) or ``time.process_time`` (CPU time of all the process's threads).
    ``time_cap``: wall seconds per model row (None: no cap). ``param_budget``: the reference's size in parameters
    (the model configs carry their own). ``on_row`` is called with each row as it finishes, the reference first.
    """
    device = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(sizes.batch, sizes.length, sizes.input, device=device)
    hidden = reference_hidden_size(sizes, param_budget)
    reference_model = Reference(sizes.input, hidden, sizes.output).to(device)
    reference = train_step(reference_model, {"x": x})
    reference_row = Row(model=REFERENCE_NAME, target="torch.nn.LSTM", hidden_size=hidden)
    reference_share = TimeCap(None, repeat_seconds=REPEAT_SHARE * time_cap if time_cap else None)  # no timeout
    measure(reference_row, reference_model, None, {"x": x}, repeats, warmup, clock, reference_share)
    if on_row:
        on_row(reference_row)
    rows = []
    for label, run in configs.items():
        log.info("bench %s", label)
        rows.append(bench_one(ModelRun(*run), sizes, reference, x, repeats, warmup, clock, time_cap))
        if on_row:
            on_row(rows[-1])
    return reference_row, rows


def format_value(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def row_line(row: Row) -> str:
    """A finished row as one line of plain text, printed while the bench runs."""
    parts = [f"{row.label:<30}", f"{row.status:<7}", f"{format_value(row.params, ','):>11} params"]
    if row.batch_ms is not None:
        parts += [f"{row.batch_ms:9.1f} ms/batch", f"x{row.ratio:.2f} nn.LSTM", f"median of {row.repeats}"]
    if row.peak_memory_mb is not None:
        parts.append(f"model peak {row.peak_memory_mb:.1f} MB")
    return "  ".join([*parts, row.reason or ""]).rstrip()


def results_table(
    reference: Row, rows: list[Row], sizes: Sizes, max_ratio: float, param_budget: int | None = None
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


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "host": platform.node(),
    }


def bench_settings(args: argparse.Namespace, sizes, env: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` keys that say how a bench (of models or of heads) ran."""
    return {"sizes": asdict(sizes), "repeats": args.repeats, "warmup": args.warmup, "clock": args.clock, "env": env}


def table_caption(env: dict[str, Any], args: argparse.Namespace, note: str) -> str:
    return f"{env['device']}, {env['threads']} threads, {args.clock} clock, median of {args.repeats}; {note}"


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` to ``path`` by renaming a finished file over it, so no reader ever sees half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = path.with_name(path.name + ".partial")
    partial_path.write_text(json.dumps(result, indent=2))
    partial_path.replace(path)


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
    defaults = Sizes()
    parser = argparse.ArgumentParser(prog="rnnlab-bench", description=__doc__.splitlines()[0])
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
            reference_hidden_size(Sizes(input=args.input, output=args.output), args.param_budget)
        except ConfigError as error:
            parser.error(f"--param-budget: the reference nn.LSTM cannot be sized to it: {error.message}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; exit status 1 when a model failed (its row says why; skips and timeouts are not failures),
    2 for bad arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--heads" in argv:  # the output-layer bench
        from rnnlab.bench_heads import main as heads_main

        return heads_main([arg for arg in argv if arg != "--heads"])
    if "--loop" in argv:  # the training loop against a bare PyTorch loop
        from rnnlab.loop_bench import main as loop_main

        return loop_main([arg for arg in argv if arg != "--loop"])
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
    configs = model_configs(names, sizes.hidden, variants, param_budget=args.param_budget)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(device)
    settings = bench_settings(args, sizes, env) | {"time_cap": args.time_cap, "param_budget": args.param_budget}
    console = Console(width=200)
    finished: list[Row] = []

    def report(row: Row) -> None:
        console.print(escape(row_line(row)), soft_wrap=True, highlight=False)
        finished.append(row)
        if args.json:
            write_json(args.json, results_json(settings, finished, complete=len(finished) == len(configs) + 1))

    reference, rows = run_bench(
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


def results_json(settings: dict[str, Any], finished: list[Row], complete: bool) -> dict[str, Any]:
    """The ``--json`` document: settings, the reference (the first finished row) and the model rows so far."""
    reference, *rows = finished
    return settings | {
        "complete": complete,
        "reference": asdict(reference),
        "rows": [asdict(row) | {"label": row.label} for row in rows],
    }


if __name__ == "__main__":
    sys.exit(main())
