"""Launching: resumable, idempotent sweeps; GPU assignment of parallel jobs; cluster and Optuna configs."""

from __future__ import annotations

import os
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
from rnnlab.launch import outcome_lines, record_stamps, records_since, running, share_machine_between_parallel_jobs
from rnnlab.record import write_record
from rnnlab.run_dir import difference_from_claim, locked, read_earlier_record

TINY = ["data=adding", "data.train_size=256", "data.val_size=64", "data.test_size=64", "model.hidden_size=8"]


def test_rerunning_a_sweep_skips_completed_jobs_and_reruns_failed_ones(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "model=elman", "model.num_layers=1,0", "debug=fast", "callbacks=minimal",
            f"hydra.sweep.dir={sweep}", *TINY]  # num_layers=0 fails when the model is built
    first = run_cli(tmp_path, *args)
    assert first.returncode == 1, first.stderr[-2000:]  # a failed job: the sweep went on, then exits 1 naming it
    assert read_record(sweep / "0")["status"] == "completed"
    assert read_record(sweep / "1")["status"] == "failed"
    head, last = first.stderr.splitlines()[-2:]
    assert head == f"rnnlab-train: error: 1 of 2 jobs failed in {sweep} (1 completed, 0 diverged, 1 failed)"
    assert last.startswith(f"rnnlab-train: failed: {sweep / '1'}: model.num_layers")
    stamps = {job: (sweep / job / "summary.json").stat().st_mtime_ns for job in ("0", "1")}

    second = run_cli(tmp_path, *args)
    assert second.returncode == 1, second.stderr[-2000:]
    assert "rnnlab-train: error: 1 of 1 jobs failed" in second.stderr  # the skipped job is not counted again
    assert (sweep / "0" / "summary.json").stat().st_mtime_ns == stamps["0"]  # skipped: record untouched
    assert (sweep / "1" / "summary.json").stat().st_mtime_ns > stamps["1"]  # failed: run again
    assert "already completed, skipped" in second.stderr + second.stdout


def test_a_run_directory_belongs_to_one_configuration(tmp_path):
    """Another config is refused (exit 2, one line naming the first difference) and the record stays; the same
    config in another override order is the same run (skipped); resume=false starts over in a fresh subdirectory."""
    run = tmp_path / "run"
    common = ["debug=fast", "callbacks=minimal", f"hydra.run.dir={run}", *TINY]
    assert run_cli(tmp_path, *common, "optimizer.lr=0.01").returncode == 0
    stamp = (run / "summary.json").stat().st_mtime_ns

    other = run_cli(tmp_path, *common, "optimizer.lr=0.0005")
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].startswith("rnnlab-train: error: hydra.run.dir: ")
    assert "optimizer.lr: 0.01 -> 0.0005" in other.stderr and "resume=false" in other.stderr
    assert (run / "summary.json").stat().st_mtime_ns == stamp

    same = run_cli(tmp_path, "optimizer.lr=0.01", *reversed(common))
    assert same.returncode == 0 and "already completed, skipped" in same.stderr + same.stdout
    assert (run / "summary.json").stat().st_mtime_ns == stamp

    fresh = run_cli(tmp_path, *common, "optimizer.lr=0.0005", "resume=false")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert fresh.stdout.strip().splitlines()[-1] == str(run / "restart-1")
    assert read_record(run / "restart-1")["config"]["optimizer"]["lr"] == 0.0005
    assert (run / "summary.json").stat().st_mtime_ns == stamp


def test_a_second_process_on_a_run_directory_is_refused(tmp_path):
    """The directory's lock is held for the run's lifetime; a second rnnlab-train exits 2 naming the holder."""
    run = tmp_path / "run"
    with locked(run, "hydra.run.dir"):
        second = run_cli(tmp_path, "debug=fast", "callbacks=minimal", f"hydra.run.dir={run}", *TINY)
    assert second.returncode == 2
    assert f"is in use by rnnlab-train pid {os.getpid()}" in second.stderr
    assert not (run / "summary.json").exists()
    after = run_cli(tmp_path, "debug=fast", "callbacks=minimal", f"hydra.run.dir={run}", *TINY)
    assert after.returncode == 0, after.stderr[-2000:]  # released with its holder


