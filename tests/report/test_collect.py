"""Records into studies and arms; the identical-conditions check (CONTRIBUTING.md, 'Identical conditions')."""

from __future__ import annotations

import statistics

import pytest

from fake_records import make_record
from rnnlab.report.cli import main
from rnnlab.report.collect import (
    MixedConditionsError,
    check_conditions,
    grad_ratios,
    group_studies,
    load_records,
    record_from_wandb,
)
from rnnlab.report.tables import study_table

LSTM_MSE = [0.010, 0.014, 0.012]
GRU_MSE = [0.020, 0.026]


def model_sweep(root, **extra):
    """3 lstm seeds and 4 gru seeds, of which one failed and one diverged."""
    for seed, mse in enumerate(LSTM_MSE):
        make_record(root / f"lstm{seed}", model="lstm", seed=seed, params=17473, metrics={"test/mse": mse}, **extra)
    for seed, mse in enumerate(GRU_MSE):
        make_record(root / f"gru{seed}", model="gru", seed=seed, params=13121, metrics={"test/mse": mse}, **extra)
    make_record(root / "gru2", model="gru", seed=2, status="failed", **extra)
    make_record(root / "gru3", model="gru", seed=3, status="diverged", metrics={"train/loss": float("nan")}, **extra)


def test_arms_are_the_swept_settings_and_seeds_their_runs(tmp_path):
    model_sweep(tmp_path)
    [study] = group_studies(load_records([tmp_path]))
    assert study.name == "study" and study.swept == ["model"]  # seed differs too, but seeds are the repeats
    assert [arm.label for arm in study.arms] == ["model=gru", "model=lstm"]
    gru, lstm = study.arms
    assert (len(gru.runs), len(gru.completed), gru.count("failed"), gru.count("diverged")) == (4, 2, 1, 1)
    table = study_table(study, "test/mse", "model=lstm")
    by_label = {row.arm.label: row for row in table.rows}
    lstm_mse = by_label["model=lstm"].summaries["test/mse"]
    assert lstm_mse.n == 3
    assert lstm_mse.mean == pytest.approx(statistics.mean(LSTM_MSE))
    assert lstm_mse.std == pytest.approx(statistics.stdev(LSTM_MSE))
    gru_mse = by_label["model=gru"].summaries["test/mse"]
    assert gru_mse.n == 2 and gru_mse.mean == pytest.approx(statistics.mean(GRU_MSE))  # failed/diverged not averaged
    assert by_label["model=gru"].summaries["params"].mean == 13121
    assert by_label["model=lstm"].is_baseline and by_label["model=gru"].baseline is lstm


def test_runs_under_different_unswept_settings_are_refused(tmp_path, capsys):
    model_sweep(tmp_path / "a")
    make_record(tmp_path / "b" / "0", model="lstm", seed=5, metrics={"test/mse": 0.5},
                config={"trainer": {"max_epochs": 10}, "optimizer": {"lr": 0.1}})
    studies = group_studies(load_records([tmp_path]))
    with pytest.raises(MixedConditionsError) as error:
        check_conditions(studies)
    message = str(error.value)
    assert "optimizer.lr = 0.003" in message and "vs 0.1" in message
    assert "trainer.max_epochs = 1" in message and "vs 10" in message and "--allow-mixed" in message
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlab-report: error: study 'study' mixes runs") and err.count("\n") == 1
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--allow-mixed", "--out", str(tmp_path / "out")]) == 0
    assert "Mixed conditions" in (tmp_path / "out" / "report.md").read_text()


def test_paths_output_dirs_logger_ids_and_gpu_placement_are_not_conditions(tmp_path):
    make_record(tmp_path / "x" / "0", seed=0, config={"logger": {"wandb": {"id": "abc", "group": "g1"}},
                                                      "paths": {"root_dir": "/somewhere"},
                                                      "trainer": {"devices": [0]}})  # GPU of parallel job 0
    make_record(tmp_path / "y" / "1", seed=1, config={"logger": {"wandb": {"id": "def", "group": "g2"}},
                                                      "paths": {"root_dir": "/elsewhere"},
                                                      "trainer": {"devices": [1]}})
    [study] = group_studies(load_records([tmp_path]))
    assert study.differences == [] and len(study.arms) == 1
    assert study.conditions["optimizer.lr"] == 0.003 and "seed" not in study.conditions


def test_how_a_run_is_resumed_or_displayed_is_not_a_condition(tmp_path):
    """A study resumed by a later rnnlab (resume points, no save_last, another progress bar) still compares; an
    early-stopping callback, which changes what is trained, does not."""
    make_record(tmp_path / "x" / "0", seed=0, config={"callbacks": {"model_checkpoint": {"save_last": True}}})
    make_record(tmp_path / "x" / "1", seed=1, config={"callbacks": {
        "model_checkpoint": {"save_last": False}, "resume_point": {"every_n_steps": 100}, "rich_progress_bar": None}})
    [study] = group_studies(load_records([tmp_path]))
    assert study.differences == []
    make_record(tmp_path / "x" / "2", seed=2, config={"callbacks": {"early_stopping": {"patience": 3}}})
    [study] = group_studies(load_records([tmp_path]))
    assert [d.key for d in study.differences] == ["callbacks.early_stopping.patience"]


