"""Gradient flow through time and stability diagnostics (rnnlab.analysis.gradient_flow; survey III.B, eqs. 11-16)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, Logger
from torch import nn
from torch.utils.data import DataLoader

from conftest import train_in_process
from rnnlab.analysis.diagnostics_callback import GradientFlowCallback
from rnnlab.analysis.gradient_flow import (
    StepwiseMismatch,
    measure_gradient_flow,
    output_projection_loss,
    ratio_lags,
    recurrent_spectra,
)
from rnnlab.data.base import TaskSpec
from rnnlab.errors import ConfigError
from rnnlab.models.elman import Elman
from rnnlab.models.gated import LSTM
from rnnlab.models.initialization import initialize
from rnnlab.tasks.sequence import SequenceTask

pytestmark = pytest.mark.usefixtures("one_thread")  # every test here: see conftest.one_thread


class LinearRNN(nn.Module):
    """h_t = W h_{t-1} + U x_t, outputs y_t = h_t; the model interface (CONTRIBUTING.md, 'The model interface')."""

    def __init__(self, weight: torch.Tensor, input_weight: torch.Tensor):
        super().__init__()
        self.weight_hh = nn.Parameter(weight)
        self.weight_ih = nn.Parameter(input_weight)

    def forward(self, x, lengths=None, state=None):
        h = x.new_zeros(x.shape[0], self.weight_hh.shape[0]) if state is None else state
        outputs = []
        for x_t in x.unbind(1):
            h = h @ self.weight_hh.T + x_t @ self.weight_ih.T
            outputs.append(h)
        return torch.stack(outputs, 1), h


def test_ratio_lags_follow_1_2_5_up_to_the_longest_lag():
    assert ratio_lags(1) == [1]
    assert ratio_lags(49) == [1, 2, 5, 10, 20]
    assert ratio_lags(200) == [1, 2, 5, 10, 20, 50, 100, 200]


@pytest.mark.parametrize("a", [0.8, 1.1])
def test_linear_rnn_gradient_is_a_power_of_a_times_the_last_gradient(a):
    """W = a I and L = sum_b <v_b, h_T>: dL/dh_k = a^(T-k) v, so ||dL/dh_{T-lag}|| = a^lag ||v|| (eqs. 11-16)."""
    torch.manual_seed(0)
    batch, steps, hidden, inputs = 3, 12, 4, 2
    model = LinearRNN(a * torch.eye(hidden, dtype=torch.float64), torch.randn(hidden, inputs, dtype=torch.float64))
    v = torch.randn(batch, hidden, dtype=torch.float64)
    x = torch.randn(batch, steps, inputs, dtype=torch.float64)
    curve = measure_gradient_flow(model, x, lambda outputs: (outputs[:, -1] * v).sum())
    lags = torch.arange(1, steps, dtype=torch.float64)
    torch.testing.assert_close(curve.grad_norms, a**lags * v.norm(), rtol=1e-5, atol=0)
    assert curve.ratios() == pytest.approx({lag: a ** (lag - 1) for lag in ratio_lags(steps - 1)}, rel=1e-5)


def test_linear_rnn_hidden_norm_decays_as_a_power_of_a():
    """Input at step 1 only: h_t = a^(t-1) U x_1, so the recorded RMS norm is a^(t-1) ||U x_1||_F / sqrt(B)."""
    torch.manual_seed(1)
    a, batch, steps = 0.7, 5, 9
    model = LinearRNN(a * torch.eye(3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64))
    x = torch.zeros(batch, steps, 2, dtype=torch.float64)
    x[:, 0] = torch.randn(batch, 2, dtype=torch.float64)
    curve = measure_gradient_flow(model, x, output_projection_loss)
    first = (x[:, 0] @ model.weight_ih.T).norm() / math.sqrt(batch)
    expected = first * a ** torch.arange(steps, dtype=torch.float64)
    torch.testing.assert_close(curve.hidden_norms, expected.detach(), rtol=1e-6, atol=0)


def test_tanh_elman_curve_matches_autograd_of_the_unrolled_network():
    torch.manual_seed(2)
    batch, steps = 3, 15
    model = Elman(input_size=4, output_size=2, hidden_size=6).eval()  # torch's fused nn.RNN
    x = torch.randn(batch, steps, 4)
    curve = measure_gradient_flow(model, x, output_projection_loss)
    rnn = model.rnn
    h, states, outputs = torch.zeros(batch, 6), [], []
    for t in range(steps):  # survey eqs. 1-3 written out
        h = torch.tanh(x[:, t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
        h.retain_grad()
        states.append(h)
        outputs.append(model.readout(h))
    output_projection_loss(torch.stack(outputs, 1)).backward()
    by_lag = torch.stack([states[steps - 1 - lag].grad.norm() for lag in range(1, steps)]).double()
    torch.testing.assert_close(curve.grad_norms, by_lag, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(curve.outputs, torch.stack(outputs, 1).detach(), rtol=1e-5, atol=1e-6)


def test_spectra_match_linalg_per_gate_block():
    hidden = 2
    gates = torch.tensor([[0.0, 2.0], [0.5, 0.0], [0.0, 1.0], [0.0, 0.0]])  # blocks: sigma 2 rho 1; sigma 1 rho 0
    torch.manual_seed(3)
    recurrent = torch.randn(5, 5)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(1, hidden)  # weight_hh_l0 [4H, H]: 4 gate blocks
            self.recurrent = nn.Linear(5, 5, bias=False)
            self.orthogonal = nn.Module()
            self.orthogonal.recurrent = nn.utils.parametrizations.orthogonal(nn.Linear(4, 4, bias=False))
            with torch.no_grad():
                self.rnn.weight_hh_l0.copy_(torch.cat([gates, torch.eye(2) * 0.3, -torch.eye(2)]))
                self.recurrent.weight.copy_(recurrent)

    spectra = recurrent_spectra(Model())
    assert spectra["rnn.weight_hh_l0[0]"] == pytest.approx({"sigma_max": 2.0, "spectral_radius": 1.0})
    assert spectra["rnn.weight_hh_l0[1]"] == pytest.approx({"sigma_max": 1.0, "spectral_radius": 0.0}, abs=1e-6)
    assert spectra["rnn.weight_hh_l0[2]"] == pytest.approx({"sigma_max": 0.3, "spectral_radius": 0.3})
    assert spectra["rnn.weight_hh_l0[3]"] == pytest.approx({"sigma_max": 1.0, "spectral_radius": 1.0})
    assert spectra["recurrent.weight"]["sigma_max"] == pytest.approx(float(torch.linalg.svdvals(recurrent)[0]))
    assert spectra["recurrent.weight"]["spectral_radius"] == pytest.approx(
        float(torch.linalg.eigvals(recurrent).abs().max()), rel=1e-5)
    assert spectra["orthogonal.recurrent.weight"] == pytest.approx({"sigma_max": 1.0, "spectral_radius": 1.0}, abs=1e-5)
    assert not any("weight_ih" in name for name in spectra)


def test_small_recurrent_weights_vanish_while_a_high_forget_bias_lstm_keeps_its_gradient():
    """Learning-free and seeded. With sigma_max(W_hh) = 0.25 and tanh (gamma 1), each step multiplies the gradient
    by at most 0.25 (survey III.B), so grad_ratio_10 <= 0.25^9; an LSTM with forget bias 5 (f ~ 0.993) carries it
    through the cell state."""
    torch.manual_seed(4)
    x = torch.randn(8, 30, 3)
    elman = Elman(input_size=3, output_size=2, hidden_size=32).eval()
    with torch.no_grad():
        weight = elman.rnn.weight_hh_l0
        weight.mul_(0.25 / torch.linalg.matrix_norm(weight, ord=2))
    lstm = initialize(LSTM(input_size=3, output_size=2, hidden_size=32), forget_bias=5.0).eval()
    elman_ratio = measure_gradient_flow(elman, x, output_projection_loss).ratios()[10]
    lstm_ratio = measure_gradient_flow(lstm, x, output_projection_loss).ratios()[10]
    assert elman_ratio <= 0.25**9 * (1 + 1e-4)
    assert lstm_ratio > 0.1
    assert recurrent_spectra(elman)["rnn.weight_hh_l0"]["sigma_max"] == pytest.approx(0.25)


@pytest.mark.parametrize("last_target_counts", [True, False])
def test_task_loss_is_the_cross_entropy_at_the_last_step_of_embedded_tokens(last_target_counts):
    """loss: task on token inputs with per-step class targets: the curve is that of CE(y_T, target_T) on the
    embedded ids; a last step whose target does not count falls back to the output projection."""
    torch.manual_seed(5)
    spec = TaskSpec(kind="classification", per_step=True, metric="acc", input_vocab=7)
    task = SequenceTask(LSTM(input_size=4, output_size=5, hidden_size=6), spec, optimizer=torch.optim.SGD,
                        embedding_dim=4)
    ids, targets = torch.randint(0, 7, (3, 10)), torch.randint(0, 5, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[:, -1] = last_target_counts
    callback = GradientFlowCallback(probe_size=3)
    callback.probe_batch = callback.make_probe_batch(
        {"inputs": ids, "lengths": torch.full((3,), 10), "targets": targets, "target_mask": mask}, per_step=True)
    entry = {"loss": "task"}
    curve = callback.measure_flow(task, task.model.eval(), entry)
    x = task.embedding(ids).detach()
    if last_target_counts:
        loss = lambda outputs: nn.functional.cross_entropy(outputs[:, -1], targets[:, -1])  # noqa: E731
    else:
        loss = output_projection_loss
    expected = measure_gradient_flow(task.model, x, loss)
    torch.testing.assert_close(curve.grad_norms, expected.grad_norms, rtol=1e-6, atol=0)
    assert entry["loss"] == ("task" if last_target_counts else "output") and callback.note is None


def test_a_model_that_cannot_run_step_by_step_is_refused():
    model = Elman(input_size=3, output_size=2, hidden_size=4, bidirectional=True).eval()
    with pytest.raises(StepwiseMismatch, match="differs from the whole sequence"):
        measure_gradient_flow(model, torch.randn(2, 6, 3), output_projection_loss)


def test_non_finite_recurrent_weights_give_nan_spectra_instead_of_an_error():
    model = Elman(input_size=2, output_size=1, hidden_size=3)
    with torch.no_grad():
        model.rnn.weight_hh_l0[0, 0] = math.nan  # a diverged run
    spectra = recurrent_spectra(model)["rnn.weight_hh_l0"]
    assert math.isnan(spectra["sigma_max"]) and math.isnan(spectra["spectral_radius"])


@pytest.mark.parametrize("per_step", [True, False])
def test_probe_batch_takes_the_longest_rows_cut_to_their_common_length(per_step):
    lengths = torch.tensor([5, 9, 7, 3, 9])
    batch = {"inputs": torch.arange(5 * 9.0).view(5, 9, 1), "lengths": lengths,
             "targets": torch.arange(5 * 9).view(5, 9) if per_step else torch.arange(5 * 8).view(5, 8)}
    probe = GradientFlowCallback(probe_size=3).make_probe_batch(batch, per_step=per_step)
    assert probe["lengths"].tolist() == [7, 7, 7]  # rows 1, 2, 4 (lengths 9, 7, 9), every probed step valid
    torch.testing.assert_close(probe["inputs"], batch["inputs"][[1, 2, 4], :7])
    expected_targets = batch["targets"][[1, 2, 4], :7] if per_step else batch["targets"][[1, 2, 4]]
    torch.testing.assert_close(probe["targets"], expected_targets)
    short = GradientFlowCallback(probe_size=2, max_steps=4).make_probe_batch(batch, per_step=per_step)
    assert short["lengths"].tolist() == [4, 4] and short["inputs"].shape == (2, 4, 1)


def test_bad_settings_name_their_key():
    with pytest.raises(ConfigError, match="every_n_steps"):
        GradientFlowCallback(every_n_steps=0)
    with pytest.raises(ConfigError, match="loss"):
        GradientFlowCallback(loss="sequence")
    with pytest.raises(ConfigError, match="max_steps"):
        GradientFlowCallback(max_steps=1)


class ConstantGradient(pl.LightningModule):
    """Loss 10 * w: the gradient is 10 at every step; no model to probe."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return 10 * self.w.sum() + 0 * batch["inputs"].sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        items = [{"inputs": torch.randn(5, 2), "lengths": torch.tensor(5)} for _ in range(8)]
        return DataLoader(items, batch_size=2)


