"""The run record, ``summary.json`` (GUIDE.md section 3): what every run leaves behind, whatever its fate."""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

RECORD_NAME = "summary.json"
STATUSES = ("completed", "diverged", "failed")


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
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
        "host": platform.node(),
    }


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch when CUDA is in use, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RunStats(pl.Callback):
    """Wall time of training, mean time per optimisation step, and tokens (valid time steps) per second."""

    def __init__(self):
        self.train_s = 0.0
        self.step_s = 0.0
        self.steps = 0
        self.tokens = 0
        self._fit_start = self._step_start = 0.0

    def on_train_start(self, trainer, pl_module):
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.step_s += time.perf_counter() - self._step_start
        self.steps += 1
        self.tokens += int(batch["lengths"].sum())

    def on_train_end(self, trainer, pl_module):
        self.train_s = time.perf_counter() - self._fit_start

    def timing(self) -> dict[str, float | None]:
        return {
            "train_s": round(self.train_s, 3),
            "step_ms": round(1000 * self.step_s / self.steps, 3) if self.steps else None,
            "tokens_per_s": round(self.tokens / self.step_s, 1) if self.step_s else None,
        }


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically (a reader never sees half a record)."""
    path = Path(run_dir) / RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(record, indent=2, default=str) + "\n")
    partial.replace(path)
    return path


def read_records(root: Path) -> list[dict[str, Any]]:
    """Every run record under ``root``, each with its directory as ``run_dir``."""
    records = []
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        record = json.loads(path.read_text())
        record["run_dir"] = str(path.parent)
        records.append(record)
    return records
