"""``rnnlab-bench``: well-formed rows at tiny sizes, hand-counted parameters, failures and skips as rows.

Speed floors are not asserted here (they depend on the machine and its load); the bench output reports them.
"""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

import rnnlab.bench as bench
from rnnlab.bench import REFERENCE_NAME, Sizes, main, model_configs, run_bench, selected_models
from rnnlab.config_check import CONF_DIR

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
        "bad_value": ("bad_value", [], bad_value),
        **configs,
        "not_a_model": ("not_a_model", [], not_a_model),
        "unparsable": ("unparsable", [], ValueError("could not compose")),
    }
    reference, rows = run_bench(configs, TINY, repeats=1, warmup=0)
    by_name = {row.model: row for row in rows}
    assert [row.model for row in rows] == ["bad_value", "lstm", "not_a_model", "unparsable"]
    assert by_name["bad_value"].status == "error" and "num_layers" in by_name["bad_value"].reason
    assert by_name["not_a_model"].status == "error" and by_name["not_a_model"].reason
    assert by_name["unparsable"].status == "error" and "could not compose" in by_name["unparsable"].reason
    assert by_name["lstm"].status == "ok" and by_name["lstm"].params == lstm_params(3, 8, 2)
    assert reference.status == "ok"


@pytest.mark.parametrize("name, shape", [("mdlstm", [4, 3, 1, 28, 28]), ("tree_lstm", None)])
def test_models_of_another_layout_are_timed_on_their_example_batch(name, shape):
    configs = model_configs([name], TINY.hidden, variants=[])
    _, (row,) = run_bench(configs, TINY, repeats=1, warmup=0)
    assert row.status == "ok", row.reason
    assert row.params > 0 and row.batch_ms > 0 and row.peak_memory_mb > 0
    assert "reads [" in row.reason
    if shape is not None:  # image frames enlarged to 28 x 28, one channel, at the bench's batch size
        assert f"x {shape}" in row.reason


def test_every_model_config_is_benchmarked_by_default():
    assert selected_models("") == sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))
    assert selected_models(" gru, lstm") == ["gru", "lstm"]


def test_unknown_model_is_a_usage_error(capsys):
    assert main(["--models", "lstm,no_such_model", *TINY_ARGS]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_cli_writes_every_row_and_exits_1_when_a_model_failed(tmp_path, monkeypatch):
    real = bench.model_configs

    def with_a_broken_model(names, hidden, variants):
        return {"broken": ("broken", [], RuntimeError("boom")), **real(names, hidden, variants)}

    monkeypatch.setattr(bench, "model_configs", with_a_broken_model)
    path = tmp_path / "bench.json"
    args = ["--models", "lstm", "--variants", "", *TINY_ARGS, "--repeats", "1", "--warmup", "0", "--json", str(path)]
    status = main(args)
    assert status == 1
    rows = json.loads(path.read_text())["rows"]
    assert [(row["label"], row["status"]) for row in rows] == [("broken", "error"), ("lstm", "ok")]
    assert rows[0]["reason"] == "RuntimeError: boom"
