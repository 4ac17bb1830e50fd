"""``rnnlab-bench --loop``: the cost of an ``rnnlab-train`` step against a bare PyTorch loop on the same job.

Both loops run in one process on the same composed config (``rnnlab-train``'s overrides), the same model weights,
the same data loader, the same optimizer, thread count and determinism setting (the Trainer sets
``torch.use_deterministic_algorithms`` process-wide, so the bare loop runs under it too):

* the **rnnlab loop** is what ``rnnlab-train`` runs: ``rnnlab.wiring.build`` (the task, its loggers, callbacks and
  Trainer) and ``trainer.fit``, stopped after ``warmup + steps`` optimizer steps;
* the **bare loop** is what a user would write by hand: ``for batch in loader``: embed token ids, run the model,
  take the outputs that meet the targets, cross-entropy or MSE, ``backward``, ``optimizer.step``, ``zero_grad``.

Each repeat is one fit of ``warmup + steps`` rnnlab steps, with one bare step (on a copy of the same initial
weights, over its own pass of the same loader) run right after each, so load from other processes falls on both
alike; ``ratio`` is the median over repeats of rnnlab's time per timed step over the bare loop's. Time is split by
phase: ``data`` (fetching and collating the next batch, and for rnnlab the hooks between batches), ``forward``
(model, head, loss; for rnnlab also the optimizer's closure and the metrics), ``backward`` and ``optimizer`` (the
update; for rnnlab also the hooks after it). Use ``--threads 1 --clock cpu`` on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table

from rnnlab.bench.common import CLOCKS
from rnnlab.conf_dir import CONF_DIR, PRIMARY_CONFIG
from rnnlab.data.base import IGNORE_INDEX
from rnnlab.record import RunStats

log = logging.getLogger(__name__)

PHASES = ("data", "forward", "backward", "optimizer")
# The jobs the issue names: the default job and one per modality (real data read from paths.data_dir).
PRESETS = {
    "default": [],
    "char_lm": ["data=tinyshakespeare", "model=lstm"],
    "audio": ["data=fsdd", "data.features=mfcc", "model=gru"],
    "pixel_rows": ["data=pixel_mnist", "data.layout=row", "model=lstm"],
}


@dataclass
class LoopResult:
    """One job: ms per step of each loop (median over repeats), their ratio and the per-phase split."""

    job: str
    overrides: list[str]
    steps: int
    repeats: int
    rnnlab_ms: float = 0.0
    bare_ms: float = 0.0
    ratio: float = 0.0
    rnnlab_phases: dict[str, float] = field(default_factory=dict)
    bare_phases: dict[str, float] = field(default_factory=dict)


class PhaseClock:
    """Accumulates clock time per phase between ``mark(phase)`` calls; counting starts at ``start()``."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.totals: dict[str, float] = defaultdict(float)
        self.last: float | None = None

    def start(self) -> None:
        self.totals.clear()
        self.last = self.clock()

    def mark(self, phase: str) -> None:
        if self.last is None:
            return
        now = self.clock()
        self.totals[phase] += now - self.last
        self.last = now


class BareLoop:
    """The hand-written loop, one step at a time: fetch, ``bare_loss``, backward, the module's own optimizer."""

    def __init__(self, module, loader, clock: PhaseClock):
        self.module, self.loader, self.clock = module, loader, clock
        optimizer = module.configure_optimizers()
        self.optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        self.batches = iter(loader)
        module.train()

    def step(self, timed: bool) -> None:
        if timed:
            self.clock.last = self.clock.clock()
        try:
            batch = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            batch = next(self.batches)
        self.clock.mark("data")
        loss = bare_loss(self.module, batch)
        self.clock.mark("forward")
        loss.backward()
        self.clock.mark("backward")
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.clock.mark("optimizer")
        self.clock.last = None


class LoopTimer(pl.Callback):
    """Times rnnlab's training steps ``warmup`` .. ``warmup + steps`` by phase, runs one ``bare`` step right after
    each rnnlab step (so load from other processes affects both alike; its time is not rnnlab's), then stops the
    fit. An epoch's validation, which the bare loop does not run, is left out."""

    def __init__(self, clock: PhaseClock, bare: BareLoop, warmup: int, steps: int):
        self.clock, self.bare, self.warmup, self.steps = clock, bare, warmup, steps
        self.done = False

    def timing(self, trainer) -> bool:
        return self.warmup < trainer.global_step <= self.warmup + self.steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.clock.last is None:
            self.clock.start()  # this batch was fetched before; the next fetches are timed
        self.clock.mark("data")

    def on_validation_start(self, trainer, pl_module):
        self.clock.mark("data")  # the epoch's last fetch; validation itself is not a training step's cost

    def on_validation_end(self, trainer, pl_module):
        if self.clock.last is not None:
            self.clock.last = self.clock.clock()

    def on_before_backward(self, trainer, pl_module, loss):
        self.clock.mark("forward")

    def on_after_backward(self, trainer, pl_module):
        self.clock.mark("backward")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.mark("optimizer")
        self.bare.step(timed=self.timing(trainer))
        if self.clock.last is not None:
            self.clock.last = self.clock.clock()
        if trainer.global_step >= self.warmup + self.steps:
            self.done = True
            self.totals = dict(self.clock.totals)
            self.clock.last = None
            trainer.should_stop = True


