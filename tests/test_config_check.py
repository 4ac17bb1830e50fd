"""Bad input fails at start with one line naming the key or file (exit code 2), for runs and for sweeps."""

from __future__ import annotations

import pytest

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
