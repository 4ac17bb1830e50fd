"""Exact resume: a run SIGKILLed at any point and resumed ends with the uninterrupted run's metrics and one unbroken
``metrics.csv`` (rnnlab.training.resume, rnnlab.data.base.EpochShuffle).

Each run is a real ``rnnlab-train`` process; ``tests/kill_points.py`` kills it at a chosen point, once (a marker file
lets the resumed run, given the very same config, train through). Dropout makes the training randomness matter.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import REPO, read_record, run_cli

# 8 steps an epoch, 6 epochs; a resume point every 5 steps and after each validation
RUN = ["data=adding", "data.train_size=512", "data.val_size=64", "data.test_size=64", "model.hidden_size=8",
       "trainer.max_epochs=6", "callbacks=minimal", "callbacks.resume_point.every_n_steps=5", "regularizer=dropout",
       "+callbacks.kill._target_=kill_points.KillAt"]
KILL_POINTS = {
    "before the first resume point": ["+callbacks.kill.step=3"],
    "mid-epoch": ["+callbacks.kill.step=37"],
    "last step of an epoch, before its validation": ["+callbacks.kill.step=40"],
    "during validation": ["+callbacks.kill.validation_epoch=2", "+callbacks.kill.validation_batch=0"],
}
ENV = {"PYTHONPATH": str(REPO / "tests")}


def run(tmp_path: Path, name: str, kill: list[str], marker: Path):
    return run_cli(tmp_path, *RUN, *kill, f"+callbacks.kill.marker={marker}", f"hydra.run.dir={tmp_path / name}",
                   env=ENV)


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("whole")
    marker = tmp_path / "never"
    marker.touch()  # the kill point never fires
    done = run(tmp_path, "whole", KILL_POINTS["mid-epoch"], marker)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp_path / "whole"


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_run_resumes_to_the_uninterrupted_runs_metrics(tmp_path, uninterrupted, point):
    marker = tmp_path / "killed"
    killed = run(tmp_path, "cut", KILL_POINTS[point], marker)
    assert killed.returncode == -9 and marker.exists(), killed.stderr[-2000:]
    assert not (tmp_path / "cut" / "summary.json").exists()

    resumed = run(tmp_path, "cut", KILL_POINTS[point], marker)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    record, reference = read_record(tmp_path / "cut"), read_record(uninterrupted)
    expected_point = point != "before the first resume point"
    assert (record["resumed_from"] is not None) == expected_point
    assert record["steps"] == reference["steps"] == 48
    for name, value in reference["metrics"].items():
        assert record["metrics"][name] == pytest.approx(value, rel=1e-7, abs=1e-9), name
    assert rows(tmp_path / "cut") == rows(uninterrupted)  # every step and epoch row, once, with equal values
    assert record["timing"]["train_s"] > 0


def test_the_resume_point_holds_what_lightning_leaves_out(tmp_path):
    """Generators, the epoch's training means so far and the CSV row count travel in last.ckpt."""
    import torch

    marker = tmp_path / "killed"
    killed = run(tmp_path, "cut", ["+callbacks.kill.step=12"], marker)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 10
    state = next(value for key, value in checkpoint["callbacks"].items() if key.startswith("ResumePoint"))
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert len(state["training_log"]["values"]["train/loss"]) == 2  # steps 9 and 10 of epoch 2 (8 steps an epoch)
    header_and_rows = (tmp_path / "cut" / "csv" / "metrics.csv").read_text().splitlines()
    assert state["csv_rows"] == [len(header_and_rows) - 1]
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["seed"] == 0
