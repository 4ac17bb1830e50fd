"""Synthetic run records shaped like rnnlab-train's summary.json (CONTRIBUTING.md, 'The run record'), written into
tmp_path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from rnnlab.record import write_record

ADDING_TARGET = "rnnlab.data.synthetic.AddingDataModule"


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def make_record(run_dir: Path, *, model: str = "lstm", seed: int = 0, status: str = "completed", name: str = "study",
                overrides: list[str] | None = None, metrics: dict | None = None, params: int = 1000,
                step_ms: float = 5.0, tokens_per_s: float = 1e4, peak_memory_mb: float = 100.0, hidden_size: int = 64,
                cpu_ms_per_step: float | None = None, flops_per_token: float | None = None,
                model_memory_mb: float = 10.0, config: dict | None = None, **top: Any) -> dict:
    """A record as train.py writes it; ``config`` is deep-merged into a resolved config, ``top`` into the record.
    CPU time defaults to the wall time; a step holds 100 tokens; FLOPs per token default to 6 * params."""
    run_dir = Path(run_dir)
    resolved = {
        "task": {"_target_": "rnnlab.tasks.sequence.SequenceTask", "_partial_": True, "pooling": "last"},
        "model": {"_target_": f"rnnlab.models.fake.{model}", "_partial_": True, "hidden_size": hidden_size},
        "data": {"_target_": ADDING_TARGET, "seq_len": 10, "min_seq_len": None, "train_size": 256, "val_size": 64,
                 "test_size": 64, "batch_size": 32, "seed": 0, "num_workers": 0},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.003, "weight_decay": 0.0},
        "scheduler": None,
        "trainer": {"_target_": "pytorch_lightning.Trainer", "default_root_dir": str(run_dir), "max_epochs": 1},
        "logger": {"csv": {"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": str(run_dir),
                           "name": "csv", "version": ""}},
        "callbacks": {"model_checkpoint": {"dirpath": str(run_dir / "checkpoints"), "monitor": "val/loss"}},
        "paths": {"root_dir": ".", "log_dir": "./logs", "output_dir": str(run_dir)},
        "name": name,
        "tags": [],
        "seed": seed,
        "optimized_metric": "val/loss",
    }
    record = {
        "status": status,
        "error": None if status == "completed" else f"{status} on purpose",
        "model": model,
        "data": "adding",
        "optimizer": "adam",
        "seed": seed,
        "params": params,
        "steps": 10,
        "epochs": 1,
        "metrics": metrics if metrics is not None else {},
        "timing": {"train_s": 1.0, "step_ms": step_ms, "tokens_per_s": tokens_per_s, "tokens_per_step": 100,
                   "cpu_ms_per_step": step_ms if cpu_ms_per_step is None else cpu_ms_per_step, "threads": 1,
                   "flops_per_token": 6 * params if flops_per_token is None else flops_per_token,
                   "flops_per_step": 100 * (6 * params if flops_per_token is None else flops_per_token)},
        "peak_memory_mb": peak_memory_mb,
        "memory": {"model_memory_mb": model_memory_mb, "process_peak_mb": peak_memory_mb},
        "env": {"git_sha": None, "torch": "2.11.0", "lightning": "2.6.6", "hydra": "1.3.8", "device": "cpu",
                "host": "test"},
        "config": merge(resolved, config or {}),
        "overrides": overrides if overrides is not None else [f"model={model}", f"seed={seed}"],
        "hidden_size": hidden_size,
        "some_future_key": {"ignored": True},
    }
    record.update(top)
    write_record(run_dir, record)
    return record
