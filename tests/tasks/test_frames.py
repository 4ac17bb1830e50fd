"""FramePredictionTask: encode each clip's context frames, forecast the rest from the encoder state
(Shi et al. 2015)."""

from __future__ import annotations

import functools

import pytest
import torch

from rnnlab.data.base import TaskSpec
from rnnlab.data.video import MovingDigitsDataModule
from rnnlab.errors import ConfigError
from rnnlab.models.convolutional import ConvLSTM
from rnnlab.models.gated import LSTM
from rnnlab.tasks.frames import FramePredictionTask, encode_and_forecast
from rnnlab.tasks.sequence import SequenceTask

SPEC = TaskSpec(kind="regression", per_step=True, metric="mse")
ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def model(**kwargs):
    torch.manual_seed(0)
    return ConvLSTM(1, 4 * 5, hidden_size=3, kernel_size=3, **kwargs).eval()


def clips(batch=3, steps=6, seed=0):
    return torch.rand(batch, steps, 1, 4, 5, generator=torch.Generator().manual_seed(seed))


def mask_after(context: list[int], steps: int) -> torch.Tensor:
    return torch.arange(steps)[None, :] >= torch.tensor(context)[:, None]


def test_each_clip_is_encoded_over_its_context_then_forecast():
    net, x = model(), clips()
    context, lengths = [2, 4, 3], torch.tensor([6, 6, 5])
    with torch.no_grad():
        outputs = encode_and_forecast(net, x, lengths, mask_after(context, 6))
        for b, c in enumerate(context):
            encoded, state = net(x[b : b + 1, :c])
            forecast, _ = net.forecast(state, 6 - c)
            torch.testing.assert_close(outputs[b], torch.cat([encoded, forecast], dim=1)[0], rtol=0, atol=1e-6)


def test_forecast_never_sees_the_frames_it_predicts():
    net, x = model(), clips()
    target_mask = mask_after([3, 3, 3], 6)
    other = torch.where(target_mask[..., None, None, None], torch.rand_like(x), x)  # new future frames
    lengths = torch.full((3,), 6)
    with torch.no_grad():
        torch.testing.assert_close(
            encode_and_forecast(net, other, lengths, target_mask), encode_and_forecast(net, x, lengths, target_mask),
            rtol=0, atol=0,
        )  # fmt: skip


def test_without_a_forecaster_it_is_the_encoder_over_blanked_frames():
    net, x = model(forecaster=False), clips()
    target_mask = mask_after([2, 4, 3], 6)
    blanked = x.masked_fill(target_mask[..., None, None, None], 0.0)  # what moving_digits feeds in predict mode
    lengths = torch.full((3,), 6)
    with torch.no_grad():
        whole, _ = net(blanked, lengths)
        torch.testing.assert_close(encode_and_forecast(net, x, lengths, target_mask), whole, rtol=0, atol=1e-6)


def test_loss_counts_only_the_forecast_frames():
    net = model()
    task = FramePredictionTask(net, SPEC, ADAM)
    x = clips()
    target_mask = mask_after([2, 3, 3], 6)
    lengths = torch.tensor([6, 5, 6])
    targets = torch.rand(3, 6, 20)
    with torch.no_grad():
        predictions = encode_and_forecast(net, x, lengths, target_mask)
        loss, count = task.loss_and_count(predictions, targets, lengths, target_mask)
    valid = target_mask & (torch.arange(6)[None, :] < lengths[:, None])
    expected = ((predictions - targets) ** 2)[valid].mean()
    assert count == int(valid.sum()) * 20
    torch.testing.assert_close(loss, expected)


def test_batches_without_target_mask_run_like_the_sequence_task():
    net = ConvLSTM(1, 3, hidden_size=2, readout="pool").eval()
    spec = TaskSpec(kind="classification", per_step=False, metric="acc")
    batch = {"inputs": clips(), "lengths": torch.tensor([6, 4, 5]), "targets": torch.tensor([0, 2, 1])}
    with torch.no_grad():
        frames = FramePredictionTask(net, spec, ADAM).run_model(batch, "val")
        plain = SequenceTask(net, spec, ADAM).run_model(batch, "val")
    torch.testing.assert_close(frames, plain, rtol=0, atol=0)


def test_needs_a_model_that_forecasts_and_a_context_step():
    with pytest.raises(ConfigError, match="forecast"):
        FramePredictionTask(LSTM(3, 2), SPEC, ADAM)
    with pytest.raises(ValueError, match="context"):
        encode_and_forecast(model(), clips(), torch.full((3,), 6), mask_after([0, 2, 2], 6))


def test_runs_on_moving_digit_batches():
    data = MovingDigitsDataModule(
        frame_size=8, digit_size=4, num_frames=5, context_frames=3, speed=1.0, flatten=False,
        train_size=4, val_size=2, test_size=2, batch_size=4,
    )  # fmt: skip
    data.setup()
    batch = next(iter(data.train_dataloader()))
    net = ConvLSTM(1, data.output_size, hidden_size=2, kernel_size=3)
    task = FramePredictionTask(net, data.task, ADAM)
    outputs = task.run_model(batch, "train")
    assert outputs.shape == batch["targets"].shape == (4, 5, 64)
    loss, count = task.loss_and_count(outputs, batch["targets"], batch["lengths"], batch["target_mask"])
    loss.backward()
    assert count == 4 * 2 * 64
    assert all(p.grad is not None for p in net.forecaster.parameters())  # the forecast frames train the forecaster
