"""Launching sweeps: a multirun tells the truth about its jobs, parallel jobs share the machine, and parallel
workers end with their launcher.

:class:`MultirunOutcome` is registered as a Hydra callback (``hydra.callbacks`` in conf/train.yaml), so it works with
every launcher (basic, ``hydra/launcher=local`` / joblib, submitit):

- after the last job, ``rnnlab-train -m`` lists the jobs whose records say ``diverged`` (a result) and ``failed`` (a
  failure) on stderr, failed ones last, and exits 1 when any failed;
- in a joblib (loky) worker, a job watches the launching process and ends its worker when the launcher is gone
  (killed), instead of training on as an orphan.

The jobs of a multirun are the records written (or rewritten) under its sweep directory while it ran: a job skipped
as already finished (``resume: true``) keeps its old record and is not counted again. ``rnnlab-sweep`` reads its
groups the same way (:func:`record_stamps`, :func:`records_since`).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab.record import RECORD_NAME, RecordError, read_record

log = logging.getLogger(__name__)

EXIT_JOBS_FAILED = 1


def ensure_dir(path: str) -> str:
    """``${ensure_dir:...}`` in a config: the folder, created if missing (for files a sweeper opens before any job)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


OmegaConf.register_new_resolver("ensure_dir", ensure_dir, replace=True)


def share_machine_between_parallel_jobs(cfg: DictConfig) -> None:
    """Parallel joblib jobs share the machine: each of N jobs gets cpu_count / N torch threads, and on a machine
    with G GPUs job i trains on GPU i mod G (the Trainer's ``devices``; a reused worker process cannot change
    CUDA_VISIBLE_DEVICES once CUDA is initialised)."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or "joblib" not in str(hydra_cfg.launcher.get("_target_", "")):
        return
    cpus = os.cpu_count() or 1
    n_jobs = int(hydra_cfg.launcher.n_jobs)
    n_jobs = cpus + 1 + n_jobs if n_jobs < 0 else n_jobs  # joblib's convention: -1 is every CPU
    torch.set_num_threads(max(1, cpus // max(1, n_jobs)))
    gpus = torch.cuda.device_count()
    if gpus > 1 and cfg.trainer.accelerator in ("gpu", "cuda", "auto") and cfg.trainer.devices == 1:
        with open_dict(cfg):
            cfg.trainer.devices = [hydra_cfg.job.num % gpus]


def record_stamps(root: Path) -> dict[str, int]:
    """``{path: mtime_ns}`` of every run record under ``root``: taken before a sweep, to tell its jobs apart."""
    stamps = {}
    for path in Path(root).rglob(RECORD_NAME):
        try:
            stamps[str(path)] = path.stat().st_mtime_ns
        except OSError:
            continue
    return stamps


def records_since(root: Path, stamps: dict[str, int]) -> list[dict[str, Any]]:
    """The records under ``root`` written since ``stamps`` were taken, each with its ``run_dir``, in job order. A
    record that cannot be read counts as failed, its reason as the error."""
    records = []
    for path in sorted(Path(root).rglob(RECORD_NAME), key=_natural):
        try:
            if stamps.get(str(path)) == path.stat().st_mtime_ns:
                continue
            record = read_record(path)
        except OSError:
            continue
        except RecordError as error:
            record = {"status": "failed", "error": f"unreadable record: {error.reason}"}
        records.append({**record, "run_dir": str(path.parent)})
    return records


def outcome_lines(records: list[dict[str, Any]]) -> list[str]:
    """``diverged: <run dir>: <error>`` lines, then ``failed: ...`` lines: what a sweep's caller must hear."""
    lines = []
    for status in ("diverged", "failed"):
        lines += [f"{status}: {r['run_dir']}: {r.get('error') or ''}" for r in records if r.get("status") == status]
    return lines


def counts(records: list[dict[str, Any]]) -> str:
    statuses = [record.get("status") for record in records]
    return ", ".join(f"{statuses.count(status)} {status}" for status in ("completed", "diverged", "failed"))


def _natural(path: Path) -> list:
    """``sweep/2`` before ``sweep/10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[/\\]", str(path))]


class MultirunOutcome(Callback):
    """Hydra callback: exit 1 naming the failed jobs after a multirun; tie joblib workers to the launcher."""

    def __init__(self) -> None:
        self.launcher_pid: int | None = None
        self.stamps: dict[str, int] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.launcher_pid = os.getpid()  # travels to joblib workers with the callback (pickled with Hydra's context)
        self.stamps = record_stamps(Path(str(config.hydra.sweep.dir)))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if in_parallel_worker(config, self.launcher_pid):
            end_with_launcher(self.launcher_pid)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = records_since(sweep_dir, self.stamps)
        if not records:
            return
        failed = sum(record.get("status") == "failed" for record in records)
        head = f"error: {failed} of {len(records)} jobs failed" if failed else f"{len(records)} jobs ran"
        lines = [f"{head} in {sweep_dir} ({counts(records)})", *outcome_lines(records)]
        sys.stderr.write("".join(f"rnnlab-train: {line}\n" for line in lines))
        sys.stderr.flush()
        if failed:
            raise SystemExit(EXIT_JOBS_FAILED)


def in_parallel_worker(config: DictConfig, launcher_pid: int | None) -> bool:
    """A job of a joblib multirun running in a worker process (not in the launcher itself, as with ``n_jobs=1``)."""
    hydra = config.get("hydra") or {}
    launcher = str((hydra.get("launcher") or {}).get("_target_", ""))
    return (hydra.get("mode") == RunMode.MULTIRUN and "joblib" in launcher
            and launcher_pid is not None and launcher_pid != os.getpid())


_watcher: threading.Thread | None = None  # one per process: a joblib worker runs many jobs


def end_with_launcher(launcher_pid: int, poll_s: float = 1.0, grace_s: float = 5.0) -> threading.Thread:
    """Start (once per process) a daemon thread that ends this worker when its launcher is gone: the launcher's pid
    no longer runs, or this process was re-parented (its parent died). The worker gets SIGTERM (Lightning stops
    at the next batch, loggers close), and ``os._exit`` after ``grace_s`` if it is still there."""
    global _watcher
    if _watcher is not None and _watcher.is_alive():
        return _watcher
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and running(launcher_pid):
            time.sleep(poll_s)
        log.error("the launcher (pid %d) is gone; ending this worker (pid %d)", launcher_pid, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + signal.SIGTERM)

    _watcher = threading.Thread(target=watch, name="end-with-launcher", daemon=True)
    _watcher.start()
    return _watcher


def running(pid: int) -> bool:
    """The process ``pid`` exists and is not a zombie (a killed launcher stays one until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): existence is all we know
    return state not in ("Z", "X")
