"""The run record, ``summary.json`` (CONTRIBUTING.md, 'The run record'): what every run leaves behind, whatever its
fate."""

from __future__ import annotations

import json
import logging
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from rnnlab.measure import AllocatorPeak, StepFlops, resident_bytes

log = logging.getLogger(__name__)

RECORD_NAME = "summary.json"
STATUSES = ("completed", "diverged", "failed")
Number = int | float
# The keys every record holds and their types (CONTRIBUTING.md, 'The run record'); a record may hold more, never fewer.
# ``status`` is one of STATUSES and ``metrics`` maps names to numbers (checked in check_record); bool is no int.
SCHEMA: dict[str, Any] = {
    "status": str,
    "error": str | None,
    "model": str | None,
    "data": str | None,
    "optimizer": str | None,
    "seed": int,
    "params": int | None,
    "steps": int,
    "epochs": int,
    "metrics": dict,
    "timing": dict,
    "memory": dict,
    "peak_memory_mb": Number | None,
    "env": dict,
    "config": dict,
}


class RecordError(ValueError):
    """A run record that is not one: unreadable, not JSON, not an object, keys missing or of the wrong type.
    ``str()`` is ``<path>: <reason>``."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def check_record(record: Any) -> list[str]:
    """What makes ``record`` no run record under SCHEMA, one problem per entry; [] for a good one."""
    if not isinstance(record, dict):
        return [f"not a JSON object but {type(record).__name__}"]
    missing = [key for key in SCHEMA if key not in record]
    problems = [f"missing keys {', '.join(missing)}"] if missing else []
    for key, kind in SCHEMA.items():
        value = record.get(key)
        if key in record and (not isinstance(value, kind) or isinstance(value, bool)):
            problems.append(f"{key} is {_shown(value)}, not {getattr(kind, '__name__', kind)}")
    if isinstance(record.get("status"), str) and record["status"] not in STATUSES:
        problems.append(f"status is {_shown(record['status'])}, not one of {', '.join(STATUSES)}")
    metrics = record["metrics"] if isinstance(record.get("metrics"), dict) else {}
    for name, value in metrics.items():
        if not isinstance(value, Number) or isinstance(value, bool):
            problems.append(f"metrics[{name!r}] is {_shown(value)}, not a number")
    return problems


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` — the form errors take in records and on the console."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def git_sha() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def environment() -> dict[str, Any]:
    import hydra

    return {
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "hydra": hydra.__version__,
        "device": (
            torch.cuda.get_device_name()
            if torch.cuda.is_available()
            else f"cpu ({platform.processor() or platform.machine()})"
        ),
        "host": platform.node(),
    }


def process_peak_mb() -> float:
    """The process's peak resident set size (what the operating system saw, not the model's share of it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RunStats(pl.Callback):
    """What training cost: wall and CPU time per optimisation step, tokens (valid time steps) per second, and, for
    one step, the model's own memory and FLOPs (``rnnlab.measure``).

    The measured step is the second training batch (the first if only one runs): optimizer state exists by then,
    as in every later step. Its time is left out of the step means, since the counters slow it down. CPU time is
    the process's (all torch threads; ``threads`` says how many), robust to other processes on a shared machine
    where wall time is not.
    """

    MEASURED_BATCH = 1

    def __init__(self):
        self.train_s = self._train_s_before = 0.0
        self.step_s = self.cpu_s = 0.0
        self.steps = 0
        self.tokens = 0
        self._fit_start = self._step_start = self._cpu_start = 0.0
        self._measure_from = self.MEASURED_BATCH
        self.measured: dict[str, Any] = {}
        self._peak: AllocatorPeak | None = None
        self._flops: StepFlops | None = None
        self._resident = 0

    def on_train_start(self, trainer, pl_module):
        self._fit_start = time.perf_counter()
        self._measure_from = min(self.MEASURED_BATCH, max(0, int(trainer.estimated_stepping_batches) - 1))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.measured and self._peak is None and trainer.global_step >= self._measure_from:
            self._start_measurement(trainer, pl_module)
        self._step_start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step_s, cpu_s = time.perf_counter() - self._step_start, time.process_time() - self._cpu_start
        tokens = int(batch["lengths"].sum())
        if self._peak is not None:
            self._finish_measurement(step_s, cpu_s, tokens)
            return
        self.step_s += step_s
        self.cpu_s += cpu_s
        self.steps += 1
        self.tokens += tokens

    def on_exception(self, trainer, pl_module, exception):
        for counter in (self._peak, self._flops):
            if counter is not None:
                counter.abandon()
        self._peak = self._flops = None

    def on_train_end(self, trainer, pl_module):
        self.train_s = self._train_s_before + time.perf_counter() - self._fit_start

    def state_dict(self) -> dict[str, Any]:
        """Saved in the resume point (``rnnlab.training.resume``), so a resumed run's record covers the whole run."""
        return {"train_s": self._train_s_before + time.perf_counter() - self._fit_start, "step_s": self.step_s,
                "cpu_s": self.cpu_s, "steps": self.steps, "tokens": self.tokens, "measured": self.measured}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_s_before = state_dict["train_s"]
        self.step_s, self.cpu_s = state_dict["step_s"], state_dict["cpu_s"]
        self.steps, self.tokens, self.measured = state_dict["steps"], state_dict["tokens"], state_dict["measured"]

    def _start_measurement(self, trainer, pl_module) -> None:
        self._resident = resident_bytes(pl_module, trainer.optimizers)
        self._peak, self._flops = AllocatorPeak(pl_module.device), StepFlops()
        try:
            self._peak.start()
        except RuntimeError as error:  # e.g. a torch.profiler already running (debug=profiler)
            log.warning("model memory not measured: %s", one_line(error))
            self._peak = None
            return
        self._flops.start()

    def _finish_measurement(self, step_s: float, cpu_s: float, tokens: int) -> None:
        device = self._peak.device.type
        flops, peak = self._flops.stop(), self._peak.stop()
        self._peak = self._flops = None
        self.measured = {
            "model_memory_mb": round((self._resident + peak) / 2**20, 3),
            "step_peak_mb": round(peak / 2**20, 3),
            "resident_mb": round(self._resident / 2**20, 3),
            "flops_per_step": flops,
            "measured_step_tokens": tokens,
            "measured_by": "cuda max_memory_allocated" if device == "cuda" else "torch.profiler CPU allocator events",
        }

    def timing(self) -> dict[str, float | None]:
        flops, tokens = self.measured.get("flops_per_step"), self.measured.get("measured_step_tokens")
        return {
            "train_s": round(self.train_s, 3),
            "step_ms": round(1000 * self.step_s / self.steps, 3) if self.steps else None,
            "cpu_ms_per_step": round(1000 * self.cpu_s / self.steps, 3) if self.steps else None,
            "threads": torch.get_num_threads(),
            "tokens_per_s": round(self.tokens / self.step_s, 1) if self.step_s else None,
            "tokens_per_step": round(self.tokens / self.steps, 1) if self.steps else None,
            "flops_per_step": flops,
            "flops_per_token": round(flops / tokens, 1) if flops is not None and tokens else None,
        }

    def memory(self) -> dict[str, Any]:
        """The model's own memory in its measured step (what memory claims are judged on), beside the process's."""
        own = {k: self.measured.get(k) for k in ("model_memory_mb", "step_peak_mb", "resident_mb")}
        return {**own, "process_peak_mb": round(process_peak_mb(), 1), "measured_by": self.measured.get("measured_by")}


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data, interpolations resolved (as composed where one cannot resolve: that is then
    the run's failure, and the record keeps what was asked)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        return OmegaConf.to_container(cfg, resolve=False)


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically (a reader never sees half a record); a record that breaks SCHEMA is a
    writer's bug and raises RecordError, nothing written."""
    path = Path(run_dir) / RECORD_NAME
    problems = check_record(record)
    if problems:
        raise RecordError(path, "refused to write a bad record: " + "; ".join(problems))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(record, indent=2, default=str) + "\n")
    partial.replace(path)
    return path


def read_record(path: Path | str) -> dict[str, Any]:
    """The record in ``path`` (a ``summary.json``, or the run directory holding one); RecordError naming the file
    when it cannot be read, is not JSON (a truncated file), not an object, or breaks SCHEMA."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RecordError(path, f"not valid JSON (truncated?): {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecordError(path, f"unreadable: {one_line(error)}") from None
    problems = check_record(record)
    if problems:
        raise RecordError(path, "; ".join(problems))
    return record


def read_records(root: Path, skipped: list[RecordError] | None = None) -> list[dict[str, Any]]:
    """Every good run record under ``root``, each with its directory as ``run_dir``. A bad one is skipped with a
    warning naming the file and the reason, and appended to ``skipped`` when given."""
    records = []
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        try:
            record = read_record(path)
        except RecordError as error:
            log.warning("skipped run record %s", error)
            if skipped is not None:
                skipped.append(error)
            continue
        record["run_dir"] = str(path.parent)
        records.append(record)
    return records
