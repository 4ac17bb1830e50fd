"""The run record's schema (CONTRIBUTING.md, 'The run record'): write_record refuses a bad record, read_record names
a bad file."""

from __future__ import annotations

import json

import pytest

from conftest import train_in_process
from rnnlab.record import SCHEMA, RecordError, check_record, read_record, write_record


def good_record(**changes) -> dict:
    record = {"status": "completed", "error": None, "model": "lstm", "data": "adding", "optimizer": "adam", "seed": 0,
              "params": 100, "steps": 10, "epochs": 1, "metrics": {"test/mse": 0.1}, "timing": {"step_ms": 1.0},
              "memory": {}, "peak_memory_mb": 50.0, "env": {"torch": "2"}, "config": {"name": "x"}}
    return {**record, **changes}


def test_a_real_record_passes_the_schema(tmp_path, one_thread):
    record = train_in_process(tmp_path, "debug=fast", "data.train_size=128", "data.val_size=64", "data.test_size=64",
                              "model.hidden_size=8")
    assert record["status"] == "completed" and check_record(record) == []
    assert read_record(tmp_path)["metrics"] == record["metrics"]  # a run directory or its summary.json


def test_write_record_refuses_a_record_missing_a_key(tmp_path):
    record = good_record()
    del record["steps"]
    with pytest.raises(RecordError, match=r"bad/summary.json: refused to write a bad record: missing keys steps"):
        write_record(tmp_path / "bad", record)
    assert not (tmp_path / "bad" / "summary.json").exists()


@pytest.mark.parametrize("change, reason", [
    ({"steps": "x"}, "steps is 'x', not int"),
    ({"seed": True}, "seed is True, not int"),
    ({"error": 3}, "error is 3, not str | None"),
    ({"status": "done"}, "status is 'done', not one of completed, diverged, failed"),
    ({"metrics": {"test/mse": "low"}}, "metrics['test/mse'] is 'low', not a number"),
    ({"config": None}, "config is None, not dict"),
])
def test_wrong_types_are_named(tmp_path, change, reason):
    record = good_record(**change)
    assert check_record(record) == [reason]
    (tmp_path / "summary.json").write_text(json.dumps(record))
    with pytest.raises(RecordError) as error:
        read_record(tmp_path / "summary.json")
    assert str(error.value) == f"{tmp_path / 'summary.json'}: {reason}"


@pytest.mark.parametrize("text, reason", [
    ('{"status": "completed", "metr', "not valid JSON (truncated?)"),
    ("[]", "not a JSON object but list"),
    ('{"status": "completed"}', "missing keys " + ", ".join(key for key in SCHEMA if key != "status")),
    ("", "not valid JSON"),
])
def test_bad_files_raise_one_error_naming_the_file(tmp_path, text, reason):
    path = tmp_path / "summary.json"
    path.write_text(text)
    with pytest.raises(RecordError) as error:
        read_record(path)
    assert error.value.path == path and str(error.value).startswith(f"{path}: {reason}")


def test_more_keys_and_nan_metrics_are_fine(tmp_path):
    write_record(tmp_path, good_record(status="diverged", metrics={"train/loss": float("nan")}, extra={"a": 1}))
    assert read_record(tmp_path)["extra"] == {"a": 1}
