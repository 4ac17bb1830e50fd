"""Bad input fails at start with one line naming the key or file (exit code 2), for runs and for sweeps."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import read_record, run_cli
from rnnlab.config_check import check_command_line
from rnnlab.errors import ConfigError


@pytest.mark.parametrize(
    "argv,named,allowed",
    [
        (["model=transformer"], "model", "elman"),
        (["-m", "model=lstm,transformer"], "model", "gru"),
        (["logger=[csv,nope]"], "logger", "tensorboard"),
        (["model.hiden_size=3"], "model.hiden_size", "model.hidden_size"),
        (["model.hidden_size=abc"], "model.hidden_size", "int"),
        (["seed=1.5"], "seed", "int"),
        (["optimizer.lr=fast"], "optimizer.lr", "float"),
        (["trainer.deterministic=3"], "trainer.deterministic", "bool"),
    ],
)
def test_bad_overrides_name_the_key_and_what_is_allowed(argv, named, allowed):
    with pytest.raises(ConfigError) as caught:
        check_command_line(argv)
    message = str(caught.value)
    assert message.startswith(named + ":") and allowed in message and "\n" not in message


@pytest.mark.parametrize(
    "argv", [["model=gru", "model.hidden_size=8", "optimizer.lr=1"], ["-m", "model=elman,gru", "seed=0,1"]]
)
def test_good_command_lines_pass(argv):
    check_command_line(argv)


def _assert_one_line_exit_2(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("rnnlab-train: error:")]
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_unknown_config_name_exits_2_without_traceback(tmp_path):
    _assert_one_line_exit_2(run_cli(tmp_path, "model=transformer"), "model", "lstm")


def test_negative_size_exits_2_and_records_the_failure(tmp_path):
    result = run_cli(tmp_path, "model.hidden_size=-4", f"hydra.run.dir={tmp_path}/run")
    _assert_one_line_exit_2(result, "model.hidden_size", "positive")
    record = read_record(tmp_path / "run")
    assert record["status"] == "failed" and record["error"].startswith("model.hidden_size")


def test_missing_data_folder_exits_2_naming_the_file(tmp_path):
    result = run_cli(tmp_path, "data=tinyshakespeare", f"data.root={tmp_path}/nowhere", f"hydra.run.dir={tmp_path}/run")
    _assert_one_line_exit_2(result, "data.root", f"{tmp_path}/nowhere/input.txt")


def test_full_error_env_shows_the_traceback(tmp_path):
    result = run_cli(tmp_path, "model.hidden_size=-4", f"hydra.run.dir={tmp_path}/run", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize("launcher", ["local", "joblib", "submitit_local"])
def test_hydra_launchers_from_plugins_and_from_conf_are_accepted(launcher):
    check_command_line(["-m", f"hydra/launcher={launcher}", "model=elman,gru"])


def test_unknown_launcher_is_refused():
    with pytest.raises(ConfigError, match="hydra/launcher"):
        check_command_line(["-m", "hydra/launcher=nope", "model=elman"])


@pytest.mark.parametrize(
    "job",
    [
        ["model=gru", "seed=2", "model.hidden_size=16", "hydra.sweep.dir=/tmp/x", "hydra/launcher=local"],
        ["regularizer=[l2,zoneout]", "regularizer.zoneout.p=0.2", "+trainer.limit_val_batches=4"],
        ["training=tbptt", "training.k1=5", "~callbacks.rich_progress_bar", "++trainer.max_epochs=3"],
        ["model=esn", "data=copy", "data.delay=7", "name=study", "tags=[a,b]"],
    ],
)
def test_a_job_checked_from_its_group_choices_equals_hydras_compose(job):
    """The check composes each distinct set of group choices once (``composed_choices``) and applies a job's key
    overrides as Hydra does; the result is the config Hydra composes for the whole job."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rnnlab.conf_dir import CONF_DIR, PRIMARY_CONFIG
    from rnnlab.config_check import composed_choices, is_group, with_key_overrides

    overrides = OverridesParser.create().parse_overrides(job)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        expected = compose(PRIMARY_CONFIG, overrides=job)
        groups = tuple(o.input_line for o in overrides if is_group(o.key_or_group))
        keys = [o for o in overrides if not is_group(o.key_or_group)]
        checked = with_key_overrides(composed_choices(PRIMARY_CONFIG, groups), keys)
    assert checked == expected
    assert OmegaConf.to_yaml(checked, resolve=False) == OmegaConf.to_yaml(expected, resolve=False)  # order too