def test_an_override_left_at_its_default_is_not_a_swept_setting(tmp_path):
    make_record(tmp_path / "0", seed=0, overrides=["model=lstm", "data.seq_len=10", "seed=0"])
    make_record(tmp_path / "1", seed=1, overrides=["model=lstm", "seed=1"])  # config data.seq_len is 10 too
    make_record(tmp_path / "2", seed=0, overrides=["model=lstm", "data.seq_len=20", "seed=0"],
                config={"data": {"seq_len": 20}})
    [study] = group_studies(load_records([tmp_path]))
    assert study.swept == ["data.seq_len"]
    assert {arm.label: len(arm.runs) for arm in study.arms} == {"data.seq_len=10": 2, "data.seq_len=20": 1}
    assert study.differences == []  # data.seq_len is swept, so its config values may differ


def test_studies_are_experiment_names_and_old_records_still_group(tmp_path, capsys):
    model_sweep(tmp_path / "a")
    make_record(tmp_path / "b" / "0", name="other", config={"trainer": {"max_epochs": 3}})
    studies = group_studies(load_records([tmp_path]))
    assert sorted(s.name for s in studies) == ["other", "study"]
    check_conditions(studies)  # differing settings in different studies are fine
    assert main([str(tmp_path), "--study", "nope"]) == 2
    assert "is not among the studies found" in capsys.readouterr().err
    assert main([str(tmp_path), "--study", "other"]) == 0
    old = tmp_path / "old"  # a record from before overrides were recorded: its config names stand in for them
    from rnnlab.record import write_record

    for index, model in enumerate(("elman", "gru")):
        record = make_record(old / str(index), model=model, metrics={"test/mse": 0.1 * (index + 1)})
        del record["overrides"]
        write_record(old / str(index), record)
    [study] = group_studies(load_records([old]))
    assert study.swept == ["model"] and len(study.arms) == 2


def test_gradient_ratios_are_read_from_metrics_or_the_top_level():
    record = {"metrics": {"grad/grad_ratio_10": 0.5, "test/mse": 0.1}, "grad_ratio_50": 1e-3, "grad_ratio_x": 1.0}
    assert grad_ratios(record) == {10: 0.5, 50: 1e-3}
    assert grad_ratios({"metrics": {}}) == {}


def test_a_wandb_run_becomes_a_record():
    config = {"seed": 1, "model": {"hidden_size": 64}, "data": {"seq_len": 10}}
    summary = {"test/mse": 0.01, "val/loss_epoch": 0.02, "train/loss_step": 0.5, "_runtime": 3, "params": 17473}
    record = record_from_wandb(config, summary, "finished", "data.seq_len=10,model=lstm,seed=1", "sweep1")
    assert record["status"] == "completed" and record["model"] == "lstm" and record["seed"] == 1
    assert record["metrics"] == {"test/mse": 0.01, "val/loss": 0.02}
    assert record["overrides"] == ["data.seq_len=10", "model=lstm", "seed=1"]
    assert record["config"]["name"] == "sweep1" and record["params"] == 17473
    assert record_from_wandb(config, {}, "crashed", "model=gru", None)["status"] == "failed"
    assert record_from_wandb(config, {}, "running", "model=gru", None) is None


def test_task_copies_of_a_swept_group_are_part_of_the_sweep():
    """conf/task/sequence.yaml copies training and regularizer into the task: sweeping them is not a mixed study."""
    from rnnlab.report.collect import ignored

    assert ignored("task.training.rule", ["training.rule"])
    assert ignored("task.regularizers.l2.weight", ["regularizer"])
    assert ignored("task.ridge", ["model"])  # a family that selects its own task
    assert not ignored("task.pooling", ["training.rule"])
    assert not ignored("task.training.k1", ["regularizer"])


def test_bad_records_are_skipped_and_good_ones_beside_them_loaded(tmp_path, caplog):
    model_sweep(tmp_path)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "summary.json").write_text('{"status": "completed", "error": nu')
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "summary.json").write_text('{"status": "completed"}')
    skipped = []
    records = load_records([tmp_path, tmp_path / "cut"], skipped)  # overlapping directories: each file once
    assert len(records) == 7 and all("run_dir" in record for record in records)
    assert sorted(error.path.parent.name for error in skipped) == ["bare", "cut"]
    assert any(str(tmp_path / "bare" / "summary.json") in r.getMessage() for r in caplog.records)


def test_a_study_group_may_declare_its_own_baseline():
    """Table III's Greff group compares variants of one model: its baseline is the vanilla variant, the file's is the
    LSTM (rnnlab-sweep names runs ``<study>-<group>``)."""
    from rnnlab.report.build import declared_baseline

    assert declared_baseline("table3_lstm_variants-greff")[0] == "model.variant=vanilla"
    assert declared_baseline("table3_lstm_variants-trees") == ("model=lstm", "sweeps/table3_lstm_variants.yaml")
    assert declared_baseline("no_such_study-group") == (None, None)