def compose_job(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config ``rnnlab-train <overrides>`` would run, its Hydra config set as in a run writing to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(PRIMARY_CONFIG, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def bare_loss(module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss a hand-written loop computes for ``batch``: embed, run the model (lengths passed only when the batch
    holds padding), pick the outputs that meet the targets, cross-entropy or MSE."""
    spec = module.spec
    inputs = batch["inputs"] if module.embedding is None else module.embedding(batch["inputs"])
    lengths = batch["lengths"]
    padded = bool((lengths != inputs.shape[1]).any())
    outputs, _ = module.model(inputs, lengths if padded else None)
    targets = batch["targets"]
    if not spec.per_step:
        outputs = outputs[torch.arange(outputs.shape[0]), lengths - 1]
    if spec.kind == "classification":
        return torch.nn.functional.cross_entropy(
            outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
    return torch.nn.functional.mse_loss(outputs, targets)


def time_both_loops(
    cfg: DictConfig, bare_module, initial: dict, warmup: int, steps: int, clock: Callable[[], float]
) -> tuple[dict[str, float], dict[str, float]]:
    """``rnnlab-train``'s fit on ``cfg`` and the bare loop on ``bare_module``, both from the weights ``initial``,
    step for step; the phase totals of each loop's timed steps."""
    from rnnlab.wiring import build

    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + steps + 1
    datamodule, module, loggers, trainer = build(cfg, RunStats())
    module.load_state_dict(initial)
    bare_module.load_state_dict(initial)
    bare_clock = PhaseClock(clock)
    timer = LoopTimer(
        PhaseClock(clock), BareLoop(bare_module, datamodule.train_dataloader(), bare_clock), warmup, steps
    )
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    if not timer.done:
        raise RuntimeError(f"the rnnlab loop stopped after {trainer.global_step} of {warmup + steps} steps")
    return timer.totals, dict(bare_clock.totals)


def measure_job(
    job: str, overrides: list[str], steps: int, warmup: int, repeats: int, clock: Callable[[], float]
) -> LoopResult:
    """Time both loops on one job, ``repeats`` fits of ``warmup + steps`` paired steps each."""
    from rnnlab.wiring import build

    result = LoopResult(job=job, overrides=overrides, steps=steps, repeats=repeats)
    with tempfile.TemporaryDirectory(prefix="rnnlab-loop-") as tmp:
        cfg = compose_job(overrides, Path(tmp))
        _, bare_module, _, _ = build(cfg.copy(), RunStats())
        initial = copy.deepcopy(bare_module.state_dict())
        rnnlab_runs, bare_runs = [], []
        for repeat in range(repeats):
            log.info("%s: repeat %d of %d", job, repeat + 1, repeats)
            rnnlab, bare = time_both_loops(cfg.copy(), bare_module, initial, warmup, steps, clock)
            rnnlab_runs.append(rnnlab)
            bare_runs.append(bare)
    ratios = [sum(r.values()) / sum(b.values()) for r, b in zip(rnnlab_runs, bare_runs)]
    result.ratio = statistics.median(ratios)
    result.rnnlab_ms = statistics.median(sum(r.values()) for r in rnnlab_runs) * 1e3 / steps
    result.bare_ms = statistics.median(sum(b.values()) for b in bare_runs) * 1e3 / steps
    for runs, phases in ((rnnlab_runs, result.rnnlab_phases), (bare_runs, result.bare_phases)):
        for phase in PHASES:
            phases[phase] = statistics.median(run.get(phase, 0.0) for run in runs) * 1e3 / steps
    return result


def results_table(results: list[LoopResult], clock: str) -> Table:
    table = Table(
        "job", "rnnlab ms/step", "bare ms/step", "ratio",
        *(f"{phase} ms (rnnlab / bare)" for phase in PHASES),
        title=f"rnnlab-train step against a bare PyTorch loop ({torch.get_num_threads()} threads, {clock} clock)",
    )
    for result in results:
        table.add_row(
            result.job, f"{result.rnnlab_ms:.2f}", f"{result.bare_ms:.2f}", f"{result.ratio:.3f}",
            *(f"{result.rnnlab_phases[p]:.2f} / {result.bare_phases[p]:.2f}" for p in PHASES),
        )
    return table


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rnnlab-bench --loop",
        description="Time rnnlab-train's step against a bare PyTorch loop on the same job, in one process.",
    )
    parser.add_argument(
        "--jobs", default="default",
        help=f"comma-separated presets ({', '.join(PRESETS)}); the overrides below are added to each",
    )
    parser.add_argument("overrides", nargs="*", help="rnnlab-train overrides, e.g. paths.data_dir=../shared/data")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before each block")
    parser.add_argument("--repeats", type=int, default=3, help="alternating blocks per loop (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help="wall time or process CPU time")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    for key in ("steps", "repeats"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key} must be positive")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1")
    if args.threads is not None and args.threads <= 0:
        parser.error("--threads must be positive")
    args.jobs = [job.strip() for job in args.jobs.split(",") if job.strip()]
    unknown = [job for job in args.jobs if job not in PRESETS]
    if unknown:
        parser.error(f"unknown job {', '.join(unknown)}; allowed: {', '.join(PRESETS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="rnnlab-bench: %(message)s")
    for noisy in ("pytorch_lightning", "lightning_fabric", "rnnlab.data", "rnnlab.train"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for job in args.jobs:
        overrides = [*PRESETS[job], *args.overrides]
        results.append(measure_job(job, overrides, args.steps, args.warmup, args.repeats, CLOCKS[args.clock]))
        log.info("%s: rnnlab %.2f ms, bare %.2f ms per step, ratio %.3f", job, results[-1].rnnlab_ms,
                 results[-1].bare_ms, results[-1].ratio)
    Console(width=200).print(results_table(results, args.clock))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "threads": torch.get_num_threads(), "clock": args.clock, "results": [asdict(r) for r in results]
        }
        args.json.write_text(json.dumps(payload, indent=2))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
