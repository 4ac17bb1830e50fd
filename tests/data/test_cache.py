"""The preprocessing cache and downloads: no pickle code runs, damaged entries are rebuilt, no temporary file stays."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import time

import pytest
import torch

from rnnlab.data.cache import cache_key, cached, download
from rnnlab.errors import ConfigError

SETTINGS = {"version": 1, "seq_len": 8}


class Planted:
    """What an attacker pickles: unpickling it touches ``marker`` (any code could run there)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def loader_value() -> tuple[list[str], dict[str, torch.Tensor]]:
    """What the text loaders cache: a vocabulary and each split's ids (views of one tensor, as Tiny Shakespeare's)."""
    ids = torch.arange(20) % 7
    return ["<unk>", "a", "é", " "], {"train": ids[:14], "val": ids[14:17], "test": ids[17:]}


def setup_source(tmp_path: pathlib.Path) -> tuple[pathlib.Path, list[pathlib.Path], str]:
    source = tmp_path / "corpus.txt"
    source.write_text("some text")
    return tmp_path / "cache", [source], cache_key("demo", SETTINGS, [source])


def counting(value):
    calls = []

    def build():
        calls.append(1)
        return value

    return build, calls


def entries(cache: pathlib.Path, key: str) -> list[pathlib.Path]:
    return sorted(cache.glob(f"{key}.*.pt"))


def assert_same(loaded, original) -> None:
    assert type(loaded) is type(original)
    if isinstance(original, torch.Tensor):
        assert loaded.dtype == original.dtype and torch.equal(loaded, original)
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original)
        for a, b in zip(loaded, original):
            assert_same(a, b)
    elif isinstance(original, dict):
        assert list(loaded) == list(original)
        for k in original:
            assert_same(loaded[k], original[k])
    else:
        assert loaded == original


@pytest.mark.parametrize("form", ["torch.save", "pickle"])
def test_a_planted_pickle_is_not_run_and_the_entry_is_rebuilt(tmp_path, caplog, form):
    cache, sources, key = setup_source(tmp_path)
    marker = tmp_path / "MARKER"
    if form == "torch.save":
        buffer = io.BytesIO()
        torch.save({"vocabulary": Planted(marker)}, buffer)
        payload = buffer.getvalue()
        torch.load(io.BytesIO(payload), weights_only=False)
    else:
        payload = pickle.dumps(Planted(marker), protocol=2)
        pickle.loads(payload)
    assert marker.exists(), "the payload must be live, or this test proves nothing"
    marker.unlink()
    cache.mkdir()
    planted = cache / f"{key}.{hashlib.sha256(payload).hexdigest()}.pt"  # its checksum matches: only the load guards
    planted.write_bytes(payload)

    build, calls = counting(loader_value())
    with caplog.at_level(logging.WARNING, logger="rnnlab.data.cache"):
        value = cached(cache, "demo", SETTINGS, sources, build)

    assert not marker.exists()
    assert_same(value, loader_value()) and calls == [1]
    assert not planted.exists() and str(planted) in caplog.text
    assert len(entries(cache, key)) == 1
    assert_same(cached(cache, "demo", SETTINGS, sources, counting(None)[0]), loader_value())


@pytest.mark.parametrize("damage", ["flipped", "truncated", "garbage", "empty"])
def test_a_damaged_entry_is_named_deleted_and_rebuilt(tmp_path, caplog, damage):
    cache, sources, key = setup_source(tmp_path)
    cached(cache, "demo", SETTINGS, sources, lambda: loader_value())
    (entry,) = entries(cache, key)
    data = bytearray(entry.read_bytes())
    if damage == "flipped":  # one id changed on disk: torch.load would read it without complaint
        data[data.find(loader_value()[1]["train"].numpy().tobytes()) + 8] ^= 0xFF
        entry.write_bytes(data)
    elif damage == "truncated":  # a copy cut short
        entry.write_bytes(data[:100])
    else:  # bytes named by their own checksum: only the load can refuse them
        data = b"not a torch file" if damage == "garbage" else b""
        entry.unlink()
        entry = cache / f"{key}.{hashlib.sha256(data).hexdigest()}.pt"
        entry.write_bytes(data)

    build, calls = counting(loader_value())
    with caplog.at_level(logging.WARNING, logger="rnnlab.data.cache"):
        value = cached(cache, "demo", SETTINGS, sources, build)

    assert_same(value, loader_value()) and calls == [1]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(entry) in warning.getMessage() and "corrupt" in warning.getMessage()
    (rebuilt,) = entries(cache, key)
    assert rebuilt != entry or damage in ("flipped", "truncated")
    assert_same(cached(cache, "demo", SETTINGS, sources, counting(None)[0]), loader_value())


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_partials_are_removed_and_a_live_writers_kept(tmp_path):
    cache, sources, key = setup_source(tmp_path)
    cache.mkdir()
    host = socket.gethostname()
    dead = cache / f"{key}.{host}.{dead_pid()}.partial"
    old = cache / "tmpa1b2c3.partial"  # an earlier naming, unmodified for two hours
    live = cache / f"other-0123.{host}.{os.getppid()}.partial"
    elsewhere = cache / f"{key}.another-host.1.partial"  # a fresh file of a writer this host cannot see
    for path in (dead, old, live, elsewhere):
        path.write_bytes(b"")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    value = cached(cache, "demo", SETTINGS, sources, lambda: loader_value())

    assert_same(value, loader_value())
    assert sorted(cache.glob("*.partial")) == sorted([live, elsewhere])
    assert len(entries(cache, key)) == 1


