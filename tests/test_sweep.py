"""``rnnlab-sweep``: every study of sweeps/ composes at every scale; the smoke scale runs and builds its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rnnlab.config_check import check_command_line
from rnnlab.study import SCALES, SWEEPS_DIR, group_commands, load_study, study_names
from rnnlab.sweep import Progress, job_total, main, wandb_sweeps

STUDIES = ["modalities", "optimizers", "regularizers", "table2_learning_rules", "table3_lstm_variants",
           "table4_architectures"]


def test_the_issue_studies_are_all_there():
    assert study_names() == STUDIES


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("scale", [pytest.param(s, marks=pytest.mark.slow) if s == "full" else s for s in SCALES])
def test_every_swept_value_of_every_scale_composes(tmp_path, monkeypatch, study, scale):
    """rnnlab-train's pre-flight check composes one job per swept value (the others at their first value): every
    name, key and value type of the study exists. (rnnlab-train itself checks the whole product before it runs.)"""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # the full scale's trainer=gpu, judged on any machine
    for command in group_commands(study, scale, tmp_path).values():
        fixed = [arg for arg in command[1:] if not is_sweep(arg)]
        swept = [arg.split("=", 1) for arg in command if is_sweep(arg)]
        first = [f"{key}={values.split(',')[0]}" for key, values in swept]
        for index, (key, values) in enumerate(swept):
            for value in values.split(","):
                check_command_line([*fixed, *first[:index], f"{key}={value}", *first[index + 1:]])


def is_sweep(arg: str) -> bool:
    value = arg.partition("=")[2]
    return "," in value and not value.startswith("[")


def test_a_group_is_one_multirun_with_the_scale_applied(tmp_path):
    commands = group_commands("table2_learning_rules", "smoke", tmp_path)
    methods = commands["methods"]
    assert methods[:3] == ["-m", "name=table2_learning_rules-methods",
                           f"hydra.sweep.dir={tmp_path / 'sweeps/table2_learning_rules/smoke/methods'}"]
    assert "seed=0" in methods and "seed=0,1,2" not in methods  # the smoke list replaces the group's
    assert "optimizer=sgd,adam,hessian_free,ekf,dekf,cmaes,genetic" in methods
    assert methods.index("debug=fast") > methods.index("model=elman")  # scale overrides come after the group's
    tbptt = commands["rules/tbptt"]  # one arm per learning rule, each with its own file's keys
    assert "training=tbptt" in tbptt and "training.k1=5" in tbptt and "model.hidden_size=4,8,16" in tbptt
    assert "training.k1=5" not in commands["rules/rtrl"]


def test_arms_run_as_one_multirun_each_under_the_group(tmp_path):
    commands = group_commands("table4_architectures", "smoke", tmp_path)
    image = {key: value for key, value in commands.items() if key.startswith("image/")}
    assert set(image) == {"image/lstm", "image/mdrnn", "image/mdlstm", "image/renet", "image/rcnn"}
    assert "model=mdlstm" in image["image/mdlstm"] and "data.layout=image" in image["image/mdlstm"]
    assert all("name=table4_architectures-image" in command for command in image.values())  # one table


def test_identical_conditions_every_arm_shares_the_fixed_settings(tmp_path):
    for study in STUDIES:
        for group, command in group_commands(study, "laptop", tmp_path).items():
            assert any(arg.startswith("data=") for arg in command), (study, group)
            assert any(arg.startswith("seed=") for arg in command), (study, group)


@pytest.mark.parametrize("study", ["table2_learning_rules", "table3_lstm_variants", "table4_architectures"])
def test_survey_studies_state_what_decides_each_group_and_give_three_seeds(study):
    """Budgets by need: each group of a survey table says what decides its claims, and its laptop scale runs at
    least 3 seeds (Welch's test needs them) with a step budget set in epochs or steps, not wall time."""
    spec = load_study(study)
    for group, body in spec["groups"].items():
        assert isinstance(body.get("decides"), str) and len(body["decides"]) > 20, (study, group)
    for group, command in group_commands(study, "laptop", Path("logs")).items():
        [seeds] = [arg for arg in command if arg.startswith("seed=")]
        assert len(seeds.split(",")) >= 3, (study, group)
        assert any(arg.startswith(("trainer.max_epochs=", "trainer.max_steps=")) for arg in command), (study, group)
        assert not any("max_time" in arg for arg in command), (study, group)


def test_bad_study_or_scale_is_one_line_and_exit_2(capsys):
    assert main(["no_such_study"]) == 2
    assert "no study 'no_such_study'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["optimizers", "--scale", "huge"])
    assert done.value.code == 2


def test_a_study_file_without_groups_names_the_file(tmp_path, monkeypatch):
    import rnnlab.study

    (tmp_path / "broken.yaml").write_text("description: nothing\nscales: {smoke: {}}\n")
    monkeypatch.setattr(rnnlab.study, "SWEEPS_DIR", tmp_path)
    with pytest.raises(ValueError, match="broken.yaml: 'groups'"):
        load_study("broken")


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("study", STUDIES)
def test_smoke_scale_runs_and_builds_its_report(smoke_sweep, study):
    root = smoke_sweep(study)
    records = [json.loads(path.read_text()) for path in root.rglob("summary.json")]
    expected = sum(1 for _ in root.rglob(".hydra/overrides.yaml"))
    assert len(records) == expected > 0
    failed = {record["model"]: record["error"] for record in records if record["status"] == "failed"}
    assert not failed, failed
    report = (root / "report" / "report.html").read_text()
    assert "<table" in report and "data:image/png;base64" in report


def test_checked_in_wandb_sweeps_are_generated_from_the_studies():
    """sweeps/wandb/<study>.<group>.yaml: the same grid and fixed overrides as the laptop scale, for `wandb agent`."""
    expected = {f"{study}.{group}.yaml": config for study in STUDIES for group, config in wandb_sweeps(study).items()}
    written = {path.name: yaml.safe_load(path.read_text()) for path in (SWEEPS_DIR / "wandb").glob("*.yaml")}
    assert written == expected
    reach = written["table4_architectures.reach.yaml"]
    assert reach["parameters"]["data.seq_len"]["values"] == [10, 20, 50]
    assert reach["command"][:3] == ["${env}", "rnnlab-train", "${args_no_hyphens}"]
    check_command_line([*reach["command"][3:], "model=lstm", "data.seq_len=20", "seed=1"])


TINY_STUDY = """
description: a failing group before a good one
groups:
  bad: {fixed: [model=elman, model.num_layers=0]}
  good: {fixed: [model=elman]}
scales:
  smoke:
    fixed: [debug=fast, callbacks=minimal, data=adding, data.train_size=128, data.val_size=64, data.test_size=64,
            model.hidden_size=8]
"""


@pytest.mark.slow  # two rnnlab-train subprocesses and a report: about 40 s on a busy 2-core machine
def test_a_failed_job_does_not_stop_the_study_and_is_named_last(tmp_path, monkeypatch, capfd):
    import rnnlab.study

    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    monkeypatch.setattr(rnnlab.study, "SWEEPS_DIR", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["tiny", "--log-dir", str(tmp_path / "logs")]) == 1
    root = tmp_path / "logs" / "sweeps" / "tiny" / "smoke"
    assert json.loads((root / "good" / "0" / "summary.json").read_text())["status"] == "completed"  # ran after bad
    assert (root / "report" / "report.html").is_file()
    head, last = capfd.readouterr().err.splitlines()[-2:]
    assert head == "rnnlab-sweep: error: 1 of 2 jobs failed; groups 'bad' exited 1"
    assert last.startswith(f"rnnlab-sweep: failed: {root / 'bad' / '0'}: model.num_layers")


def test_the_exit_code_is_the_first_failing_group_s(capsys):
    from rnnlab.sweep import failures

    ran = [{"status": "failed", "run_dir": "a/0", "error": "boom"}, {"status": "diverged", "run_dir": "b/0"}]
    assert failures({"a": 1, "b": 0, "c": 2}, ran) == 1
    assert capsys.readouterr().err.splitlines() == [
        "rnnlab-sweep: error: 1 of 2 jobs failed; groups 'a' exited 1, 'c' exited 2",
        "rnnlab-sweep: diverged: b/0: ", "rnnlab-sweep: failed: a/0: boom"]
    assert failures({"a": 0}, ran[1:]) == 0
    assert capsys.readouterr().err == "rnnlab-sweep: diverged: b/0: \n"  # a result, not a failure


def test_progress_counts_the_jobs_of_every_group_and_estimates_the_time_left(tmp_path):
    assert job_total(group_commands("table2_learning_rules", "smoke", tmp_path)) == 5 * 3 + 7  # rules arms, methods
    progress = Progress(total=10, started=100.0)
    assert progress.update(0, 130.0) is None
    assert progress.update(2, 160.0) == "job 2 of 10 done, 1m00s so far, about 4m00s left"
    assert progress.update(2, 170.0) is None  # nothing new
    assert progress.update(10, 3700.0) == "job 10 of 10 done, 1h00m so far, about 0m00s left"
