"""Preprocessing cache and checksummed downloads shared by the real-data loaders.

A cache entry is keyed by the dataset name, the preprocessing settings and the source files' sizes and mtimes, so a
second run with the same settings loads instead of recomputing, and a changed setting or source never reads a stale
entry. Writes go to a temporary file renamed into place: an interrupted run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Callable

import torch

from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)


def cache_key(name: str, settings: dict[str, Any], sources: list[Path]) -> str:
    stamp = [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in sources]
    payload = json.dumps({"name": name, "settings": settings, "sources": stamp}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def cached(cache_dir: str | Path, name: str, settings: dict[str, Any], sources: list[Path], build: Callable[[], Any]):
    """``build()``'s result, computed once per (name, settings, sources) and stored under ``cache_dir``."""
    path = Path(cache_dir) / f"{cache_key(name, settings, sources)}.pt"
    if path.is_file():
        log.info("loading cached %s from %s", name, path)
        return torch.load(path, weights_only=False)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as handle:
        torch.save(value, handle)
    os.replace(handle.name, path)
    log.info("cached %s at %s", name, path)
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
    partial = destination.with_name(destination.name + ".partial")
    log.info("downloading %s", url)
    try:
        urllib.request.urlretrieve(url, partial)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ConfigError("download", f"could not fetch {url} ({error}); set data.root to a local copy") from None
    try:
        verify_checksum(partial, sha256)
    except ConfigError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(destination)
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
