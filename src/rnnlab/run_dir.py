"""A run directory belongs to one configuration and one process at a time.

``rnnlab-train`` locks the directory for its lifetime (``flock``: the operating system releases it on any exit, a
SIGKILL included, so a dead run never leaves a stale lock behind) and claims it for its resolved configuration
(``config.json``). A later run resumes there only with the same resolved config, compared as data; another config
is refused, or with ``resume=false`` starts over in a fresh subdirectory. Nothing a run wrote is overwritten by a
run of another configuration.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict
from pytorch_lightning.utilities import rank_zero_only

from rnnlab.errors import ConfigError
from rnnlab.record import RECORD_NAME, RecordError, read_record, resolved_config

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
LOCK_NAME = ".lock"
RESTART_PREFIX = "restart-"
NOT_COMPARED = ("resume", "logger", "tags")  # how a run is resumed, logged and labelled: not what it computes
FINAL_STATUSES = ("completed", "diverged")  # a re-run sweep skips jobs that reached these; it re-runs failed ones


@contextmanager
def claimed(cfg: DictConfig) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """This job's run directory, locked (by rank 0, which writes the record) and claimed for ``cfg`` while the
    context lasts, with the record an earlier attempt of this config left there (None if none).

    A ``restart-N`` directory chosen by :func:`claim` becomes ``cfg.paths.output_dir``."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    key = "hydra.sweep.dir" if hydra_cfg.mode == RunMode.MULTIRUN else "hydra.run.dir"
    with locked(run_dir, key) if rank_zero_only.rank == 0 else nullcontext():
        chosen = claim(run_dir, resolved_config(cfg), list(hydra_cfg.overrides.task), cfg.resume, key)
        if chosen != run_dir:
            with open_dict(cfg):
                cfg.paths.output_dir = str(chosen)
        yield chosen, read_earlier_record(chosen)


def read_earlier_record(run_dir: Path) -> dict[str, Any] | None:
    """The record an earlier attempt of this run (same config: :func:`claim`) left in ``run_dir``, or None.

    A record that will be replaced (a failed attempt) or cannot be read is kept aside as ``summary.attempt-N.json``.
    """
    path = run_dir / RECORD_NAME
    if not path.exists():
        return None
    try:
        earlier = read_record(path)
    except RecordError as error:
        log.warning("%s; kept as %s, the run goes on", error, keep_aside(path).name)
        return None
    if earlier["status"] in FINAL_STATUSES:
        log.info("run already %s, skipped (resume=true): %s", earlier["status"], run_dir)
    else:
        keep_aside(path)
    return earlier


def keep_aside(path: Path) -> Path:
    aside = first_free(path.parent, "summary.attempt-{n}.json")
    path.replace(aside)
    return aside


def first_free(folder: Path, pattern: str) -> Path:
    """``folder / pattern.format(n=N)`` for the least N >= 1 that does not exist yet."""
    return next(folder / pattern.format(n=n) for n in range(1, 10**6) if not (folder / pattern.format(n=n)).exists())


@contextmanager
def locked(run_dir: Path, key: str) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir``; a second process is refused with the holder's pid and host."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            key, f"{run_dir} is in use by {holder}; wait for it to end or choose another directory"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"rnnlab-train pid {os.getpid()} on {platform.node()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def claim(run_dir: Path, config: dict[str, Any], overrides: list[str], resume: bool, key: str) -> Path:
    """The directory this run writes to: ``run_dir`` when it is free or holds a run of this very config; with
    ``resume=false`` and an occupied ``run_dir``, a fresh ``restart-N`` subdirectory. Another config with
    ``resume=true`` raises ConfigError naming the first difference."""
    occupied = (run_dir / CONFIG_NAME).exists() or (run_dir / RECORD_NAME).exists()
    if occupied and not resume:
        fresh = first_free(run_dir, RESTART_PREFIX + "{n}")
        log.info("%s holds an earlier run (resume=false): starting over in %s", run_dir, fresh)
        run_dir = fresh
    elif occupied:
        difference = difference_from_claim(run_dir, config, overrides)
        if difference:
            raise ConfigError(
                key, f"{run_dir} holds a run of another configuration ({difference}); pass resume=false to start over "
                f"in a fresh subdirectory, or choose another {key}")
    run_dir.mkdir(parents=True, exist_ok=True)
    partial = run_dir / (CONFIG_NAME + ".partial")
    partial.write_text(json.dumps(config, indent=2, default=str) + "\n")
    partial.replace(run_dir / CONFIG_NAME)
    return run_dir


def difference_from_claim(run_dir: Path, config: dict[str, Any], overrides: list[str]) -> str | None:
    """The first difference between this run and the one ``run_dir`` belongs to: its ``config.json`` compared as data;
    for a directory from before config.json existed, its record's command-line overrides, in any order."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        try:
            earlier = json.loads((run_dir / RECORD_NAME).read_text()).get("overrides")
        except (OSError, ValueError, AttributeError):
            earlier = None
        if not isinstance(earlier, list):
            return None  # not a record: it is kept aside when the run starts (read_earlier_record)
        return None if sorted(earlier) == sorted(overrides) else f"overrides {earlier} -> {overrides}"
    try:
        claimed = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError("hydra.run.dir", f"{path} is unreadable ({error}); move it away to reuse {run_dir}") from None
    return first_difference(comparable(claimed), comparable(config))


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in NOT_COMPARED}


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """``key: old -> new`` for the first key (in sorted order) where two configs differ, or None when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                return f"{name}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
            found = first_difference(old[key], new[key], name)
            if found:
                return found
        return None
    return None if old == new else f"{prefix}: {old!r} -> {new!r}"
