"""Launching: resumable, idempotent sweeps; GPU assignment of parallel jobs; cluster and Optuna configs."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from conftest import compose_config, read_record, run_cli
from rnnlab.train import share_machine_between_parallel_jobs

TINY = ["data=adding", "data.train_size=256", "data.val_size=64", "data.test_size=64", "model.hidden_size=8"]


def test_rerunning_a_sweep_skips_completed_jobs_and_reruns_failed_ones(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "model=elman", "model.num_layers=1,0", "debug=fast", "callbacks=minimal",
            f"hydra.sweep.dir={sweep}", *TINY]  # num_layers=0 fails when the model is built
    first = run_cli(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert read_record(sweep / "0")["status"] == "completed"
    assert read_record(sweep / "1")["status"] == "failed"
    stamps = {job: (sweep / job / "summary.json").stat().st_mtime_ns for job in ("0", "1")}

    second = run_cli(tmp_path, *args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (sweep / "0" / "summary.json").stat().st_mtime_ns == stamps["0"]  # skipped: record untouched
    assert (sweep / "1" / "summary.json").stat().st_mtime_ns > stamps["1"]  # failed: run again
    assert "already completed, skipped" in second.stderr + second.stdout


def test_a_directory_reused_for_other_overrides_keeps_the_old_record(tmp_path):
    run = tmp_path / "run"
    common = ["debug=fast", "callbacks=minimal", f"hydra.run.dir={run}", *TINY]
    assert run_cli(tmp_path, *common).returncode == 0
    done = run_cli(tmp_path, *common, "seed=1")
    assert done.returncode == 0
    assert read_record(run)["seed"] == 1
    assert read_record(run)["status"] == "completed"
    replaced = (run / "summary.replaced.json").read_text()
    assert '"seed": 0' in replaced


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint_with_the_same_metrics(tmp_path):
    args = ["model=lstm", "trainer.max_epochs=4", "callbacks=minimal", "data.train_size=8192", *TINY[2:],
            "data=adding"]
    whole = tmp_path / "whole"
    assert run_cli(tmp_path, *args, f"hydra.run.dir={whole}").returncode == 0

    cut = tmp_path / "cut"
    command = [str(Path(sys.executable).parent / "rnnlab-train"), *args, f"hydra.run.dir={cut}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = cut / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not (last.exists() and last.stat().st_size > 0) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint write finish
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (cut / "summary.json").exists(), "the run finished before it could be interrupted"

    resumed = run_cli(tmp_path, *args, f"hydra.run.dir={cut}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    record, reference = read_record(cut), read_record(whole)
    assert record["resumed_from"] == str(last)
    assert record["epochs"] == reference["epochs"] == 4
    for name in ("val/loss", "test/loss", "test/mse"):
        assert record["metrics"][name] == pytest.approx(reference["metrics"][name], rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize("job, gpus, expected", [(5, 4, [1]), (2, 2, [0]), (3, 1, 1)])
def test_parallel_jobs_take_gpus_round_robin(tmp_path, monkeypatch, job, gpus, expected):
    cfg = compose_config(tmp_path, ["trainer=gpu", "hydra/launcher=joblib"])
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.job.num = job
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    share_machine_between_parallel_jobs(cfg)
    assert cfg.trainer.devices == expected


def test_slurm_launcher_requeues_and_gives_each_job_its_own_folder(tmp_path):
    cfg = compose_config(tmp_path, ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_task == 1 and launcher.timeout_min > 0
    assert launcher.max_num_timeout > 0  # submitit requeues a preempted task; the job resumes from last.ckpt
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"  # job i writes only <sweep>/i


@pytest.mark.slow
def test_submitit_local_runs_a_sweep_with_one_record_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(tmp_path, "-m", "hydra/launcher=submitit_local", "model=elman,gru", "debug=fast",
                   "callbacks=minimal", f"hydra.sweep.dir={sweep}", *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [read_record(sweep / job)["model"] for job in ("0", "1")] == ["elman", "gru"]
    assert all(read_record(sweep / job)["status"] == "completed" for job in ("0", "1"))


@pytest.mark.slow
def test_optuna_search_continues_from_its_sqlite_study(tmp_path):
    args = ["-m", "hydra/sweeper=optuna_resumable", "hydra.sweeper.n_trials=2", "optimizer.lr=interval(0.001,0.01)",
            "debug=fast", "callbacks=minimal", f"paths.log_dir={tmp_path / 'logs'}", *TINY]
    for _ in range(2):  # stop after 2 trials, run the same command again
        done = run_cli(tmp_path, *args)
        assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(tmp_path / "logs" / "optuna.db") as db:
        states = [state for (state,) in db.execute("select state from trials")]
    assert states == ["COMPLETE"] * 4
