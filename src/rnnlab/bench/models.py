"""``rnnlab-bench``: forward+backward speed, parameters and model peak memory of every model, against ``nn.LSTM``.

Every ``conf/model/*.yaml`` is a row (the Hydra config group is the registry, CONTRIBUTING.md, 'Conventions'), built
exactly as ``rnnlab-train`` builds it: the model config composed from the primary config with ``model=<name>`` and
``model.hidden_size=H``, then :func:`rnnlab.wiring.build_model`. With ``--param-budget N`` the composed config gets
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
The cap itself: :class:`rnnlab.bench.timecap.TimeCap`.

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

Its command line (``rnnlab-bench`` without ``--heads`` or ``--loop``) is :mod:`rnnlab.bench.models_cli`.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from rnnlab.bench.common import timed
from rnnlab.bench.timecap import REPEAT_SHARE, RowTimeout, TimeCap
from rnnlab.conf_dir import CONF_DIR, PRIMARY_CONFIG, group_options
from rnnlab.errors import ConfigError
from rnnlab.measure import AllocatorPeak
from rnnlab.models.budget import hidden_size_for_budget
from rnnlab.record import one_line
from rnnlab.wiring import build_model

log = logging.getLogger(__name__)

SEQUENCE_LAYOUT = "[batch, time, features]"
REFERENCE_NAME = "torch.nn.LSTM (reference)"
FRAME_SIZE = 28  # image and video models read frames of FRAME_SIZE x FRAME_SIZE pixels, one channel


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
