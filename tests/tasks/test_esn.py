"""EchoStateTask: the readout it fits equals the ridge solution computed by hand on the collected states, for every
head (last / mean pooling, per step, classes as one-hot), through the ordinary Trainer with no optimizer steps."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from conftest import compose_config, train_in_process
from rnnlab.data.base import SequenceDataModule, SequenceDataset, TaskSpec
from rnnlab.data.synthetic import AddingDataModule, CopyDataModule
from rnnlab.errors import ConfigError
from rnnlab.models.elman import Elman
from rnnlab.models.reservoir import EchoStateNetwork
from rnnlab.tasks.esn import EchoStateTask


class StepRegression(SequenceDataModule):
    """Random variable-length sequences with a random 2-d target at every step (per-step regression); with
    ``masked``, each item also carries a random target_mask (the steps whose targets count)."""

    input_size, output_size = 3, 2
    task = TaskSpec(kind="regression", per_step=True, metric="mse")

    def __init__(self, masked: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.masked = masked

    def build_splits(self):
        generator = torch.Generator().manual_seed(self.seed)

        def split(count):
            lengths = torch.randint(2, 9, (count,), generator=generator).tolist()
            items = [(torch.randn(n, 3, generator=generator), torch.randn(n, 2, generator=generator)) for n in lengths]
            if self.masked:
                items = [(x, y, torch.rand(len(x), generator=generator) < 0.6) for x, y in items]
            return MaskedDataset(items)

        return {"train": split(96), "val": split(32), "test": split(32)}


class MaskedDataset(SequenceDataset):
    def __init__(self, items):
        super().__init__([item[0] for item in items], [item[1:] for item in items])

    def __getitem__(self, index):
        return (self.inputs[index], *self.targets[index])


CASES = {
    # name: (datamodule, model kwargs, pooling, ridge, validation batches during fit)
    "adding-last-lengths": (
        lambda: AddingDataModule(seq_len=8, min_seq_len=4, train_size=200, val_size=32, test_size=32, batch_size=32),
        dict(hidden_size=24), "last", 1e-3, 2,
    ),
    "adding-mean-no-validation": (
        lambda: AddingDataModule(seq_len=8, min_seq_len=4, train_size=200, val_size=32, test_size=32, batch_size=32),
        dict(hidden_size=24, leak_rate=0.5), "mean", 1e-3, 0,
    ),
    "per-step-regression-ridge-0": (
        lambda: StepRegression(batch_size=16), dict(hidden_size=10, density=0.5, input_scaling=0.3), "last", 0.0, 2,
    ),
    "per-step-regression-target-mask": (
        lambda: StepRegression(masked=True, batch_size=16), dict(hidden_size=10, density=0.5), "last", 1e-3, 1,
    ),
    "copy-classes-bidirectional-deep": (
        lambda: CopyDataModule(delay=3, train_size=64, val_size=16, test_size=16, batch_size=16),
        dict(hidden_size=12, num_layers=2, bidirectional=True), "last", 1e-2, 1,
    ),
}


def fit(case: str, max_epochs: int = 1):
    make_data, model_kwargs, pooling, ridge, val_batches = CASES[case]
    datamodule = make_data()
    datamodule.setup("fit")
    torch.manual_seed(0)
    model = EchoStateNetwork(datamodule.input_size, datamodule.output_size, **model_kwargs)
    task = EchoStateTask(model, datamodule.task, optimizer=None, pooling=pooling, ridge=ridge)
    trainer = make_trainer(max_epochs, val_batches)
    trainer.fit(task, datamodule=datamodule)
    return datamodule, model, task, trainer


def make_trainer(max_epochs: int, val_batches: int) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", max_epochs=max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=val_batches,
        num_sanity_val_steps=0,
    )


def assert_readout_is(model, weight, bias):
    scale = max(1.0, np.abs(weight).max())
    np.testing.assert_allclose(model.readout.weight.detach().numpy(), weight, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(model.readout.bias.detach().numpy(), bias, rtol=0, atol=1e-4 * scale)


def ridge_by_hand(datamodule, model, pooling: str, ridge: float):
    """Collect the readout's inputs sequence by sequence and solve [W; b] = (X^T X + ridge I)^-1 X^T Y in numpy."""
    rows, targets = [], []
    with torch.no_grad():
        for batch in datamodule.train_dataloader():
            hidden, _ = model.run_layers(batch["inputs"], batch["lengths"], None)
            for b, length in enumerate(batch["lengths"].tolist()):
                if datamodule.task.per_step:
                    counted = batch["target_mask"][b, :length] if "target_mask" in batch else slice(None)
                    rows.append(hidden[b, :length][counted].numpy())
                    targets.append(batch["targets"][b, :length][counted].numpy())
                else:
                    pooled = hidden[b, length - 1] if pooling == "last" else hidden[b, :length].mean(0)
                    rows.append(pooled.numpy()[None])
                    targets.append(batch["targets"][b].numpy().reshape(1, -1))
    x = np.concatenate(rows).astype(np.float64)
    x = np.hstack([x, np.ones((len(x), 1))])
    y = np.concatenate(targets)
    if datamodule.task.kind == "classification":
        y = np.eye(datamodule.output_size)[y.reshape(-1)]
    y = y.reshape(len(x), -1).astype(np.float64)
    if ridge > 0:
        solution = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    else:
        solution = np.linalg.lstsq(x, y, rcond=None)[0]
    return solution[:-1].T, solution[-1]


