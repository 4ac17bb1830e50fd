"""A real tiny multirun (rnnlab-train -m, as a subprocess) turned into a report."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import run_cli
from rnnlab.report.cli import main


@pytest.mark.slow  # four training jobs: about 15 s on an idle 2-core machine, 45 s on a busy one
def test_report_of_a_real_multirun(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    result = run_cli(tmp_path, "-m", "model=elman,lstm", "seed=0,1", "data=adding", "data.seq_len=10",
                     "data.train_size=128", "data.val_size=64", "data.test_size=64", "debug=fast",
                     "callbacks=minimal", "logger=csv", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    records = {path.parent.name: json.loads(path.read_text()) for path in sweep.glob("*/summary.json")}
    assert len(records) == 4 and all(r["status"] == "completed" for r in records.values())

    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--baseline", "model=elman"]) == 0
    assert "4 completed, 0 diverged, 0 failed" in capsys.readouterr().out
    with open(out / "arms.csv") as handle:
        arms = {row["arm"]: row for row in csv.DictReader(handle)}
    assert set(arms) == {"model=elman", "model=lstm"}
    for model in ("elman", "lstm"):
        mine = [r for r in records.values() if r["model"] == model]
        row = arms[f"model={model}"]
        assert row["test/mse_n"] == "2" and row["primary_metric"] == "test/mse"
        assert float(row["params_mean"]) == mine[0]["params"]
        assert float(row["test/mse_mean"]) == sum(r["metrics"]["test/mse"] for r in mine) / 2
    assert arms["model=lstm"]["baseline"] == "model=elman" and arms["model=lstm"]["p_value"] != ""
    with open(out / "claims.csv") as handle:
        claims = {row["claim"]: row for row in csv.DictReader(handle)}
    assert claims["LSTM has more parameters than a simple RNN"]["verdict"] == "supported"
    page = (out / "report.html").read_text()
    assert 'alt="Learning curves"' in page and 'alt="test/mse vs parameters"' in page  # from the CSV logger's files
