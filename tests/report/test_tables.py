"""Arm tables: Welch's test against the baseline arm with all other swept settings equal; written files."""

from __future__ import annotations

import csv
import re
import statistics

import pytest

from fake_records import make_record
from rnnlab.report.cli import main
from rnnlab.report.collect import group_studies, load_records
from rnnlab.report.stats import welch_p
from rnnlab.report.tables import baseline_arms, default_baseline_spec, study_table

MSE = {("lstm", 10): [0.010, 0.011, 0.012], ("lstm", 50): [0.020, 0.022, 0.021],
       ("gru", 10): [0.030, 0.034, 0.032], ("gru", 50): [0.0205, 0.0210, 0.0215]}


def grid(root):
    """model x data.seq_len x 3 seeds, plus a failed and a diverged gru run at T=50 (both counted, not averaged)."""
    for (model, length), values in MSE.items():
        for seed, mse in enumerate(values):
            make_record(root / f"{model}_{length}_{seed}", model=model, seed=seed,
                        overrides=[f"model={model}", f"data.seq_len={length}", f"seed={seed}"],
                        config={"data": {"seq_len": length}}, metrics={"test/mse": mse, "val/loss": 2 * mse},
                        params=17473 if model == "lstm" else 13121, step_ms=6.0 if model == "lstm" else 5.0)
    for seed, status in ((3, "failed"), (4, "diverged")):
        make_record(root / f"gru_50_{seed}", model="gru", seed=seed, status=status,
                    overrides=["model=gru", "data.seq_len=50", f"seed={seed}"], config={"data": {"seq_len": 50}})


def test_each_arm_is_tested_against_the_baseline_with_the_same_other_settings(tmp_path):
    grid(tmp_path)
    [study] = group_studies(load_records([tmp_path]))
    assert study.swept == ["model", "data.seq_len"]
    assert default_baseline_spec(study) == "model=gru"  # first arm's value of the first swept key
    table = study_table(study, "test/mse", "model=lstm")
    rows = {row.arm.label: row for row in table.rows}
    gru10 = rows["model=gru data.seq_len=10"]
    assert gru10.baseline.label == "model=lstm data.seq_len=10"
    assert gru10.p_value == pytest.approx(welch_p(MSE[("gru", 10)], MSE[("lstm", 10)]))
    assert gru10.p_value < 0.01  # 0.032 vs 0.011, clearly apart
    gru50 = rows["model=gru data.seq_len=50"]
    assert gru50.baseline.label == "model=lstm data.seq_len=50" and gru50.p_value > 0.05
    assert len(gru50.arm.runs) == 5 and gru50.summaries["test/mse"].n == 3
    assert rows["model=lstm data.seq_len=50"].is_baseline
    # a bare value names the arm too; a spec that matches nothing is an error naming the arms
    assert baseline_arms(study, "lstm")[0].label == "model=lstm data.seq_len=10"
    with pytest.raises(ValueError, match="matches no arm"):
        baseline_arms(study, "model=rhn")


def test_markdown_csv_and_html_are_written(tmp_path, capsys):
    grid(tmp_path / "runs")
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--baseline", "model=lstm"]) == 0
    console = capsys.readouterr().out
    assert "12 completed, 1 diverged, 1 failed" in console and "failed on purpose" in console
    with open(out / "arms.csv") as handle:
        arms = {row["arm"]: row for row in csv.DictReader(handle)}
    row = arms["model=gru data.seq_len=10"]
    assert float(row["test/mse_mean"]) == pytest.approx(statistics.mean(MSE[("gru", 10)]))
    assert float(row["test/mse_std"]) == pytest.approx(statistics.stdev(MSE[("gru", 10)]))
    assert row["test/mse_n"] == "3" and row["baseline"] == "model=lstm data.seq_len=10"
    assert float(row["p_value"]) == pytest.approx(welch_p(MSE[("gru", 10)], MSE[("lstm", 10)]))
    gru50 = arms["model=gru data.seq_len=50"]
    assert (gru50["runs"], gru50["completed"], gru50["failed"], gru50["diverged"]) == ("5", "3", "1", "1")
    markdown = (out / "report.md").read_text()
    assert "| model | data.seq_len | runs | n | failed | diverged |" in markdown
    assert re.search(r"\| gru \| 10 \| 3 \| 3 \| 0 \| 0 \| 13,121 \|.*\| 0\.032 ± 0\.002 \| [0-9.e-]+\*\* \|", markdown)
    assert "## Table IV: architectures" in markdown and "GRU has fewer parameters than LSTM" in markdown
    with open(out / "claims.csv") as handle:
        claims = {row["claim"]: row for row in csv.DictReader(handle)}
    assert claims["GRU has fewer parameters than LSTM"]["verdict"] == "supported"
    assert claims["GRU performs comparably to LSTM"]["verdict"] == "mixed"  # T=10 differs, T=50 within ±10%
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") >= 2
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing fetched
    with open(out / "runs.csv") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 14


def test_an_arm_spec_keeps_list_values_whole():
    from rnnlab.report.tables import parse_arm_spec

    assert parse_arm_spec("callbacks=[minimal,early_stopping]") == [("callbacks", "[minimal,early_stopping]")]
    assert parse_arm_spec("model=lstm,data.seq_len=50") == [("model", "lstm"), ("data.seq_len", "50")]
    assert parse_arm_spec("regularizer=[l2,zoneout] lstm") == [("regularizer", "[l2,zoneout]"), (None, "lstm")]
