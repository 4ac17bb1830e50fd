"""``rnnlab-bench``: well-formed rows at tiny sizes, hand-counted parameters, failures, skips and timeouts as rows,
rows printed and written as they finish.

Speed floors are not asserted here (they depend on the machine and its load); the bench output reports them.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch
from omegaconf import OmegaConf

import rnnlab.bench.models as bench
from rnnlab.bench.cli import main
from rnnlab.bench.models import REFERENCE_NAME, ModelRun, Sizes, model_configs, run_bench, selected_models
from rnnlab.bench.timecap import TimeCap
from rnnlab.conf_dir import CONF_DIR

TINY = Sizes(batch=4, length=5, hidden=8, input=3, output=2)
TINY_ARGS = ["--batch", "4", "--length", "5", "--hidden", "8", "--input", "3", "--output", "2"]


def lstm_params(inputs: int, hidden: int, outputs: int) -> int:
    """nn.LSTM: W_ih [4H, I], W_hh [4H, H], b_ih and b_hh [4H]; readout W [O, H], b [O]."""
    return 4 * hidden * (inputs + hidden) + 8 * hidden + hidden * outputs + outputs


def gru_params(inputs: int, hidden: int, outputs: int) -> int:
    return 3 * hidden * (inputs + hidden) + 6 * hidden + hidden * outputs + outputs


def check_timed_row(row: dict, sizes: Sizes) -> None:
    assert row["status"] == "ok", row
    assert row["reason"] is None
    assert row["batch_ms"] > 0 and row["ratio"] > 0 and row["reference_batch_ms"] > 0
    assert row["step_ms"] == pytest.approx(row["batch_ms"] / sizes.length)
    assert row["tokens_per_s"] == pytest.approx(sizes.batch * sizes.length / (row["batch_ms"] / 1e3))
    assert row["peak_memory_mb"] > 0  # at least the parameter gradients are allocated during the step


def test_cli_rows_for_two_models_at_tiny_sizes(tmp_path):
    path = tmp_path / "bench.json"
    status = main(["--models", "lstm,gru", *TINY_ARGS, "--repeats", "2", "--warmup", "1", "--json", str(path)])
    assert status == 0
    result = json.loads(path.read_text())
    assert result["sizes"] == vars(TINY)
    rows = {row["label"]: row for row in result["rows"]}
    # each model with an ``implementation`` key also gets its hand-written cell row
    assert list(rows) == ["lstm", "lstm[implementation=cell]", "gru", "gru[implementation=cell]"]
    expected = {"lstm": lstm_params(3, 8, 2), "gru": gru_params(3, 8, 2)}
    for row in rows.values():
        check_timed_row(row, TINY)
        assert row["params"] == expected[row["model"]]
        assert row["hidden_size"] == 8
    assert rows["lstm[implementation=cell]"]["overrides"] == ["implementation=cell"]
    reference = result["reference"]
    assert reference["model"] == REFERENCE_NAME
    assert reference["params"] == lstm_params(3, 8, 2)
    assert reference["ratio"] > 0


def test_failures_are_rows_and_do_not_stop_the_others():
    configs = model_configs(["lstm"], TINY.hidden, variants=[])
    bad_value = OmegaConf.create(
        {"_target_": "rnnlab.models.gated.LSTM", "_partial_": True, "hidden_size": 8, "num_layers": 0}
    )
    not_a_model = OmegaConf.create({"_target_": "builtins.dict", "_partial_": True})
    configs = {
        "bad_value": ModelRun("bad_value", [], bad_value),
        **configs,
        "not_a_model": ModelRun("not_a_model", [], not_a_model),
        "unparsable": ("unparsable", [], ValueError("could not compose")),  # a plain tuple is read as a ModelRun
    }
    reference, rows = run_bench(configs, TINY, repeats=1, warmup=0)
    by_name = {row.model: row for row in rows}
    assert [row.model for row in rows] == ["bad_value", "lstm", "not_a_model", "unparsable"]
    assert by_name["bad_value"].status == "error" and "num_layers" in by_name["bad_value"].reason
    assert by_name["not_a_model"].status == "error" and by_name["not_a_model"].reason
    assert by_name["unparsable"].status == "error" and "could not compose" in by_name["unparsable"].reason
    assert by_name["lstm"].status == "ok" and by_name["lstm"].params == lstm_params(3, 8, 2)
    assert reference.status == "ok"


@pytest.mark.parametrize("name, shape", [("mdlstm", [1, 3, 1, 28, 28]), ("tree_lstm", None)])
def test_models_of_another_layout_are_timed_on_their_example_batch(name, shape):
    configs = model_configs([name], TINY.hidden, variants=[])
    _, (row,) = run_bench(configs, TINY, repeats=1, warmup=0)
    assert row.status == "ok", row.reason
    assert row.params > 0 and row.batch_ms > 0 and row.peak_memory_mb > 0
    assert "reads [" in row.reason
    if shape is not None:  # frames enlarged to 28 x 28, one channel; 4 x 5 steps' worth of pixels is one clip
        assert f"x {shape}" in row.reason


def test_a_frame_predictor_outputs_a_frame_per_step():
    configs = model_configs(["convlstm"], 4, variants=[])
    assert configs["convlstm"].task == "frames"
    _, (row,) = run_bench(configs, TINY, repeats=1, warmup=0)
    assert row.status == "ok", row.reason
    assert "x [1, 3, 1, 28, 28]" in row.reason and "output C*H*W = 784" in row.reason


def test_every_model_config_is_benchmarked_by_default():
    assert selected_models("") == sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))
    assert selected_models(" gru, lstm") == ["gru", "lstm"]


def test_unknown_model_is_a_usage_error(capsys):
    assert main(["--models", "lstm,no_such_model", *TINY_ARGS]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_cli_writes_every_row_and_exits_1_when_a_model_failed(tmp_path, monkeypatch):
    real = bench.model_configs

    def with_a_broken_model(*args, **kwargs):
        return {"broken": ModelRun("broken", [], RuntimeError("boom")), **real(*args, **kwargs)}

    monkeypatch.setattr(bench, "model_configs", with_a_broken_model)
    path = tmp_path / "bench.json"
    args = ["--models", "lstm", "--variants", "", *TINY_ARGS, "--repeats", "1", "--warmup", "0", "--json", str(path)]
    status = main(args)
    assert status == 1
    rows = json.loads(path.read_text())["rows"]
    assert [(row["label"], row["status"]) for row in rows] == [("broken", "error"), ("lstm", "ok")]
    assert rows[0]["reason"] == "RuntimeError: boom"


def test_rows_are_printed_and_written_as_they_finish(tmp_path, capsys, monkeypatch):
    real = bench.bench_one
    calls = []

    def stopped_at_the_second_model(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the bench
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "bench_one", stopped_at_the_second_model)
    path = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        main(["--models", "lstm,gru", "--variants", "", *TINY_ARGS, "--repeats", "1", "--json", str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["torch.nn.LSTM", "lstm"]  # no table: the bench did not end
    assert lines[1].split()[1] == "ok" and "model peak" in lines[1]
    result = json.loads(path.read_text())
    assert result["complete"] is False
    assert result["reference"]["status"] == "ok"
    assert [row["label"] for row in result["rows"]] == ["lstm"]


def test_cli_prints_a_line_per_row_then_the_table(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["--models", "gru", *TINY_ARGS, "--repeats", "1", "--warmup", "0", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    streamed, table = out.split("forward+backward", 1)
    labels = [line.split()[0] for line in streamed.splitlines() if line.strip()]
    assert labels == ["torch.nn.LSTM", "gru", "gru[implementation=cell]"]
    assert "model peak MB" in table and "hidden 8" in table
    assert json.loads(path.read_text())["complete"] is True


class Sleepy(torch.nn.Module):
    """A model whose forward first sleeps ``seconds`` (in Python, like a slow time loop)."""

    def __init__(self, model: torch.nn.Module, seconds: float):
        super().__init__()
        self.model, self.seconds = model, seconds

    def forward(self, x, **kwargs):
        time.sleep(self.seconds)
        return self.model(x, **kwargs)


def with_sleepy_models(monkeypatch, seconds: dict[int, float]) -> None:
    """Models built at hidden size h sleep ``seconds[h]`` per forward."""
    real = bench.build_model

    def build(cfg, input_size, output_size):
        model = real(cfg, input_size, output_size)
        return Sleepy(model, seconds[cfg.hidden_size]) if cfg.hidden_size in seconds else model

    monkeypatch.setattr(bench, "build_model", build)


def test_a_row_past_the_time_cap_is_a_timeout_and_the_others_still_run(monkeypatch):
    with_sleepy_models(monkeypatch, {9: 600.0})
    configs = {
        "slow": ModelRun("slow", [], model_configs(["gru"], 9, variants=[])["gru"].cfg),
        **model_configs(["lstm"], TINY.hidden, variants=[]),
    }
    start = time.perf_counter()
    _, (slow, lstm) = run_bench(configs, TINY, repeats=2, warmup=1, time_cap=5)
    assert time.perf_counter() - start < 300  # stopped at the cap, not after the 600 s step
    assert slow.status == "timeout" and "5 s time cap" in slow.reason
    assert slow.params == gru_params(3, 9, 2)
    assert lstm.status == "ok" and lstm.repeats == 2


def test_a_slow_row_stops_repeating_at_its_share_of_the_cap(monkeypatch):
    with_sleepy_models(monkeypatch, {8: 0.05})
    _, (row,) = run_bench(model_configs(["lstm"], TINY.hidden, variants=[]), TINY, repeats=10_000, time_cap=4)
    assert row.status == "ok", row.reason
    assert 1 <= row.repeats < 10_000 and row.peak_memory_mb > 0


def test_cli_tiny_time_cap_makes_timeout_rows_not_failures(tmp_path):
    path = tmp_path / "bench.json"
    args = ["--models", "lstm,gru", "--variants", "", *TINY_ARGS, "--time-cap", "1e-6", "--json", str(path)]
    assert main(args) == 0
    result = json.loads(path.read_text())
    assert result["reference"]["status"] == "ok"
    assert [(row["label"], row["status"]) for row in result["rows"]] == [("lstm", "timeout"), ("gru", "timeout")]


def test_time_cap_restores_the_alarm_it_found():
    def previous(signum, frame):
        raise AssertionError("the outer alarm fired")

    outer_handler = signal.signal(signal.SIGALRM, previous)
    outer_timer = signal.setitimer(signal.ITIMER_REAL, 1000)  # pytest-timeout's, if any, is put back below
    try:
        with TimeCap(50):
            assert 49 < signal.getitimer(signal.ITIMER_REAL)[0] <= 50
        assert signal.getsignal(signal.SIGALRM) is previous
        assert 900 < signal.getitimer(signal.ITIMER_REAL)[0] <= 1000
    finally:
        signal.setitimer(signal.ITIMER_REAL, *outer_timer)
        signal.signal(signal.SIGALRM, outer_handler)


def test_param_budget_sizes_every_model_and_the_reference(tmp_path, capsys):
    """At 2000 parameters (I = 3, O = 2): LSTM 4h^2 + 22h + 2 is closest at h = 20 (2042), GRU 3h^2 + 17h + 2 at
    h = 23 (1980); the reference nn.LSTM is sized like the lstm model."""
    path = tmp_path / "bench.json"
    args = ["--models", "lstm,gru", *TINY_ARGS, "--param-budget", "2000", "--repeats", "1", "--warmup", "0"]
    assert main([*args, "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["param_budget"] == 2000
    assert (result["reference"]["hidden_size"], result["reference"]["params"]) == (20, lstm_params(3, 20, 2))
    expected = {"lstm": (20, lstm_params(3, 20, 2)), "gru": (23, gru_params(3, 23, 2))}
    assert len(result["rows"]) == 4
    for row in result["rows"]:
        assert row["status"] == "ok", row
        assert (row["hidden_size"], row["params"]) == expected[row["model"]]
        assert abs(row["params"] - 2000) <= 0.05 * 2000
    assert "at 2,000 parameters" in capsys.readouterr().out


def test_param_budget_a_model_cannot_meet_is_a_skipped_row(tmp_path):
    """62 parameters: the LSTM has them at h = 2; the GRU has 48 at h = 2 and 80 at h = 3, both over 5% away."""
    path = tmp_path / "bench.json"
    args = ["--models", "gru", "--variants", "", *TINY_ARGS, "--param-budget", "62", "--json", str(path)]
    assert main(args) == 0
    (row,) = json.loads(path.read_text())["rows"]
    assert row["status"] == "skipped" and "param_budget 62" in row["reason"] and "5%" in row["reason"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param-budget", "30"], "--param-budget: the reference nn.LSTM cannot be sized to it"),
        (["--param-budget", "0"], "must be positive"),
        (["--time-cap", "-1"], "must be positive"),
        (["--time-cap", "soon"], "not a number"),
    ],
)
def test_cli_refuses_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY_ARGS, *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()[-1]) > 0
