"""rnnlab-report lists every record under a directory, failures included."""

from __future__ import annotations

from rnnlab.record import write_record
from rnnlab.report.cli import main


def test_report_lists_runs_and_counts_statuses(tmp_path, capsys):
    write_record(tmp_path / "0", {"status": "completed", "model": "lstm", "data": "adding", "optimizer": "adam",
                                  "seed": 0, "params": 17473, "steps": 10, "metrics": {"test/mse": 0.0123},
                                  "timing": {"step_ms": 4.5}, "error": None})
    write_record(tmp_path / "1", {"status": "failed", "model": "gru", "error": "model.hidden_size: must be positive"})
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "0.0123" in out and "17,473" in out and "must be positive" in out
    assert "1 completed, 0 diverged, 1 failed" in out


def test_report_on_a_missing_directory_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
