"""Every bad input is refused at start (exit code 2), before any data is read, with one line naming the key the user
typed and what is allowed (CONTRIBUTING.md, 'Conventions'). The table runs through ``rnnlab.train.cli`` in this process
(a run that got past the check would be a failure here: ``main`` is replaced); two cases run the real console script."""

from __future__ import annotations

import shlex
import sys

import pytest
import torch
from omegaconf import OmegaConf

import rnnlab.train
from conftest import run_cli
from rnnlab.conf_dir import CONF_DIR, group_options
from rnnlab.config_check import check_command_line
from rnnlab.config_values import check_constructor_keys

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where torch finds no CUDA GPU")

# (command line, the key named, a fragment of what is allowed or expected)
CASES = [
    # unknown config names, one per group
    ("model=transformer", "model", "elman"),
    ("data=imagenet", "data", "adding"),
    ("optimizer=lion", "optimizer", "adam"),
    ("scheduler=onecycle", "scheduler", "cosine"),
    ("regularizer=[l2,bogus]", "regularizer", "zoneout"),
    ("training=rprop", "training", "tbptt"),
    ("head=softmax", "head", "class_softmax"),
    ("trainer=tpu", "trainer", "ddp"),
    ("logger=mlflow", "logger", "tensorboard"),
    ("callbacks=fancy", "callbacks", "early_stopping"),
    ("task=translation", "task", "seq2seq"),
    ("experiment=nope", "experiment", "adding_lstm"),
    ("debug=slow", "debug", "fast"),
    ("-m hydra/launcher=nope model=elman", "hydra/launcher", "joblib"),
    ("-m model=lstm,transformer", "model", "gru"),
    # unknown keys: existing groups' keys, and added keys the constructor does not take
    ("model.hiden_size=3", "model.hiden_size", "model.hidden_size"),
    ("optimizer.learning_rate=0.1", "optimizer.learning_rate", "optimizer.lr"),
    ("trainer.max_epoch=3", "trainer.max_epoch", "trainer.max_epochs"),
    ("data.seqlen=5", "data.seqlen", "data.seq_len"),
    ("task.pooling_mode=last", "task.pooling_mode", "task.pooling"),
    ("+model.bogus=1", "model.bogus", "model.hidden_size"),
    ("model=gru +model.peepholes=true", "model.peepholes", "model.hidden_size"),
    ("+optimizer.bogus=1", "optimizer.bogus", "optimizer.lr"),
    ("+data.bogus=1", "data.bogus", "data.seq_len"),
    ("+trainer.bogus=1", "trainer.bogus", "trainer.max_epochs"),
    ("+callbacks.model_checkpoint.bogus=1", "callbacks.model_checkpoint.bogus", "monitor"),
    ("regularizer=l2 +regularizer.l2.bogus=1", "regularizer.l2.bogus", "regularizer.l2.weight"),
    ("training=rtrl +training.horizon=3", "training.horizon", "update_every"),
    ("training.k1=5", "training.k1", "training=tbptt"),
    # wrong types
    ("model.hidden_size=abc", "model.hidden_size", "int"),
    ("seed=1.5", "seed", "int"),
    ("optimizer.lr=fast", "optimizer.lr", "float"),
    ("trainer.deterministic=3", "trainer.deterministic", "bool"),
    ("trainer.max_epochs=ten", "trainer.max_epochs", "int"),
    ("data.batch_size=big", "data.batch_size", "int"),
    ("optimizer.lr=[", "command line", ""),
    # NaN and infinity
    ("optimizer.lr=nan", "optimizer.lr", "finite"),
    ("optimizer.lr=inf", "optimizer.lr", "finite"),
    ("optimizer.weight_decay=nan", "optimizer.weight_decay", "finite"),
    ("init=gaussian init.std=nan", "init.std", "finite"),
    ("model.dropout=-inf", "model.dropout", "finite"),
    ("trainer.gradient_clip_val=inf", "trainer.gradient_clip_val", "finite"),
    ("regularizer=l2 regularizer.l2.weight=nan", "regularizer.l2.weight", "finite"),
    # negative and zero sizes, rates and budgets
    ("optimizer.lr=-1", "optimizer.lr", ">= 0"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay", ">= 0"),
    ("optimizer=momentum optimizer.momentum=-0.5", "optimizer.momentum", ">= 0"),
    ("seed=-1", "seed", "integer >= 0"),
    ("scheduler=step scheduler.step_size=0", "scheduler.step_size", "positive"),
    ("scheduler=step scheduler.gamma=0", "scheduler.gamma", "positive"),
    ("scheduler=plateau scheduler.patience=-1", "scheduler.patience", ">= 0"),
    ("trainer.max_epochs=-5", "trainer.max_epochs", ">= 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs", ">= 1"),
    ("trainer.max_steps=0", "trainer.max_steps", ">= 1"),
    ("trainer.max_epochs=-1", "trainer.max_epochs", "never end"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val", ">= 0"),
    ("trainer.devices=0", "trainer.devices", "-1 (all)"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps", "positive"),
    ("data.batch_size=0", "data.batch_size", "positive"),
    ("data.seq_len=-1", "data.seq_len", "positive"),
    ("data.train_size=0", "data.train_size", "positive"),
    ("training=tbptt training.k1=0", "training.k1", "positive"),
    ("training=tbptt training.k1=10 training.k2=5", "training.k2", ">= k1"),
    ("regularizer=zoneout regularizer.zoneout.p=-0.1", "regularizer.zoneout.p", "[0, 1]"),
    ("regularizer=dropout regularizer.dropout.p=1.5", "regularizer.dropout.p", "[0, 1)"),
    ("regularizer=l1 regularizer.l1.weight=-1", "regularizer.l1.weight", ">= 0"),
    ("regularizer=variational regularizer.variational.p_hidden=1.0", "regularizer.variational.p_hidden", "[0, 1)"),
    # bad choices
    ("trainer.gradient_clip_algorithm=foo", "trainer.gradient_clip_algorithm", "norm, value"),
    ("trainer.accelerator=quantum", "trainer.accelerator", "cpu"),
    pytest.param("trainer.accelerator=gpu", "trainer.accelerator", "CUDA", marks=NO_GPU),
    pytest.param("trainer.accelerator=cuda", "trainer.accelerator", "CUDA", marks=NO_GPU),
    pytest.param("trainer=gpu", "trainer.accelerator", "CUDA", marks=NO_GPU),
    ("training=rtrl training.update_every=0", "training.update_every", "positive"),
    ("data=digits data.layout=diagonal", "data.layout", "image"),
    ("data=moving_digits data.mode=guess", "data.mode", "classify"),
    # a model that reads another layout or batch keys than the data gives
    ("model=mdlstm data=adding", "model", "data=digits data.layout=image"),
    ("model=convlstm data=tinyshakespeare", "model", "data=moving_digits data.flatten=false"),
    ("model=renet data=copy", "model", "data.layout=image"),
    ("model=lrcn data=moving_digits", "model", "data.flatten=false"),
    ("model=lstm data=digits data.layout=image", "data.layout", "model=mdlstm"),
    ("model=memn2n data=adding", "model", "data=babi_synthetic data.structure=true"),
    ("model=tree_lstm data=trees", "data.structure", "parents"),
    # a learning rule or regularizer the model cannot take
    ("training=rtrl model=gru", "training", "elman"),
    ("training=tbptt model=blstm", "training", "bidirectional"),
    ("training=gf model=irnn", "training", "relu"),
    ("training=bu model=lstm model.num_layers=2", "training", "num_layers=2"),
    ("training=rtrl model=elman regularizer=zoneout", "training", "l1, l2"),
    ("regularizer=dropout model=mdlstm data=digits data.layout=image", "regularizer.dropout", "RecurrentNetwork"),
    ("model=esn training=rtrl", "training", "EchoStateTask trains its own way; use training=bptt"),
    ("model=esn regularizer=l2", "regularizer", "use regularizer=none"),
    ("regularizer=zoneout model=lstm model.implementation=fused", "regularizer.zoneout", "implementation=auto"),
    # monitored metrics
    ("callbacks.model_checkpoint.monitor=val/foo", "callbacks.model_checkpoint.monitor", "val/loss"),
    ("callbacks.model_checkpoint.monitor=test/loss", "callbacks.model_checkpoint.monitor", "train | val"),
    ("callbacks.model_checkpoint.monitor=loss", "callbacks.model_checkpoint.monitor", "<stage>/<name>"),
    ("callbacks=[default,early_stopping] callbacks.early_stopping.monitor=val/accuracy",
     "callbacks.early_stopping.monitor", "acc"),
    ("optimized_metric=val/score", "optimized_metric", "test"),
    # data folders
    ("data=tinyshakespeare data.root=/nonexistent/rnnlab", "data.root", "/nonexistent/rnnlab/input.txt"),
    ("data=ptb_char data.root=/nonexistent/rnnlab", "data.root", "ptb.char.train.txt"),
    ("data=ptb_word data.root=/nonexistent/rnnlab", "data.root", "ptb.train.txt"),
    ("data=video_folder data.root=/nonexistent/rnnlab", "data.root", "not a folder"),
]


class Accepted(Exception):
    """The command line got past the check: rnnlab.train.main would have run it."""


@pytest.fixture
def run_in_process(monkeypatch, capsys):
    """``run(args)``: (exit code, stderr lines) of ``rnnlab-train args`` in this process, stopped before Hydra runs."""

    def refuse_to_run():
        raise Accepted(" ".join(sys.argv[1:]))

    monkeypatch.setattr(rnnlab.train, "main", refuse_to_run)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def run(args: str) -> tuple[int, list[str]]:
        monkeypatch.setattr(sys, "argv", ["rnnlab-train", *shlex.split(args)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            rnnlab.train.cli()
        return stopped.value.code, capsys.readouterr().err.splitlines()

    return run


@pytest.mark.parametrize("args,key,allowed", CASES)
def test_bad_input_exits_2_with_one_line_naming_the_key(run_in_process, args, key, allowed):
    code, stderr = run_in_process(args)
    assert code == 2 and len(stderr) <= 3, stderr
    errors = [line for line in stderr if line.startswith("rnnlab-train: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"rnnlab-train: error: {key}: "), stderr
    assert allowed in errors[0], errors[0]


def test_the_table_is_long_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize(
    "args",
    [
        "model=gru model.hidden_size=8 optimizer.lr=1",
        "model=mdlstm data=digits data.layout=image",
        "model=convlstm data=moving_digits data.flatten=false",
        "model=memn2n data=babi_synthetic data.structure=true",
        "model=tree_lstm data=trees data.structure=true",
        "training=rtrl model=elman regularizer=l2",
        "training=tbptt model=lstm regularizer=[l2,zoneout]",
        "model=esn training=bptt head=full",
        "model=seq2seq data=reversal",
        "optimizer.lr=0 trainer.max_epochs=-1 trainer.max_steps=10 trainer.devices=auto",
        "callbacks=[default,early_stopping] callbacks.early_stopping.monitor=val/acc optimized_metric=test/mse",
        "scheduler=step scheduler.step_size=2 trainer.gradient_clip_val=1 trainer.gradient_clip_algorithm=value",
        "+trainer.limit_val_batches=4 +model.param_budget=1000",
    ],
)
def test_good_command_lines_pass(args):
    check_command_line(shlex.split(args))


@pytest.mark.parametrize("group", ["model", "data", "optimizer", "scheduler", "regularizer", "task", "trainer",
                                   "logger", "callbacks", "training", "head", "init"])
def test_every_shipped_config_uses_only_keys_its_constructor_takes(group):
    """The constructor-key check (``+model.bogus=1``) refuses nothing that conf/ ships (every option, uncomposed)."""
    for name in group_options(group):
        node = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
        node.pop("defaults", None)
        check_constructor_keys(OmegaConf.create({group: {name: node} if group == "regularizer" else node}))


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["model=mdlstm", "data=adding"], ["model: MDLSTM reads images or video", "data.layout=image"]),
        (["regularizer=zoneout", "regularizer.zoneout.p=-0.1"], ["regularizer.zoneout.p: must be in [0, 1]"]),
    ],
)
def test_the_console_script_exits_2_with_one_line(tmp_path, args, fragments):
    result = run_cli(tmp_path, *args, f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.splitlines()) <= 3 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.splitlines()[-1]
    assert line.startswith("rnnlab-train: error: ") and all(f in line for f in fragments), line
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run directory
