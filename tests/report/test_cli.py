"""rnnlab-report lists every record under a directory, failures included."""

from __future__ import annotations

import json

from fake_records import make_record
from rnnlab.report.cli import main


def test_report_lists_runs_and_counts_statuses(tmp_path, capsys):
    make_record(tmp_path / "0", model="lstm", params=17473, metrics={"test/mse": 0.0123}, step_ms=4.5)
    make_record(tmp_path / "1", model="gru", status="failed", error="model.hidden_size: must be positive")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "0.0123" in out and "17,473" in out and "must be positive" in out
    assert "1 completed, 0 diverged, 1 failed" in out


def test_bad_records_are_skipped_with_a_warning_naming_each_file(tmp_path, capsys, caplog):
    make_record(tmp_path / "good", model="lstm", metrics={"test/mse": 0.0123})
    bad = {"truncated": '{"status": "completed", "metr', "list": "[]", "bare": '{"status": "completed"}',
           "mistyped": json.dumps({**make_record(tmp_path / "x", model="gru"), "steps": "x"})}
    (tmp_path / "x" / "summary.json").unlink()
    for name, text in bad.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(text)
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 completed, 0 diverged, 0 failed, 4 skipped (unreadable records)" in out  # {"status": ...} is no run
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipped" in r.getMessage()]
    assert len(warnings) == 4
    for name, reason in [("truncated", "not valid JSON"), ("list", "not a JSON object but list"),
                         ("bare", "missing keys error, model"), ("mistyped", "steps is 'x', not int")]:
        path = str(tmp_path / name / "summary.json")
        assert any(path in warning and reason in warning for warning in warnings), (name, warnings)
        assert f"skipped: {path}: " in out
        assert path in (tmp_path / "out" / "report.md").read_text()


def test_only_bad_records_is_no_records(tmp_path, capsys):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text('{"status": "completed"}')
    assert main([str(tmp_path)]) == 1
    assert "no run records (summary.json)" in capsys.readouterr().err


def test_report_on_a_missing_directory_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
