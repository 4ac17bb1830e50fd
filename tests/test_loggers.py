"""What the loggers receive (rnnlab.loggers): the whole config under a ``wandb agent`` sweep, the run record in the
W&B summary and as an artifact, TensorBoard's HParams read back by TensorBoard's own reader, the re-validation of
the best checkpoint under its own keys, the learning rate, and a resumed run continuing its W&B run."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, read_record, run_cli, train_in_process
from rnnlab.loggers import wandb_config
from rnnlab.report.collect import nested_config, record_from_wandb
from wandb_log import wandb_records

FAST = ["debug=fast", "data.train_size=256", "data.val_size=64", "data.test_size=64"]


def offline_run(run_dir: Path) -> tuple[str, dict[str, list]]:
    """The offline W&B run under ``run_dir/wandb``: its id and its records by kind."""
    [log] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    by_kind: dict[str, list] = {}
    for record in wandb_records(log):
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)
    return by_kind["run"][0].run.run_id, by_kind


def updates(records: list, field: str) -> dict:
    """The key -> value updates of a run's config or summary records, later ones winning."""
    values = {}
    for record in records:
        for item in getattr(record, field).update:
            if item.key:
                values[item.key] = json.loads(item.value_json)
    return values


def test_wandb_config_is_flat_and_nests_back():
    config = {"model": {"_target_": "m.LSTM", "hidden_size": 8, "cell": {"gates": 4}}, "seed": 1, "tags": [],
              "regularizer": {}}
    flat = wandb_config(config, {"model": "lstm", "regularizer": "none"})
    assert flat == {"model._target_": "m.LSTM", "model.hidden_size": 8, "model.cell.gates": 4, "seed": 1, "tags": [],
                    "regularizer": "none", "model": "lstm"}
    assert nested_config(flat) == {"model": {"_target_": "m.LSTM", "hidden_size": 8, "cell": {"gates": 4}}, "seed": 1,
                                   "tags": [], "regularizer": "none"}
    assert nested_config({"model": {"hidden_size": 8}}) == {"model": {"hidden_size": 8}}  # runs before the flat form


def test_a_run_launched_by_wandbs_agent_logs_the_whole_config_and_its_record(tmp_path, monkeypatch, capfd):
    """wandb's own agent code (``Agent._command_run``) launches the checked-in sweep file's command with one grid
    point, offline; the sweep locks ``optimizer`` and ``seed``, and the nested settings still reach W&B."""
    from wandb.wandb_agent import Agent

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SWEEP_ID", "offline-sweep")
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):  # the agent sets them in this process's environment
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    sweep = yaml.safe_load((REPO / "sweeps" / "wandb" / "optimizers.regression.yaml").read_text())
    agent = Agent(api=None, queue=None, sweep_id="offline-sweep")
    agent._sweep_command = [*sweep["command"], *FAST, "callbacks=minimal", f"hydra.run.dir={tmp_path / 'run'}"]
    agent._command_run({"run_id": "gridpoint1", "program": sweep["program"],
                        "args": {"optimizer": {"value": "sgd"}, "seed": {"value": 1}}})
    process = agent._run_processes["gridpoint1"]
    started = time.monotonic()
    while process.poll() is None and time.monotonic() - started < 300:
        time.sleep(0.2)
    assert process.poll() == 0
    assert "was locked by 'sweep'" not in capfd.readouterr().err

    record = read_record(tmp_path / "run")
    run_id, logged = offline_run(tmp_path / "run")
    assert run_id == "gridpoint1" and logged["exit"][0].exit.exit_code == 0
    config = updates([*(r.run for r in logged["run"]), *logged["config"]], "config")  # the run's first: the sweep's
    assert config["optimizer"] == "sgd" and config["seed"] == 1
    assert config["model"] == "elman" and config["model.hidden_size"] == 16 and config["optimizer.lr"] == 0.1
    assert config["params"] == record["params"] > 0
    summary = updates(logged["summary"], "summary")
    assert summary["status"] == "completed" and summary["params"] == record["params"]
    assert summary["metrics"] == pytest.approx(record["metrics"]) and summary["overrides"] == record["overrides"]
    assert [a.artifact.type for a in logged["artifact"]] == ["run-record"]
    rebuilt = record_from_wandb(config, summary, "finished", "gridpoint1", "optimizers-regression")
    for group in ("model", "optimizer", "data", "trainer"):  # W&B keeps no null values
        assert rebuilt["config"][group] == {k: v for k, v in record["config"][group].items() if v is not None}
    assert rebuilt["model"] == "elman" and rebuilt["optimizer"] == "sgd" and rebuilt["status"] == "completed"


