"""Convolutional recurrent family: RCNN (Liang & Hu 2015), ConvLSTM (Shi et al. 2015), LRCN (Donahue et al. 2015),
FT-LSTM (Li et al. 2015). Steps by hand from the modules' own weights, ConvLSTM with 1x1 kernels against a per-pixel
nn.LSTMCell, the video interface (padding, rows alone, carried state), config errors, budgets, and learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import compose_config, train_in_process
from rnnlab.data.video import MovingDigitsDataModule
from rnnlab.errors import ConfigError
from rnnlab.models.convolutional import ConvLSTM
from rnnlab.models.frame_lstm import LRCN, FrequencyTimeLSTM
from rnnlab.models.rcnn import RCNN, RecurrentConvLayer
from rnnlab.wiring import build_model
from zoo_checks import check_interface

sigmoid = torch.sigmoid


def seeded(seed=0):
    torch.manual_seed(seed)


def video(batch=3, steps=4, channels=2, height=5, width=6, seed=0):
    return torch.randn(batch, steps, channels, height, width, generator=torch.Generator().manual_seed(seed))


def conv(x, layer):
    """A same-size convolution with ``layer``'s weight and bias, written with F.conv2d."""
    return F.conv2d(x, layer.weight, layer.bias, padding=layer.weight.shape[-1] // 2)


# --- RCNN ---------------------------------------------------------------------------------------------------------


def lrn_by_hand(f, size, alpha=0.001, beta=0.75):
    """Liang & Hu 2015 eq. 4, one channel at a time:
    f_k / (1 + alpha/N sum_{max(0,k-N/2)}^{min(K-1,k+N/2)} f^2)^beta."""
    channels = f.shape[1]
    out = torch.empty_like(f)
    for k in range(channels):
        lo, hi = max(0, k - size // 2), min(channels - 1, k + size // 2)
        total = (f[:, lo : hi + 1] ** 2).sum(1)
        out[:, k] = f[:, k] / (1 + alpha / size * total) ** beta
    return out


def test_rcl_with_zero_iterations_is_a_convolution_and_relu_lrn():
    seeded()
    layer = RecurrentConvLayer(2, 16, kernel_size=3, iterations=0, lrn=True)
    u = torch.randn(4, 2, 6, 5)
    expected = lrn_by_hand(torch.relu(conv(u, layer.feedforward)), size=16 // 8 + 1)
    torch.testing.assert_close(layer(u), expected, rtol=0, atol=1e-6)
    plain = RecurrentConvLayer(2, 16, kernel_size=3, iterations=0, lrn=False)
    torch.testing.assert_close(plain(u), torch.relu(conv(u, plain.feedforward)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("lrn", [True, False])
def test_rcl_one_and_two_iterations_by_hand(lrn):
    seeded()
    layer = RecurrentConvLayer(3, 8, kernel_size=3, iterations=1, lrn=lrn)
    g = (lambda z: lrn_by_hand(torch.relu(z), size=2)) if lrn else torch.relu
    u = torch.randn(2, 3, 5, 7)
    drive = conv(u, layer.feedforward)
    x0 = g(drive)
    x1 = g(drive + F.conv2d(x0, layer.recurrent.weight, padding=1))  # x(1) = g(f(w_f*u + w_r*x(0) + b))
    torch.testing.assert_close(layer(u), x1, rtol=0, atol=1e-6)
    layer.iterations = 2
    x2 = g(drive + F.conv2d(x1, layer.recurrent.weight, padding=1))
    torch.testing.assert_close(layer(u), x2, rtol=0, atol=1e-6)


def lrn_as_written(f, size):
    """The LRN as first written, by autograd: the window sum by average pooling over the padded channel axis."""
    half = size // 2
    squared = F.pad(f.pow(2).unsqueeze(1), (0, 0, 0, 0, half, half))
    window = F.avg_pool3d(squared, (2 * half + 1, 1, 1), stride=1).squeeze(1) * (2 * half + 1)
    return f / (1 + 0.001 / size * window).pow(0.75)


@pytest.mark.parametrize("channels", [1, 3, 16, 55])
def test_rcl_hand_written_activation_backward_matches_autograd(channels):
    """RectifiedResponseNorm (ReLU + LRN with its own backward) against relu + lrn_as_written by autograd, inside a
    whole RCL with two iterations: outputs and every gradient to 1e-5 (float64: the iterations amplify float32
    rounding at these magnitudes)."""
    seeded()
    layer = RecurrentConvLayer(2, channels, kernel_size=3, iterations=2, lrn=True).double()
    with torch.no_grad():  # large pre-activations, so the normalisation is far from the identity
        layer.feedforward.weight.mul_(30)
        layer.recurrent.weight.mul_(30)
    u = torch.randn(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, channels, 6, 5, dtype=torch.float64)
    leaves = [u, *layer.parameters()]

    def as_written():
        drive = F.conv2d(u, layer.feedforward.weight, layer.feedforward.bias, padding=1)
        x = lrn_as_written(torch.relu(drive), layer.lrn_size)
        for _ in range(2):
            x = lrn_as_written(torch.relu(drive + F.conv2d(x, layer.recurrent.weight, padding=1)), layer.lrn_size)
        return x

    out, expected = layer(u), as_written()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad((out * weights).sum(), leaves)
    expected_grads = torch.autograd.grad((expected * weights).sum(), leaves)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_rcnn_is_rcls_pooling_global_max_and_readout_per_frame():
    seeded()
    model = RCNN(2, 4, hidden_size=8, num_layers=3, iterations=2, pool_every=2).eval()
    x = video(batch=2, steps=3, channels=2, height=7, width=6)
    lengths = torch.tensor([3, 2])
    outputs, state = model(x, lengths)
    assert state is None and outputs.shape == (2, 3, 4)
    for b in range(2):
        for t in range(3):
            if t >= lengths[b]:
                assert not outputs[b, t].any()  # padded frames emit zeros
                continue
            h = model.layers[0](x[b, t : t + 1])
            h = F.max_pool2d(model.layers[1](h), 2, ceil_mode=True)  # after the 2nd RCL (pool_every=2), 7x6 -> 4x3
            h = model.layers[2](h).amax(dim=(-2, -1))  # no pooling after the last RCL; global max
            torch.testing.assert_close(outputs[b, t], model.readout(h)[0], rtol=0, atol=1e-6)


# --- ConvLSTM -----------------------------------------------------------------------------------------------------


def lstm_cell_like(cell):
    """An nn.LSTMCell with a 1x1-kernel ConvLSTM cell's weights (same gate order i, f, g, o)."""
    hidden, channels = cell.hidden_size, cell.input_conv.in_channels
    reference = nn.LSTMCell(channels, hidden)
    with torch.no_grad():
        reference.weight_ih.copy_(cell.input_conv.weight[:, :, 0, 0])
        reference.weight_hh.copy_(cell.hidden_conv.weight[:, :, 0, 0])
        reference.bias_ih.copy_(cell.input_conv.bias)
        reference.bias_hh.zero_()
    return reference


def test_convlstm_with_1x1_kernels_is_a_per_pixel_lstm():
    seeded()
    model = ConvLSTM(2, 2 * 5 * 6, hidden_size=4, num_layers=2, kernel_size=1, peepholes=False, forecaster=False)
    x = video(batch=3, steps=4, channels=2)
    with torch.no_grad():
        outputs, (h, c) = model(x)
        cells = [lstm_cell_like(cell) for cell in model.encoder]
        pixels = x.permute(0, 3, 4, 1, 2).reshape(-1, 4, 2)  # every (clip, row, column) is a sequence [T, C]
        states = [(torch.zeros(len(pixels), 4), torch.zeros(len(pixels), 4)) for _ in cells]
        for t in range(4):
            layer_input = pixels[:, t]
            for layer, cell in enumerate(cells):
                states[layer] = cell(layer_input, states[layer])
                layer_input = states[layer][0]
            both = torch.cat([states[0][0], states[1][0]], dim=1)  # [B*H*W, 2 hidden]
            frame = model.readout(both.view(3, 5, 6, 8).permute(0, 3, 1, 2))  # the 1x1 readout on those states
            torch.testing.assert_close(outputs[:, t], frame.flatten(1), rtol=0, atol=1e-5)
    for layer in range(2):
        pixel_h, pixel_c = (s.view(3, 5, 6, 4).permute(0, 3, 1, 2) for s in states[layer])
        torch.testing.assert_close(h[layer], pixel_h, rtol=0, atol=1e-5)
        torch.testing.assert_close(c[layer], pixel_c, rtol=0, atol=1e-5)


def convlstm_step_by_hand(cell, x, h, c):
    """Shi et al. 2015 eq. 3 gate by gate with F.conv2d (x None: no input, bias in the hidden convolution)."""
    hid = cell.hidden_size
    w_h = cell.hidden_conv.weight
    b = cell.input_conv.bias if cell.input_conv is not None else cell.hidden_conv.bias
    pre = {}
    for k, gate in enumerate("ifgo"):
        rows = slice(k * hid, (k + 1) * hid)
        total = F.conv2d(h, w_h[rows], b[rows], padding=w_h.shape[-1] // 2)
        if x is not None:
            total = total + F.conv2d(x, cell.input_conv.weight[rows], padding=w_h.shape[-1] // 2)
        pre[gate] = total
    w_ci, w_cf, w_co = cell.peephole
    i = sigmoid(pre["i"] + w_ci * c)
    f = sigmoid(pre["f"] + w_cf * c)
    c_new = f * c + i * torch.tanh(pre["g"])
    o = sigmoid(pre["o"] + w_co * c_new)
    return o * torch.tanh(c_new), c_new


def test_convlstm_two_steps_by_hand_with_3x3_kernels_and_per_location_peepholes():
    seeded()
    model = ConvLSTM(2, 1, hidden_size=3, num_layers=1, kernel_size=3, frame_size=[5, 6], readout="pool")
    cell = model.encoder[0]
    assert cell.peephole.shape == (3, 3, 5, 6)  # W_ci, W_cf, W_co: one weight per channel and location
    x = video(batch=2, steps=2, channels=2)
    h0, c0 = torch.randn(1, 2, 3, 5, 6), torch.randn(1, 2, 3, 5, 6)
    with torch.no_grad():
        outputs, (h, c) = model(x, state=(h0, c0))
        h1, c1 = convlstm_step_by_hand(cell, x[:, 0], h0[0], c0[0])
        h2, c2 = convlstm_step_by_hand(cell, x[:, 1], h1, c1)
    torch.testing.assert_close(h[0], h2, rtol=0, atol=1e-6)
    torch.testing.assert_close(c[0], c2, rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs[:, 0], model.readout(h1.mean(dim=(-2, -1))), rtol=0, atol=1e-6)


def test_forecaster_reads_no_input_and_starts_from_the_encoder_state():
    seeded()
    model = ConvLSTM(1, 5 * 6, hidden_size=3, num_layers=2, kernel_size=3)
    assert model.forecaster[0].input_conv is None  # the paper's forecaster has no input
    x = video(batch=2, steps=3, channels=1)
    with torch.no_grad():
        _, state = model(x)
        forecast, _ = model.forecast(state, 2)
        hs, cs = [state[0][0], state[0][1]], [state[1][0], state[1][1]]
        for t in range(2):
            hs[0], cs[0] = convlstm_step_by_hand(model.forecaster[0], None, hs[0], cs[0])
            hs[1], cs[1] = convlstm_step_by_hand(model.forecaster[1], hs[0], hs[1], cs[1])
            expected = conv(torch.cat(hs, dim=1), model.readout).flatten(1)  # 1x1 conv of both layers' states
            torch.testing.assert_close(forecast[:, t], expected, rtol=0, atol=1e-6)


def test_convlstm_without_forecaster_forecasts_by_feeding_blank_frames():
    seeded()
    model = ConvLSTM(1, 5 * 6, hidden_size=3, forecaster=False)
    x = video(batch=2, steps=5, channels=1)
    blanked = x.clone()
    blanked[:, 3:] = 0
    with torch.no_grad():
        whole, _ = model(blanked)
        _, state = model(x[:, :3])
        forecast, _ = model.forecast(state, 2)
    torch.testing.assert_close(forecast, whole[:, 3:], rtol=0, atol=1e-6)


# --- LRCN ---------------------------------------------------------------------------------------------------------


def test_lrcn_is_the_cnn_on_each_frame_then_an_lstm():
    seeded()
    model = LRCN(2, 3, hidden_size=5, channels=[4, 6], feature_size=7).eval()
    x = video(batch=3, steps=4, channels=2, height=8, width=9)
    lengths = torch.tensor([4, 2, 3])
    reference = nn.LSTM(7, 5, batch_first=True)
    reference.load_state_dict(model.lstm.rnn.state_dict())
    with torch.no_grad():
        outputs, (h, c) = model(x, lengths)
        for b, length in enumerate(lengths.tolist()):
            features = torch.stack([model.cnn(x[b, t : t + 1])[0] for t in range(length)])  # one frame at a time
            hidden, (h_b, c_b) = reference(features[None])
            torch.testing.assert_close(outputs[b, :length], model.lstm.readout(hidden[0]), rtol=0, atol=1e-5)
            torch.testing.assert_close(h[:, b], h_b[:, 0], rtol=0, atol=1e-5)
            torch.testing.assert_close(c[:, b], c_b[:, 0], rtol=0, atol=1e-5)


def test_frame_cnn_is_convolution_relu_pooling_blocks_then_linear():
    seeded()
    model = LRCN(1, 2, channels=[3], feature_size=4, pool_size=2)
    frames = torch.randn(5, 1, 6, 6)
    layers = model.cnn.layers
    pooled = F.max_pool2d(torch.relu(conv(frames, layers[0])), 2)  # 6x6 -> 3x3
    pooled = F.adaptive_avg_pool2d(pooled, 2)
    expected = torch.relu(pooled.flatten(1) @ layers[-2].weight.T + layers[-2].bias)
    torch.testing.assert_close(model.cnn(frames), expected, rtol=0, atol=1e-6)


# --- FT-LSTM ------------------------------------------------------------------------------------------------------


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = sigmoid(f) * c + sigmoid(i) * torch.tanh(g)
    return sigmoid(o) * torch.tanh(c), c


def test_ft_lstm_scans_the_frequency_bands_by_hand():
    seeded()
    model = FrequencyTimeLSTM(5, 3, hidden_size=4, band_size=2, band_stride=2, frequency_hidden_size=3)
    assert model.num_bands == 3  # bands [0:2], [2:4], [4:5] + one zero
    x = torch.randn(2, 3, 5)
    f = model.frequency_lstm
    weights = (f.weight_ih_l0, f.weight_hh_l0, f.bias_ih_l0, f.bias_hh_l0)
    with torch.no_grad():
        outputs, _ = model(x)
        features = []
        for t in range(3):
            frame = torch.cat([x[:, t], torch.zeros(2, 1)], dim=1)  # zero-padded to 6 features
            h = c = torch.zeros(2, 3)  # every frame's scan starts from zero
            scanned = []
            for k in range(3):
                h, c = lstm_step(frame[:, 2 * k : 2 * k + 2], h, c, *weights)
                scanned.append(h)
            features.append(torch.cat(scanned, dim=1))  # [2, 3 bands * 3 units]
        expected, _ = model.time_lstm(torch.stack(features, dim=1))
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-6)


def test_ft_lstm_bands_overlap_with_a_smaller_stride():
    model = FrequencyTimeLSTM(7, 2, band_size=3, band_stride=2)
    x = torch.arange(7.0).view(1, 1, 7)
    assert model.bands(x)[0, 0].tolist() == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    model = FrequencyTimeLSTM(6, 2, band_size=4, band_stride=3)  # ceil((6 - 4) / 3) + 1 = 2 bands, padded to 7
    assert model.bands(torch.arange(6.0).view(1, 1, 6))[0, 0].tolist() == [[0, 1, 2, 3], [3, 4, 5, 0]]
    model = FrequencyTimeLSTM(3, 2, band_size=8, band_stride=4)  # fewer features than a band: one padded band
    assert model.bands(torch.arange(3.0).view(1, 1, 3))[0, 0].tolist() == [[0, 1, 2, 0, 0, 0, 0, 0]]


# --- interface ----------------------------------------------------------------------------------------------------

VIDEO_MODELS = [
    (RCNN, dict(hidden_size=6)),
    (ConvLSTM, dict(hidden_size=3, readout="pool")),
    (ConvLSTM, dict(hidden_size=3, readout="frame")),
    (LRCN, dict(hidden_size=5, channels=[4])),
    (LRCN, dict(hidden_size=5, channels=[4], bidirectional=True, num_layers=2)),
]


def output_size_for(kwargs, channels, x):
    return channels * x.shape[-2] * x.shape[-1] if kwargs.get("readout") == "frame" else 3


@pytest.mark.parametrize("cls, kwargs", VIDEO_MODELS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_video_models_shapes_padding_rows_alone_and_carried_state(cls, kwargs):
    seeded()
    example = cls.example_inputs(6, 2)
    x, lengths = example["x"], example["lengths"]
    assert x.shape[:3] == (6, 3, 2) and lengths.tolist() == [3, 2, 1, 3, 2, 1]
    out_size = output_size_for(kwargs, 2, x)
    model = cls(2, out_size, **kwargs).eval()
    assert model.output_size == out_size and model.input_layout == "[batch, time, channels, height, width]"
    padded = torch.arange(3)[None, :] >= lengths[:, None]
    noisy = torch.where(padded[..., None, None, None], 100 * torch.randn_like(x), x)
    with torch.no_grad():
        out, state = model(x, lengths)
        out_noisy, state_noisy = model(noisy, lengths)
        assert out.shape == (6, 3, out_size)
        torch.testing.assert_close(out_noisy[~padded], out[~padded], rtol=0, atol=1e-5)
        for a, b in zip(state or (), state_noisy or ()):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        for row, length in enumerate(lengths.tolist()):
            alone, _ = model(x[row : row + 1, :length])
            torch.testing.assert_close(out[row, :length], alone[0], rtol=0, atol=1e-5)
        if getattr(model, "num_directions", 1) == 1 and state is not None:
            whole, whole_state = model(x)
            first, carried = model(x[:, :2])
            second, final = model(x[:, 2:], state=carried)
            torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-5)
            for a, b in zip(final, whole_state):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    model.train()
    x.requires_grad_(True)
    out, _ = model(x, lengths)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and not x.grad[padded].any()  # padding gets no gradient


@pytest.mark.parametrize("kwargs", [{}, {"bidirectional": True, "num_layers": 2}])
def test_ft_lstm_interface(kwargs):
    seeded()
    check_interface(FrequencyTimeLSTM(11, 3, hidden_size=5, band_size=4, band_stride=3, **kwargs), 11, 3,
                    carried=not kwargs)  # fmt: skip


def test_flat_sequences_are_refused_with_the_layout():
    for model in (RCNN(1, 2), ConvLSTM(1, 2, readout="pool"), LRCN(1, 2)):
        with pytest.raises(ValueError, match=r"\[batch, time, channels, height, width\].*flatten=false"):
            model(torch.randn(2, 3, 16))


# --- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, kwargs, key",
    [
        (RCNN, {"kernel_size": 4}, "kernel_size"),
        (RCNN, {"iterations": -1}, "iterations"),
        (RCNN, {"dropout": 1.0}, "dropout"),
        (ConvLSTM, {"readout": "mean"}, "readout"),
        (ConvLSTM, {"frame_size": [4, 0]}, "frame_size"),
        (ConvLSTM, {"kernel_size": 2}, "kernel_size"),
        (LRCN, {"channels": []}, "channels"),
        (LRCN, {"channels": [8, -1]}, "channels"),
        (FrequencyTimeLSTM, {"band_size": 0}, "band_size"),
        (FrequencyTimeLSTM, {"band_stride": 0}, "band_stride"),
    ],
)
def test_bad_settings_name_their_key(cls, kwargs, key):
    with pytest.raises(ConfigError) as error:
        cls(13, 2, **kwargs)
    assert error.value.key == key


def test_frame_readout_needs_one_output_per_pixel():
    model = ConvLSTM(1, 10, hidden_size=2)  # 10 classes: not a frame
    with pytest.raises(ConfigError, match="readout=pool") as error:
        model(torch.randn(2, 3, 1, 4, 4))
    assert error.value.key == "readout"
    with pytest.raises(ValueError, match="frame_size"):
        ConvLSTM(1, 16, hidden_size=2, frame_size=5)(torch.randn(2, 3, 1, 4, 4))


@pytest.mark.parametrize(
    "name, input_size, output_size, budget",
    [("rcnn", 1, 10, 30000), ("convlstm", 1, 256, 100000), ("lrcn", 1, 10, 60000), ("ft_lstm", 40, 10, 60000)],
)
def test_param_budget_picks_the_hidden_size(tmp_path, name, input_size, output_size, budget):
    cfg = compose_config(tmp_path, [f"model={name}", f"model.param_budget={budget}"])
    model = build_model(cfg.model, input_size, output_size)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - budget) <= 0.05 * budget, (name, model.hidden_size, count)


def test_convlstm_config_selects_the_frame_prediction_task(tmp_path):
    cfg = compose_config(tmp_path, ["model=convlstm"])
    assert cfg.task._target_ == "rnnlab.tasks.frames.FramePredictionTask"
    assert cfg.task.pooling == "last"  # the task=sequence keys are inherited
    assert compose_config(tmp_path, ["model=lrcn"]).task._target_ == "rnnlab.tasks.sequence.SequenceTask"


# --- learning -----------------------------------------------------------------------------------------------------

SMALL_CLIPS = ["data.frame_size=16", "data.digit_size=8", "data.flatten=false"]


@pytest.mark.slow
def test_convlstm_forecasts_moving_digits_better_than_copying_or_blank_frames(tmp_path):
    clips = dict(num_frames=10, context_frames=5, speed=1.5, train_size=400, val_size=50, test_size=100)
    record = train_in_process(
        tmp_path, "model=convlstm", "data=moving_digits", *SMALL_CLIPS, *(f"data.{k}={v}" for k, v in clips.items()),
        "data.batch_size=16", "model.hidden_size=12", "model.kernel_size=3", "optimizer.lr=0.01",
        "trainer.max_epochs=4",
    )  # fmt: skip
    assert record["status"] == "completed", record["error"]
    data = MovingDigitsDataModule(frame_size=16, digit_size=8, **clips)
    data.setup()  # the run's clips (same data.seed): copy-last-frame and blank-frame test MSE
    mse = record["metrics"]["test/mse"]
    assert mse < 0.7 * data.task.baseline, (mse, data.task.baseline)  # 0.042 vs 0.082 when written
    assert mse < 0.85 * data.blank_mse, (mse, data.blank_mse)  # 0.060: it draws digits, not an empty canvas


@pytest.mark.slow
def test_lrcn_classifies_moving_digits_well_above_chance(tmp_path):
    record = train_in_process(
        tmp_path, "model=lrcn", "data=moving_digits", "data.mode=classify", *SMALL_CLIPS, "data.num_frames=6",
        "data.train_size=1000", "data.val_size=100", "data.test_size=200", "optimizer.lr=0.003",
        "task.pooling=mean", "trainer.max_epochs=8",
    )  # fmt: skip  # pooling=mean: the clip's prediction averages the per-frame ones, as Donahue et al. do
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/acc"] > 0.5, record["metrics"]  # 10 digits: chance 0.1; 0.80 when written


@pytest.mark.slow
def test_rcnn_classifies_digit_images(tmp_path):
    record = train_in_process(
        tmp_path, "model=rcnn", "data=digits", "data.layout=image", "optimizer.lr=0.003", "trainer.max_epochs=6"
    )
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/acc"] > 0.8, record["metrics"]  # chance 0.1; 0.97 when written


@pytest.mark.slow
def test_ft_lstm_recognises_spoken_digits(tmp_path, shared_data):
    record = train_in_process(
        tmp_path, "model=ft_lstm", "data=fsdd", f"data.root={shared_data / 'fsdd'}", f"paths.cache_dir={tmp_path}",
        "data.features=mel", "data.max_files=1000", "optimizer.lr=0.003", "trainer.max_epochs=6",
    )  # fmt: skip
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/acc"] > 0.4, record["metrics"]  # chance 0.1; 0.65 when written