def test_an_unreadable_record_is_kept_aside_and_the_run_goes_on(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "compl')
    done = run_cli(tmp_path, "debug=fast", "callbacks=minimal", f"hydra.run.dir={run}", *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_record(run)["status"] == "completed"
    assert (run / "summary.attempt-1.json").read_text() == '{"status": "compl'
    assert "kept as summary.attempt-1.json" in done.stdout + done.stderr


@pytest.mark.parametrize("bad", ["[]", '{"status": "completed"}', '{"status": "failed", "steps": "x"}'])
def test_a_record_that_is_not_one_claims_nothing_and_is_kept_aside(tmp_path, bad):
    """Not a record by the schema: it names no configuration to refuse, and resuming keeps it aside."""
    (tmp_path / "summary.json").write_text(bad)
    assert difference_from_claim(tmp_path, {"seed": 0}, ["seed=0"]) is None
    assert read_earlier_record(tmp_path) is None
    assert (tmp_path / "summary.attempt-1.json").read_text() == bad and not (tmp_path / "summary.json").exists()


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


@pytest.mark.slow
def test_hparams_search_searches_the_learning_rate_and_hidden_size(tmp_path):
    """``hparams_search=optuna_lr``: Optuna picks optimizer.lr and model.hidden_size for each trial."""
    args = ["-m", "hparams_search=optuna_lr", "hydra.sweeper.n_trials=2", "debug=fast", "callbacks=minimal",
            f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY[:-1]]  # not its size
    done = run_cli(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [read_record(tmp_path / "sweep" / job) for job in ("0", "1")]
    assert all(r["status"] == "completed" for r in records)
    for record in records:
        assert 1e-4 <= record["config"]["optimizer"]["lr"] <= 1e-1 and record["hidden_size"] in (32, 64, 128, 256)
    with sqlite3.connect(tmp_path / "logs" / "optuna.db") as db:
        params = {name for (name,) in db.execute("select param_name from trial_params")}
    assert params == {"optimizer.lr", "model.hidden_size"}


# ---------------------------------------------------------------------------------------------------------------
# rnnlab.launch: what a multirun reports, and joblib workers that end with their launcher


def job_record(status: str, error: str | None = None) -> dict:
    return {"status": status, "error": error, "model": "elman", "data": "adding", "optimizer": "adam", "seed": 0,
            "params": 10, "steps": 1, "epochs": 1, "metrics": {}, "timing": {}, "memory": {}, "peak_memory_mb": None,
            "env": {}, "config": {}}


def test_a_sweep_counts_the_records_its_jobs_wrote(tmp_path):
    write_record(tmp_path / "0", job_record("completed"))  # an earlier run's job, skipped this time (resume)
    write_record(tmp_path / "1", job_record("failed", "old failure"))
    stamps = record_stamps(tmp_path)
    time.sleep(0.01)
    write_record(tmp_path / "1", job_record("failed", "ValueError: again"))  # re-run
    write_record(tmp_path / "10", job_record("diverged", "non-finite training loss at step 3"))
    write_record(tmp_path / "2", job_record("completed"))
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "summary.json").write_text('{"status": "comp')
    ran = records_since(tmp_path, stamps)
    assert [Path(record["run_dir"]).name for record in ran] == ["1", "2", "3", "10"]
    lines = outcome_lines(ran)
    assert lines[:2] == [f"diverged: {tmp_path / '10'}: non-finite training loss at step 3",
                         f"failed: {tmp_path / '1'}: ValueError: again"]
    assert lines[2].startswith(f"failed: {tmp_path / '3'}: unreadable record: not valid JSON") and len(lines) == 3


WORKER = """
import os, sys, time
from rnnlab.launch import end_with_launcher
end_with_launcher(int(sys.argv[1]), poll_s=0.2, grace_s=1.0)
print("watching", flush=True)
time.sleep(120)
"""
LAUNCHER = """
import os, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(worker.pid, flush=True)
time.sleep(120)
"""


def test_a_worker_ends_when_its_launcher_is_killed(tmp_path):
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, WORKER], stdout=subprocess.PIPE, text=True)
    worker = int(launcher.stdout.readline())
    try:
        assert launcher.stdout.readline() == "watching\n" and running(worker)
        launcher.kill()  # unreaped: a zombie, which must count as gone
        deadline = time.time() + 15
        while running(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not running(worker)
    finally:
        launcher.kill()
        launcher.wait()
        if running(worker):
            os.kill(worker, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_a_joblib_sweep_ends_its_workers(tmp_path):
    """Loky workers are children of rnnlab-train -m; killed alone, it must not leave them training as orphans."""
    sweep = tmp_path / "sweep"
    command = [str(Path(sys.executable).parent / "rnnlab-train"), "-m", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", "model=elman", "seed=0,1", "trainer.max_epochs=100000", "callbacks=minimal",
               "data=adding", "data.seq_len=5", "data.train_size=64", "data.val_size=32", "data.test_size=32",
               "model.hidden_size=4", f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 300
        while not all((sweep / job / "csv").exists() for job in "01") and time.time() < deadline:
            assert process.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
        workers = descendants(process.pid)
        assert len(workers) >= 2  # both jobs train in loky workers (plus resource trackers)
        process.kill()
        deadline = time.time() + 15
        while any(running(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if running(pid)], "workers outlived their launcher"
    finally:
        process.kill()
        process.wait()
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