def test_a_diverged_run_finishes_its_wandb_run_as_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    record = train_in_process(tmp_path, *FAST, "logger=wandb", "optimizer=sgd", "optimizer.lr=1e30")
    assert record["status"] == "diverged"
    _, logged = offline_run(tmp_path)
    assert logged["exit"][0].exit.exit_code == 1
    assert updates(logged["summary"], "summary")["status"] == "diverged"


def test_tensorboard_gets_hparams_the_learning_rate_and_the_best_checkpoints_validation(tmp_path):
    """Read back by TensorBoard's own event reader: HParams (config, parameter count, final metrics), one ``val/loss``
    point per epoch (the best checkpoint's re-validation is ``best/val/loss``), and ``train/lr``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    record = train_in_process(tmp_path, *FAST, "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
                              "logger=tensorboard", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5")
    assert record["status"] == "completed"
    scalars, hparams = {}, {}
    for events in sorted((tmp_path / "tensorboard").glob("events.out.tfevents.*")):
        reader = EventAccumulator(str(events))
        reader.Reload()
        for tag in reader.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in reader.Scalars(tag))
        try:
            contents = reader.PluginTagToContent("hparams")
        except KeyError:  # an events file without HParams
            continue
        for content in contents.values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            hparams[data.WhichOneof("data")] = data
    assert len(scalars["val/loss"]) == 2  # the two epochs' validations, nothing more
    assert scalars["best/val/loss"][0][1] == pytest.approx(record["metrics"]["val/loss"], rel=1e-6)
    rates = [value for _, value in sorted(scalars["train/lr"])]
    lr = record["config"]["optimizer"]["lr"]
    assert rates[0] == pytest.approx(lr, rel=1e-6) and rates == sorted(rates, reverse=True)
    assert lr / 2 == pytest.approx(min(rates, key=lambda rate: abs(rate - lr / 2)), rel=1e-6)  # halved by StepLR
    start = hparams["session_start_info"].session_start_info.hparams
    assert start["params"].number_value == record["params"] and start["model/hidden_size"].number_value == 64
    tags = {info.name.tag for info in hparams["experiment"].experiment.metric_infos}
    assert {"hp/test/mse", "hp/val/loss"} <= tags
    assert scalars["hp/test/mse"][0][1] == pytest.approx(record["metrics"]["test/mse"], rel=1e-6)


def test_minimal_callbacks_show_no_progress_bar(tmp_path):
    done = run_cli(tmp_path, *FAST, "callbacks=minimal", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "it/s]" not in done.stderr and "Epoch 0" not in done.stderr + done.stdout


def test_debug_overfit_fits_one_batch(tmp_path):
    """The same batch every step (Lightning's overfit_batches; its validation reads a validation batch): the loss
    falls to a tenth of the first step's within the 100 steps."""
    record = train_in_process(tmp_path, "debug=overfit", "optimizer.lr=0.03", "data.seq_len=10", "data.batch_size=16")
    assert record["status"] == "completed" and record["steps"] == 100
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        losses = [float(row["train/loss_step"]) for row in csv.DictReader(handle) if row.get("train/loss_step")]
    assert len(losses) == 100 and losses[-1] < 0.1 * losses[0]


@pytest.mark.slow
def test_a_killed_run_continues_its_wandb_run(tmp_path):
    """SIGKILLed mid-run and resumed: the second attempt continues the first one's W&B run (same id, resume
    "allow") and logs from the resume point on. (Offline, what the killed process had not flushed is lost; online
    W&B holds what was streamed before the kill.)"""
    marker = tmp_path / "killed"
    args = ["debug=fast", "data.train_size=512", "data.val_size=64", "data.test_size=64",  # 8 batches an epoch
            "trainer.max_epochs=3", "trainer.limit_train_batches=8", "trainer.log_every_n_steps=1",
            "callbacks=minimal", "callbacks.resume_point.every_n_steps=4", "logger=[csv,wandb]",
            "+callbacks.kill._target_=kill_points.KillAt", "+callbacks.kill.step=13",
            f"+callbacks.kill.marker={marker}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {"PYTHONPATH": str(REPO / "tests")}
    assert run_cli(tmp_path, *args, env=env).returncode == -9
    assert run_cli(tmp_path, *args, env=env).returncode == 0
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2 and runs[0].name == runs[1].name  # one W&B run id, two attempts
    history = [r.history for r in wandb_records(runs[1]) if r.WhichOneof("record_type") == "history"]
    steps = sorted({int(json.loads(item.value_json)) for h in history for item in h.item
                    if list(item.nested_key) == ["trainer/global_step"]})
    assert steps[0] == 12 and steps[-1] == 24  # from the step-12 resume point on, not from 0 again