class ImageLogger(Logger):
    """A logger with ``log_image`` (as W&B's), recording what it receives."""

    def __init__(self):
        super().__init__()
        self.images: dict[str, list] = {}

    name = "images"
    version = "0"

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None):
        self.images[key] = images


def test_gradient_norm_is_taken_before_clipping_and_reaches_every_logger(tmp_path):
    callback = GradientFlowCallback(every_n_steps=2)
    image_logger = ImageLogger()
    module = ConstantGradient()
    trainer = pl.Trainer(
        max_steps=3, gradient_clip_val=1.0, callbacks=[callback],
        logger=[CSVLogger(tmp_path, name="csv"), image_logger],
        default_root_dir=tmp_path, accelerator="cpu", log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module)
    assert module.w.item() == pytest.approx(-0.3)  # three steps of the clipped gradient 1, lr 0.1
    assert float(trainer.callback_metrics["diagnostics/grad_norm_max"]) == pytest.approx(10.0)  # before clipping
    assert float(trainer.callback_metrics["diagnostics/grad_norm_epoch"]) == pytest.approx(10.0)
    document = json.loads((tmp_path / "diagnostics" / "gradient_flow.json").read_text())
    assert "gradient flow not measured" in document["note"]
    assert [p["step"] for p in document["probes"]] == [0, 2, 3]
    assert document["probes"][1]["grad_norm"] == pytest.approx({"mean": 10.0, "max": 10.0, "steps": 2})
    assert Path(image_logger.images["diagnostics/grad_norm"][0]).exists()
    assert "diagnostics/grad_norm_step" in (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()


SMALL_DATA = ("data.train_size=320", "data.val_size=128", "data.test_size=128")  # debug=fast reads 5 + 2 + 2 batches


def image_tags(event_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir), size_guidance={"images": 0})
    accumulator.Reload()
    return set(accumulator.Tags()["images"])


