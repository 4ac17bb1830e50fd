"""What the ``rnnlab-bench`` modes share (models, ``--heads``, ``--loop``): the clocks, one timed step, the
environment and settings a result records, the table caption, the ``--json`` writer and value formatting. The bottom
of :mod:`rnnlab.bench`: it imports no other module of the package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rnnlab.measure import synchronize

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(step: Callable[[], None], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    synchronize(device)
    start = clock()
    step()
    synchronize(device)
    return clock() - start


def format_value(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


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
