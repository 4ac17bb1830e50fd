"""``rnnlab-eval`` (rnnlab.evaluate): a checkpoint scored on a split reproduces the run's own scores of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import read_record, run_cli

RUN = ["debug=fast", "callbacks=minimal", "model=gru", "model.hidden_size=16", "data.train_size=256",
       "data.val_size=64", "data.test_size=64"]


def run_eval(tmp_path: Path, *args: str):
    return run_cli(tmp_path, *args, program="rnnlab-eval")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("trained")
    done = run_cli(tmp_path, *RUN, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp_path / "run"


@pytest.mark.parametrize("split", ["val", "test"])
def test_the_best_checkpoint_scores_what_the_run_recorded(tmp_path, trained, split):
    """The run validated and tested its best checkpoint last; evaluating that checkpoint gives the same numbers."""
    done = run_eval(tmp_path, *RUN, f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", f"split={split}",
                    f"hydra.run.dir={tmp_path / 'eval'}")
    assert done.returncode == 0, done.stderr[-2000:]
    run, evaluation = read_record(trained), read_record(tmp_path / "eval")
    assert evaluation["status"] == "completed" and evaluation["evaluated"]["split"] == split
    assert evaluation["metrics"][f"{split}/loss"] == pytest.approx(run["metrics"][f"{split}/loss"], rel=1e-6)
    assert evaluation["params"] == run["params"]
    assert not any(name.startswith("train/") for name in evaluation["metrics"])


@pytest.mark.parametrize(
    "args,error",
    [
        ([], "rnnlab-eval: error: ckpt_path: is required: give it on the command line (ckpt_path=...)"),
        (["ckpt_path=/nonexistent/best.ckpt"], "rnnlab-eval: error: ckpt_path: no checkpoint file at "
                                               "/nonexistent/best.ckpt"),
    ],
)
def test_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path, args, error):
    done = run_eval(tmp_path, *args, f"hydra.run.dir={tmp_path / 'eval'}")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == error