def test_end_to_end_records_ratios_plots_and_tensorboard_images(tmp_path):
    record = train_in_process(
        tmp_path, "model=elman", "model.hidden_size=16", "debug=fast", "data.seq_len=30", *SMALL_DATA,
        "callbacks=[diagnostics,minimal]", "callbacks.gradient_flow.every_n_steps=2", "logger=tensorboard",
    )
    assert record["status"] == "completed", record["error"]
    metrics = record["metrics"]
    assert metrics["diagnostics/grad_ratio_1"] == 1.0
    assert {f"diagnostics/grad_ratio_{lag}" for lag in (2, 5, 10, 20)} <= set(metrics)
    assert metrics["diagnostics/sigma_max"] > 0
    assert metrics["diagnostics/gamma_sigma_max"] == metrics["diagnostics/sigma_max"]  # tanh: gamma 1
    assert metrics["diagnostics/grad_norm_max"] >= metrics["diagnostics/grad_norm"] > 0
    directory = tmp_path / "diagnostics"
    for name in ("gradient_flow", "hidden_norm", "spectra", "grad_norm"):
        assert (directory / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads((directory / "gradient_flow.json").read_text())
    assert document["note"] is None and document["probe"]["steps"] == 30 and document["gamma"] == 1.0
    assert [p["step"] for p in document["probes"]] == [0, 2, 4, 5]
    final = document["probes"][-1]
    assert len(final["grad_norm_by_lag"]) == 29 and len(final["hidden_norm"]) == 30
    assert final["grad_ratio"]["10"] == pytest.approx(metrics["diagnostics/grad_ratio_10"])
    assert "diagnostics/gradient_flow" in image_tags(tmp_path / "tensorboard")


def test_the_callback_leaves_training_unchanged(tmp_path):
    """Identical conditions (CONTRIBUTING.md, 'Identical conditions'): probing touches no gradient and no random
    state."""
    common = ("model=lstm", "model.hidden_size=8", "debug=fast", "data.seq_len=20", *SMALL_DATA, "model.dropout=0.2",
              "model.num_layers=2")
    plain = train_in_process(tmp_path / "plain", *common)
    probed = train_in_process(tmp_path / "probed", *common, "callbacks=[diagnostics,minimal]",
                              "callbacks.gradient_flow.every_n_steps=1")
    assert probed["status"] == plain["status"] == "completed"
    for name in ("val/loss", "test/loss"):
        assert probed["metrics"][name] == plain["metrics"][name]