def test_a_build_that_raises_leaves_nothing(tmp_path):
    cache, sources, key = setup_source(tmp_path)

    def build():
        raise RuntimeError("bad source")

    with pytest.raises(RuntimeError, match="bad source"):
        cached(cache, "demo", SETTINGS, sources, build)
    assert not cache.exists() or not any(cache.iterdir())


def test_a_failed_write_leaves_no_partial(tmp_path, monkeypatch):
    cache, sources, key = setup_source(tmp_path)

    def disk_full(value, file):
        (file.write if hasattr(file, "write") else pathlib.Path(file).write_bytes)(b"half an entry")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        cached(cache, "demo", SETTINGS, sources, lambda: loader_value())
    assert not any(cache.iterdir())


def test_a_value_torch_cannot_load_safely_is_refused_before_writing(tmp_path):
    cache, sources, key = setup_source(tmp_path)
    with pytest.raises(TypeError, match=r"value\['splits'\]\[1\] is a pathlib"):
        cached(cache, "demo", SETTINGS, sources, lambda: {"splits": [torch.ones(2), pathlib.Path("x")]})
    assert not cache.exists()


def test_what_the_loaders_cache_round_trips(tmp_path):
    cache, sources, key = setup_source(tmp_path)
    vocabulary, ids = loader_value()
    value = {
        "text": (vocabulary, ids),
        "imdb": {"vocabulary": vocabulary, "splits": {"train": ([torch.tensor([1, 2, 3])], [torch.tensor(1)])}},
        "audio": {"test": ([torch.randn(7, 13)], [torch.tensor([3, 1])])},
        "video": [torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)],
        "scalars": [1, 2.5, True, None, "x"],
    }
    assert_same(cached(cache, "demo", SETTINGS, sources, lambda: value), value)

    build, calls = counting(None)
    loaded = cached(cache, "demo", SETTINGS, sources, build)
    assert calls == [] and len(entries(cache, key)) == 1
    assert_same(loaded, value)
    splits = loaded["text"][1]
    assert splits["val"].untyped_storage().data_ptr() == splits["train"].untyped_storage().data_ptr()  # still views


def test_download_removes_stale_partials_and_leaves_none(tmp_path):
    source = tmp_path / "archive.tar.gz"
    source.write_bytes(b"archive bytes")
    sha = hashlib.sha256(b"archive bytes").hexdigest()
    destination = tmp_path / "data" / "archive.tar.gz"
    destination.parent.mkdir()
    stale = destination.with_name(f"{destination.name}.{socket.gethostname()}.{dead_pid()}.partial")
    stale.write_bytes(b"")

    assert download(source.as_uri(), destination, sha) == destination

    assert destination.read_bytes() == b"archive bytes"
    assert not list(destination.parent.glob("*.partial"))


@pytest.mark.parametrize("failure", ["wrong checksum", "unreachable"])
def test_a_failed_download_leaves_no_partial(tmp_path, failure):
    source = tmp_path / "archive.tar.gz"
    source.write_bytes(b"archive bytes")
    url = source.as_uri() if failure == "wrong checksum" else (tmp_path / "missing").as_uri()
    destination = tmp_path / "data" / "archive.tar.gz"
    with pytest.raises(ConfigError, match="sha256" if failure == "wrong checksum" else "could not fetch"):
        download(url, destination, "0" * 64)
    assert not any(destination.parent.iterdir())