@pytest.mark.parametrize("case", list(CASES))
def test_fitted_readout_is_the_ridge_solution_on_the_collected_states(case):
    datamodule, model, task, trainer = fit(case)
    _, _, pooling, ridge, val_batches = CASES[case]
    assert_readout_is(model, *ridge_by_hand(datamodule, model, pooling, ridge))
    assert trainer.global_step == 0 and trainer.current_epoch == 1
    if val_batches:  # the validation inside fit already saw the fitted readout
        during_fit = trainer.callback_metrics["val/loss"].item()
        trainer.validate(task, datamodule=datamodule, verbose=False)
        assert trainer.callback_metrics["val/loss"].item() == pytest.approx(during_fit, rel=1e-6)


def test_one_pass_only_and_the_reservoir_never_changes():
    _, model, _, trainer = fit("adding-last-lengths", max_epochs=4)
    assert trainer.current_epoch == 1 and trainer.global_step == 0  # stopped after the one pass
    torch.manual_seed(0)  # as in fit(): the same reservoir, untrained
    untrained = dict(EchoStateNetwork(2, 1, **CASES["adding-last-lengths"][1]).named_buffers())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, untrained[name]), name
    _, once, _, _ = fit("adding-last-lengths", max_epochs=1)
    assert torch.equal(once.readout.weight, model.readout.weight)


def test_fitted_readout_beats_the_trivial_predictor_on_held_out_data():
    datamodule, model, task, trainer = fit("adding-last-lengths")
    trainer.test(task, datamodule=datamodule, verbose=False)
    assert trainer.callback_metrics["test/mse"].item() < AddingDataModule.TRIVIAL_MSE


def test_any_network_with_a_linear_readout_can_be_fitted():
    datamodule = CASES["adding-last-lengths"][0]()
    datamodule.setup("fit")
    torch.manual_seed(0)
    model = Elman(2, 1, hidden_size=16)  # a random (untrained) Elman network as the reservoir
    before = {name: p.detach().clone() for name, p in model.rnn.named_parameters()}
    task = EchoStateTask(model, datamodule.task, ridge=1e-3)
    make_trainer(max_epochs=1, val_batches=0).fit(task, datamodule=datamodule)
    assert_readout_is(model, *ridge_by_hand(datamodule, model, "last", 1e-3))
    for name, p in model.rnn.named_parameters():
        assert torch.equal(p, before[name])


def test_bad_ridge_names_its_key():
    model = EchoStateNetwork(2, 1, hidden_size=8, density=0.5)
    spec = TaskSpec(kind="regression", per_step=False, metric="mse")
    with pytest.raises(ConfigError) as error:
        EchoStateTask(model, spec, ridge=-1.0)
    assert error.value.key == "ridge"


def test_ctc_data_is_refused():
    model = EchoStateNetwork(2, 3, hidden_size=8, density=0.5)
    with pytest.raises(ConfigError) as error:
        EchoStateTask(model, TaskSpec(kind="ctc", per_step=False, metric="ler"))
    assert "task=sequence" in error.value.message


def test_model_esn_selects_the_esn_task(tmp_path):
    """conf/model/esn.yaml overrides the task group; needs `task` listed before `model` in train.yaml's defaults."""
    cfg = compose_config(tmp_path, ["model=esn"])
    assert cfg.hydra.runtime.choices.task == "esn"
    assert cfg.task._target_ == "rnnlab.tasks.esn.EchoStateTask"
    assert compose_config(tmp_path, ["model=esn", "task=sequence"]).hydra.runtime.choices.task == "sequence"


@pytest.mark.parametrize(
    "overrides,error",
    [
        (["training=rtrl"], "training: is rtrl, but task EchoStateTask trains its own way; use training=bptt"),
        (["regularizer=l2"], "regularizer: task EchoStateTask trains its own way and takes no regularizers; use "
                             "regularizer=none"),
    ],
)
def test_the_esn_task_refuses_a_learning_rule_and_regularizers(tmp_path, overrides, error):
    """Its constructor takes neither ``training`` nor ``regularizers`` (``rnnlab.tasks.wiring.takes_argument``)."""
    record = train_in_process(tmp_path, "model=esn", "model.hidden_size=8", *overrides, "debug=fast")
    assert record["status"] == "failed" and record["error"] == error
