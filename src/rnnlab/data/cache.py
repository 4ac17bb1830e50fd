"""Preprocessing cache and checksummed downloads shared by the real-data loaders.

A cache entry is keyed by the dataset name, the preprocessing settings and the source files' sizes and mtimes, so a
second run with the same settings loads instead of recomputing, and a changed setting or source never reads a stale
entry. Entries hold only tensors, str, int, float, bool, None and lists, tuples and dicts of these, and are read with
``torch.load(weights_only=True)``: a planted file cannot run code. Each entry's name carries the sha256 of its bytes
(``<key>.<sha256>.pt``), checked before loading; an entry that fails the check or the load is logged, deleted and
rebuilt. Files are written to a temporary ``<target>.<host>.<pid>.partial`` renamed into place, removed when the
write fails, and removed by a later call once their writer is dead (``remove_stale_partials``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import socket
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import torch

from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)

STALE_AFTER_S = 3600  # a temporary file unmodified this long is abandoned, whoever wrote it
PLAIN_TYPES = (str, int, float, bool, type(None))


def cache_key(name: str, settings: dict[str, Any], sources: list[Path]) -> str:
    stamp = [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in sources]
    payload = json.dumps({"name": name, "settings": settings, "sources": stamp}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def partial_path(target: Path) -> Path:
    """Where this process writes ``target`` before renaming it into place."""
    return target.with_name(f"{target.name}.{socket.gethostname()}.{os.getpid()}.partial")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (where that cannot be asked without a signal: assume it does)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)  # signal 0: only the existence check
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(folder: Path, prefix: str = "") -> None:
    """Delete the ``<prefix>*.partial`` files in ``folder`` left by killed writers.

    A temporary ``<target>.<host>.<pid>.partial`` is stale when this host wrote it and that pid no longer runs, or
    when nothing has modified it for ``STALE_AFTER_S`` (writers on other hosts of a shared folder, other names). A
    live writer's file, a concurrent run's included, is kept.
    """
    for temp in folder.glob(f"{glob.escape(prefix)}*.partial"):
        writer, _, pid = temp.name.removesuffix(".partial").rpartition(".")
        ours = writer.endswith(f".{socket.gethostname()}") and pid.isdigit()
        try:
            abandoned = time.time() - temp.stat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:  # its writer renamed or removed it meanwhile
            continue
        if temp.is_file() and (abandoned or (ours and not pid_alive(int(pid)))):
            log.info("removing %s, left by an interrupted writer", temp)
            temp.unlink(missing_ok=True)


def check_plain(value: Any, where: str = "value") -> None:
    """Raise TypeError unless ``value`` is made of what ``torch.load(weights_only=True)`` reads back."""
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif type(value) is dict:
        for key, item in value.items():
            check_plain(key, f"a key of {where}")
            check_plain(item, f"{where}[{key!r}]")
    elif not (isinstance(value, torch.Tensor) or type(value) in PLAIN_TYPES):
        raise TypeError(
            f"cached() stores tensors, str, int, float, bool, None and lists, tuples and dicts of these; {where} is "
            f"a {type(value).__module__}.{type(value).__qualname__}: convert it in the build function"
        )


def load_entry(path: Path) -> Any:
    """The value stored at ``path`` (``<key>.<sha256>.pt``); raises when the bytes or the contents are bad."""
    expected = path.stem.rpartition(".")[2]
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"its sha256 is {actual[:12]}..., its name says {expected[:12]}...")
    return torch.load(path, weights_only=True)


def reason(error: Exception) -> str:
    """One line for the log; of torch's paragraphs on a refused load, only the WeightsUnpickler error's words."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = "refused by weights_only: " + text.split("WeightsUnpickler error:", 1)[1]
    detail = " ".join(text.split()).split(" Please use")[0].split(" Check the documentation")[0]
    return ": ".join(filter(None, (type(error).__name__, detail)))


def cached(cache_dir: str | Path, name: str, settings: dict[str, Any], sources: list[Path], build: Callable[[], Any]):
    """``build()``'s result, computed once per (name, settings, sources) and stored under ``cache_dir``.

    ``build()`` must return tensors, str, int, float, bool, None and lists, tuples and dicts of these (TypeError
    otherwise). A corrupt entry is logged as a WARNING naming it, deleted and rebuilt.
    """
    folder = Path(cache_dir)
    key = cache_key(name, settings, sources)
    if folder.is_dir():
        remove_stale_partials(folder)
        for entry in sorted(folder.glob(f"{glob.escape(key)}.*.pt")):
            try:
                value = load_entry(entry)
            except Exception as error:  # torch.load raises several types for damaged or refused files
                log.warning("cache entry %s is corrupt (%s); deleting and rebuilding it", entry, reason(error))
                entry.unlink(missing_ok=True)
                continue
            log.info("loading cached %s from %s", name, entry)
            return value
    value = build()
    check_plain(value)
    folder.mkdir(parents=True, exist_ok=True)
    partial = partial_path(folder / key)
    try:
        torch.save(value, partial)
        entry = folder / f"{key}.{sha256_of(partial)}.pt"
        os.replace(partial, entry)
    finally:
        partial.unlink(missing_ok=True)
    log.info("cached %s at %s", name, entry)
    return value


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, sha256: str) -> None:
    actual = sha256_of(path)
    if actual != sha256:
        raise ConfigError(
            "root", f"{path} has sha256 {actual[:12]}..., expected {sha256[:12]}...; delete it and download again"
        )


def download(url: str, destination: Path, sha256: str) -> Path:
    """Fetch ``url`` to ``destination`` unless a file with the right checksum is already there."""
    if destination.is_file():
        verify_checksum(destination, sha256)
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(destination.parent, f"{destination.name}.")
    partial = partial_path(destination)
    log.info("downloading %s", url)
    try:
        try:
            urllib.request.urlretrieve(url, partial)
        except OSError as error:
            raise ConfigError("download", f"could not fetch {url} ({error}); set data.root to a local copy") from None
        verify_checksum(partial, sha256)
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def extract_tar(tar: tarfile.TarFile, destination: str | Path) -> None:
    """Extract ``tar`` into ``destination`` refusing members that would land outside it or are links or devices:
    tarfile's ``data`` filter where Python has it (3.11.4+), the same check by hand before that."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(destination, filter="data")
        return
    root = Path(destination).resolve()
    for member in tar.getmembers():
        if not (root / member.name).resolve().is_relative_to(root) or not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"refusing archive member {member.name!r} (outside the folder, a link or a device)")
    tar.extractall(destination)
