"""rnnlab-train end to end: records, seeds, divergence, loggers, sweeps, DDP on CPU, and the default job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import read_record, run_cli, train_in_process

FAST = ["debug=fast", "data.train_size=256", "data.val_size=64", "data.test_size=64"]


def test_record_has_every_key_of_the_guide(tmp_path):
    record = train_in_process(tmp_path, *FAST)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    for key in ("status", "error", "model", "data", "optimizer", "seed", "params", "steps", "epochs", "metrics",
                "timing", "peak_memory_mb", "env", "config"):
        assert key in record, key
    assert record["error"] is None
    assert (record["model"], record["data"], record["optimizer"]) == ("lstm", "adding", "adam")
    assert record["steps"] == 4 and record["epochs"] == 1  # 256 / 64 batches, debug=fast caps at 5
    assert {"val/loss", "test/loss", "test/mse"} <= set(record["metrics"])
    assert record["params"] == 4 * 64 * (2 + 64) + 8 * 64 + 64 + 1
    timing = record["timing"]
    assert set(timing) == {"train_s", "step_ms", "cpu_ms_per_step", "threads", "tokens_per_s", "tokens_per_step",
                           "flops_per_step", "flops_per_token"}
    assert timing["step_ms"] > 0 and timing["cpu_ms_per_step"] > 0
    # one measured step of batch 64 x 50 steps: the fused LSTM 2 -> 64 forward, backward twice it, and the readout
    tokens = 64 * 50
    assert timing["flops_per_step"] == 3 * 2 * tokens * (4 * 64 * (2 + 64) + 64)
    memory = record["memory"]
    assert memory["resident_mb"] == round(3 * 4 * record["params"] / 2**20 + 5 * 4 / 2**20, 3)  # Adam: 2 moments, steps
    assert 0 < memory["step_peak_mb"] < memory["process_peak_mb"] == record["peak_memory_mb"]
    assert set(record["env"]) == {"git_sha", "torch", "lightning", "hydra", "device", "host"}
    assert record["config"]["model"]["hidden_size"] == 64  # resolved config


def test_same_config_gives_identical_metrics(tmp_path):
    first = train_in_process(tmp_path / "a", *FAST, "model=gru")
    second = train_in_process(tmp_path / "b", *FAST, "model=gru")
    assert first["metrics"] == second["metrics"]


def test_model_seed_and_data_seed_are_separate(tmp_path):
    base = train_in_process(tmp_path / "base", *FAST, "seed=0", "data.seed=0")
    other_model = train_in_process(tmp_path / "model", *FAST, "seed=1", "data.seed=0")
    other_data = train_in_process(tmp_path / "data", *FAST, "seed=0", "data.seed=1")
    assert base["metrics"]["test/loss"] != other_model["metrics"]["test/loss"]
    assert base["metrics"]["test/loss"] != other_data["metrics"]["test/loss"]


def test_non_finite_loss_ends_the_run_as_diverged(tmp_path):
    record = train_in_process(
        tmp_path, *FAST, "model=elman", "model.activation=relu", "optimizer=sgd", "optimizer.lr=1e30"
    )
    assert record["status"] == "diverged" and "non-finite" in record["error"]
    assert read_record(tmp_path)["status"] == "diverged"


@pytest.mark.parametrize("model", ["elman", "lstm", "gru"])
def test_each_model_beats_the_adding_baseline(tmp_path, model):
    record = train_in_process(
        tmp_path, f"model={model}", "data.seq_len=10", "data.train_size=2000", "data.batch_size=32",
        "model.hidden_size=32", "optimizer.lr=0.01", "trainer.max_epochs=8",
    )
    assert record["metrics"]["test/mse"] < 0.167 * 0.5, record["metrics"]


def test_language_model_reports_bits_per_character(tmp_path, shared_data):
    record = train_in_process(tmp_path, "data=tinyshakespeare", f"data.root={shared_data}/tinyshakespeare", *FAST[:1])
    assert math.isclose(record["metrics"]["test/bpc"], record["metrics"]["test/loss"] / math.log(2), rel_tol=1e-5)
    assert record["metrics"]["test/bpc"] < math.log2(65)  # already better than uniform over the vocabulary


def test_wandb_logger_writes_an_offline_run_with_the_whole_config(tmp_path, monkeypatch):
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    import rnnlab.run_record

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    seen = {}
    finish = rnnlab.run_record.finish_loggers

    def spy(loggers, record, record_path):  # look at the live W&B run just before the job finishes it
        run = next(lg for lg in loggers if isinstance(lg, WandbLogger)).experiment
        seen.update(config=run.config.as_dict(), group=run.group, tags=list(run.tags), offline=run.settings._offline)
        finish(loggers, record, record_path)

    monkeypatch.setattr(rnnlab.run_record, "finish_loggers", spy)
    record = train_in_process(tmp_path, *FAST, "logger=[csv,wandb]", "name=study", "tags=[smoke]")
    assert record["status"] == "completed"
    assert seen["config"]["model.hidden_size"] == 64 and seen["config"]["model"] == "lstm"  # loggers.wandb_config
    assert seen["config"]["params"] == record["params"] and "model/hidden_size" not in seen["config"]
    assert seen["group"] == "study" and seen["tags"] == ["smoke"] and seen["offline"]
    assert wandb.run is None  # finished, so the next job of a multirun starts a fresh run
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def test_tensorboard_and_csv_together(tmp_path):
    record = train_in_process(tmp_path, *FAST, "logger=[csv,tensorboard]")
    assert record["status"] == "completed"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def test_joblib_sweep_survives_a_failed_job(tmp_path):
    result = run_cli(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST, "callbacks=minimal",
                     "model.hidden_size=16,-1", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 1, result.stderr[-3000:]  # every job ran; the sweep says one failed
    assert result.stderr.splitlines()[-1].startswith(f"rnnlab-train: failed: {tmp_path}/sweep/1: model.hidden_size")
    sweep_records = [read_record(tmp_path / "sweep" / str(i)) for i in (0, 1)]
    records = {record["config"]["model"]["hidden_size"]: record for record in sweep_records}
    assert records[16]["status"] == "completed"
    assert records[-1]["status"] == "failed" and "model.hidden_size" in records[-1]["error"]


def test_basic_sweep_runs_every_model_and_seed(tmp_path):
    result = run_cli(tmp_path, "-m", "model=elman,lstm,gru", "seed=0,1", *FAST, "callbacks=minimal",
                     f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [read_record(p.parent) for p in Path(tmp_path / "sweep").glob("*/summary.json")]
    expected = sorted((m, s) for m in ("elman", "lstm", "gru") for s in (0, 1))
    assert sorted((r["model"], r["seed"]) for r in records) == expected
    assert all(r["status"] == "completed" for r in records)


def test_ddp_cpu_trains_and_writes_one_record(tmp_path):
    result = run_cli(tmp_path, "trainer=ddp_cpu", *FAST, "callbacks=minimal", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "run")
    assert len(list((tmp_path / "run").rglob("summary.json"))) == 1
    record = read_record(tmp_path / "run")
    assert record["status"] == "completed" and record["config"]["trainer"]["devices"] == 2


@pytest.mark.slow
def test_default_job_learns_the_adding_problem(tmp_path):
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.is_relative_to(tmp_path / "logs" / "runs") or (tmp_path / run_dir).is_dir()
    record = read_record(run_dir if run_dir.is_absolute() else tmp_path / run_dir)
    assert record["status"] == "completed" and record["metrics"]["test/mse"] < 0.03
