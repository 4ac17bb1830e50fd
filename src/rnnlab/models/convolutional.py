"""Convolutional recurrent networks (survey section IV.C and Table III).

* :class:`RCNN`: recurrent convolutional layers for still images (Liang & Hu 2015);
* :class:`ConvLSTM`: the LSTM with convolutions in its transitions, encoder-forecaster for frames (Shi et al. 2015);
* :class:`LRCN`: a CNN per frame, an LSTM over the frames (Donahue et al. 2015);
* :class:`FrequencyTimeLSTM`: an LSTM scanning frequency bands per frame, an LSTM over time (Li et al. 2015).

Image and video models read ``x`` [batch, time, channels, height, width] (``input_layout``; ``input_size`` is the
channel count C, T = 1 for a still image; video data with ``flatten: false``, image data with ``layout: image``).
Outputs are [batch, time, output_size] like every model; outputs at padded steps are zeros (per-frame models) or
the readout of a zero hidden state (ConvLSTM), and never depend on what the padding holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.base import RecurrentCell, State, valid_step_mask
from rnnlab.models.gated import LSTM

VIDEO_LAYOUT = "[batch, time, channels, height, width]"
READOUTS = ("frame", "pool")
LRN_ALPHA, LRN_BETA = 0.001, 0.75  # Liang & Hu 2015, section 3.1


def check_video(model: nn.Module, x: torch.Tensor) -> None:
    """ValueError unless ``x`` is [B, T, C, H, W] with the model's ``input_size`` channels."""
    if x.dim() != 5 or x.shape[2] != model.input_size:
        raise ValueError(
            f"{type(model).__name__} reads {VIDEO_LAYOUT} with {model.input_size} channel(s), got {tuple(x.shape)} "
            "(video data needs data.flatten=false, image data data.layout=image)"
        )


def video_example_inputs(batch_size: int, input_size: int) -> dict:
    """A small random batch: 3 frames of 5 x 7 pixels (H != W, odd sizes), lengths 3, 2, 1, 3, 2, 1, ..."""
    steps = 3
    lengths = steps - torch.arange(batch_size) % steps
    return {"x": torch.randn(batch_size, steps, input_size, 5, 7), "lengths": lengths}


def per_frame(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``module`` applied to each valid frame of ``x`` [B, T, C, H, W] on its own: [B, T, ...], zeros at padding."""
    batch, steps = x.shape[:2]
    if lengths is None:
        return module(x.flatten(0, 1)).unflatten(0, (batch, steps))
    mask = valid_step_mask(lengths, batch, steps, x.device)
    features = module(x[mask])
    return features.new_zeros(batch, steps, *features.shape[1:]).index_put((mask,), features)


def odd_kernel(kernel_size: int) -> int:
    require_positive(kernel_size=kernel_size)
    if kernel_size % 2 == 0:
        raise ConfigError("kernel_size", f"must be odd (same-size padding), got {kernel_size}")
    return kernel_size


def require_probability(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(key, f"must be in [0, 1), got {value!r}")


# ----------------------------------------------------------------------------------------------------------- RCNN


def channel_window_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    """sum_{k' = k - N/2}^{k + N/2} x_{k'} over channels k of [B, K, H, W] (N = ``size``); channels outside 0..K-1
    count as zero. Shifted in-place additions: one pass per neighbour, no padded copy."""
    total = x.clone()
    for shift in range(1, min(size // 2, x.shape[1] - 1) + 1):
        total[:, shift:] += x[:, :-shift]
        total[:, :-shift] += x[:, shift:]
    return total


def local_response_norm(x: torch.Tensor, size: int) -> torch.Tensor:
    """g(f)_k = f_k / (1 + alpha / N * sum_{k' = k - N/2}^{k + N/2} f_{k'}^2)^beta over channels k of [B, K, H, W].

    Liang & Hu 2015 eq. 4: N = ``size``, alpha = 0.001, beta = 0.75; channels outside 0..K-1 count as zero.
    """
    return x * channel_window_sum(x * x, size).mul_(LRN_ALPHA / size).add_(1).pow(-LRN_BETA)


class RectifiedResponseNorm(torch.autograd.Function):
    """y = g(f(z)): ReLU, then local response normalisation (Liang & Hu 2015 eqs. 3-4), with a hand-written backward
    that keeps only f = relu(z) and y (y is also what the next convolution keeps), where autograd would keep every
    intermediate of the normalisation (squares, window sums, powers) for each of the K + 1 iterations. With
    D_k = 1 + alpha / N sum_{k' near k} f_{k'}^2 and y = f D^-beta:

        dL/df_j = g_j D_j^-beta - (2 alpha beta / N) f_j sum_{k near j} g_k y_k / D_k,     dL/dz = dL/df * [z > 0]

    (the channel window is symmetric). z, y: [B, K, H, W]. Not itself differentiable (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, z, size):
        rectified = torch.relu(z)
        y = local_response_norm(rectified, size)
        ctx.size = size
        ctx.save_for_backward(rectified, y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        rectified, y = ctx.saved_tensors
        size = ctx.size
        denominator = channel_window_sum(rectified * rectified, size).mul_(LRN_ALPHA / size).add_(1)  # D
        through_window = channel_window_sum(grad_y * y / denominator, size)
        grad = grad_y * denominator.pow_(-LRN_BETA)
        grad.addcmul_(rectified, through_window, value=-2 * LRN_ALPHA * LRN_BETA / size)
        return torch.ops.aten.threshold_backward(grad, rectified, 0), None


class RecurrentConvLayer(nn.Module):
    """A recurrent convolutional layer (RCL, Liang & Hu 2015 eqs. 1-4) unfolded ``iterations`` = K times.

        z(t) = w_f * u + w_r * x(t-1) + b,    x(t) = g(f(z(t))),    t = 0..K,   x(-1) = 0

    with the feed-forward input u [B, C_in, H, W] fixed over the iterations, f = ReLU and g the local response
    normalisation (``lrn``, N = channels / 8 + 1) or the identity. K = 0 is a plain convolution followed by g o f.
    ``*`` is a same-size convolution; output [B, channels, H, W].
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3, iterations: int = 3, lrn: bool = True):
        super().__init__()
        padding = odd_kernel(kernel_size) // 2
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ConfigError("iterations", f"must be an integer >= 0, got {iterations!r}")
        self.feedforward = nn.Conv2d(in_channels, channels, kernel_size, padding=padding)
        self.recurrent = nn.Conv2d(channels, channels, kernel_size, padding=padding, bias=False)
        self.iterations = iterations
        self.lrn_size = channels // 8 + 1 if lrn else None

    def activation(self, z: torch.Tensor) -> torch.Tensor:
        """g(f(z)): ReLU, then local response normalisation when enabled (:class:`RectifiedResponseNorm`)."""
        return torch.relu(z) if self.lrn_size is None else RectifiedResponseNorm.apply(z, self.lrn_size)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        drive = self.feedforward(u)  # w_f * u + b: the same at every iteration
        x = self.activation(drive)
        for _ in range(self.iterations):
            x = self.activation(drive + self.recurrent(x))
        return x


class RCNN(nn.Module):
    """Recurrent convolutional neural network for images (Liang & Hu 2015; survey IV.C).

    ``num_layers`` RCLs of ``hidden_size`` channels (the first reads the C input channels through its feed-forward
    filter, standing in for the paper's first plain convolution); 2 x 2 max pooling (stride 2) after every
    ``pool_every``-th RCL but the last; global max pooling over locations, ``dropout``, and a linear readout:

        h = maxpool_{i,j} RCL_L(... pool(RCL_1(image)) ...)  [B, hidden_size],    y = W_o h + b_o

    Input x [B, T, C, H, W]: each frame is classified on its own (T = 1 for still images); the recurrence is over
    the K iterations inside each layer, not over time, so nothing is carried between frames or calls (the returned
    state is None). Outputs [B, T, output_size], zeros at padded frames.
    """

    input_layout = VIDEO_LAYOUT

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 32,
        num_layers: int = 2,
        iterations: int = 3,
        kernel_size: int = 3,
        lrn: bool = True,
        pool_every: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        require_positive(
            input_size=input_size, output_size=output_size, hidden_size=hidden_size, num_layers=num_layers,
            pool_every=pool_every,
        )  # fmt: skip
        require_probability("dropout", dropout)
        self.input_size, self.output_size, self.hidden_size = input_size, output_size, hidden_size
        self.num_layers, self.pool_every = num_layers, pool_every
        self.layers = nn.ModuleList(
            RecurrentConvLayer(input_size if layer == 0 else hidden_size, hidden_size, kernel_size, iterations, lrn)
            for layer in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden_size, output_size)

    @classmethod
    def example_inputs(cls, batch_size: int, input_size: int) -> dict:
        return video_example_inputs(batch_size, input_size)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, hidden_size]: the RCL stack with pooling, then the global max over locations."""
        x = images
        for index, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if index % self.pool_every == 0 and index < self.num_layers:
                x = self.dropout(F.max_pool2d(x, 2, ceil_mode=True))
        return self.dropout(x.amax(dim=(-2, -1)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        check_video(self, x)
        if state is not None:
            raise ValueError("RCNN carries no state between calls; pass state=None")
        return per_frame(lambda images: self.readout(self.image_features(images)), x, lengths), None


# ------------------------------------------------------------------------------------------------------- ConvLSTM


class ConvLSTMCell(RecurrentCell):
    """One ConvLSTM layer (Shi et al. 2015 eq. 3); ``*`` a same-size convolution, ``o`` the Hadamard product:

        i_t = sigma(W_xi * X_t + W_hi * H_{t-1} + W_ci o C_{t-1} + b_i)
        f_t = sigma(W_xf * X_t + W_hf * H_{t-1} + W_cf o C_{t-1} + b_f)
        C_t = f_t o C_{t-1} + i_t o tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)
        o_t = sigma(W_xo * X_t + W_ho * H_{t-1} + W_co o C_t + b_o)
        H_t = o_t o tanh(C_t)

    X_t [B, C_in, H, W]; H_t, C_t [B, hidden, H, W]. ``input_conv`` holds W_x* and b (gate order i, f, g, o as
    ``nn.LSTM``), ``hidden_conv`` W_h*. ``peephole`` [3, hidden, *frame_size] holds W_ci, W_cf, W_co: one weight per
    channel and location as in the paper when ``frame_size`` (H, W) is given, else [3, hidden, 1, 1], one per channel
    shared over locations; None without peepholes. ``in_channels`` 0: no input (the forecaster's first layer), the
    bias moves to ``hidden_conv``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_size: int,
        kernel_size: int,
        peepholes: bool,
        frame_size: tuple[int, int] | None,
    ):
        super().__init__()
        padding = kernel_size // 2
        self.hidden_size = hidden_size
        gates = 4 * hidden_size
        self.input_conv = nn.Conv2d(in_channels, gates, kernel_size, padding=padding) if in_channels else None
        self.hidden_conv = nn.Conv2d(hidden_size, gates, kernel_size, padding=padding, bias=not in_channels)
        shape = (3, hidden_size, *(frame_size or (1, 1)))
        bound = hidden_size**-0.5  # as the peepholes of rnnlab.models.gated.LSTM
        self.peephole = nn.Parameter(torch.empty(shape).uniform_(-bound, bound)) if peepholes else None

    def initial_state(self, batch: int, reference: torch.Tensor) -> State:
        zeros = reference.new_zeros(batch, self.hidden_size, *reference.shape[-2:])
        return zeros, zeros

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """W_x* X_t + b for every step at once: [B, T, C_in, H, W] -> [B, T, 4 hidden, H, W]."""
        return self.input_conv(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def step(self, projected: torch.Tensor | None, state: State, t: int) -> State:
        h, c = state
        gates = self.hidden_conv(h) if projected is None else projected + self.hidden_conv(h)
        i, f, g, o = gates.chunk(4, dim=1)
        if self.peephole is not None:
            p_i, p_f, p_o = self.peephole
            i, f = i + p_i * c, f + p_f * c
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.peephole is not None:
            o = o + p_o * c
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvLSTM(nn.Module):
    """Convolutional LSTM (Shi et al. 2015): stacked :class:`ConvLSTMCell` layers and an encoder-forecaster.

    ``forward`` runs the encoder: ``num_layers`` ConvLSTM layers of ``hidden_size`` channels over x [B, T, C, H, W]
    (layer l > 0 reads layer l - 1's H_t, after ``dropout``), and at every step reads out the concatenated hidden
    states of all layers [B, L * hidden, H, W] (Shi et al. section 3.2):

    * ``readout: frame``: a 1 x 1 convolution to C channels, flattened: a predicted frame, outputs [B, T, C*H*W]
      (``output_size`` must equal C*H*W);
    * ``readout: pool``: the mean over locations, then a linear map: outputs [B, T, output_size] (classification).

    ``forecast(state, steps)`` runs the forecaster: with ``forecaster: true`` a second stack with its own weights and
    no input (the paper's forecasting network), whose layer l starts from the encoder's final state of layer l; with
    ``forecaster: false`` the encoder itself fed blank frames. Frame prediction encodes the context frames with
    ``forward`` and forecasts the rest (``rnnlab.tasks.frames.FramePredictionTask``, selected by ``model=convlstm``);
    the ordinary :class:`~rnnlab.tasks.sequence.SequenceTask` uses ``forward`` only.

    State (H, C): each [num_layers, B, hidden, H, W]; sequences shorter than the batch keep their last valid state.
    """

    input_layout = VIDEO_LAYOUT

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 16,
        num_layers: int = 2,
        kernel_size: int = 5,
        peepholes: bool = True,
        frame_size: Sequence[int] | int | None = None,
        forecaster: bool = True,
        readout: str = "frame",
        dropout: float = 0.0,
    ):
        super().__init__()
        require_positive(input_size=input_size, output_size=output_size, hidden_size=hidden_size, num_layers=num_layers)
        require_choice("readout", readout, READOUTS)
        require_probability("dropout", dropout)
        odd_kernel(kernel_size)
        if frame_size is not None:
            frame_size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
            if len(frame_size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in frame_size):
                raise ConfigError("frame_size", f"must be null, a positive int or [height, width], got {frame_size!r}")
        self.input_size, self.output_size, self.hidden_size = input_size, output_size, hidden_size
        self.num_layers, self.frame_size, self.readout_kind, self.dropout = num_layers, frame_size, readout, dropout

        def stack(first_input: int) -> nn.ModuleList:
            inputs = [first_input] + [hidden_size] * (num_layers - 1)
            return nn.ModuleList(ConvLSTMCell(i, hidden_size, kernel_size, peepholes, frame_size) for i in inputs)

        self.encoder = stack(input_size)
        self.forecaster = stack(0) if forecaster else None
        features = num_layers * hidden_size
        self.readout = nn.Conv2d(features, input_size, 1) if readout == "frame" else nn.Linear(features, output_size)

    @classmethod
    def example_inputs(cls, batch_size: int, input_size: int) -> dict:
        return video_example_inputs(batch_size, input_size)

    def check_frames(self, x: torch.Tensor) -> None:
        check_video(self, x)
        if self.frame_size is not None and tuple(x.shape[-2:]) != self.frame_size:
            raise ValueError(f"frame_size is {list(self.frame_size)} but the frames are {list(x.shape[-2:])}")
        if self.readout_kind == "frame" and self.input_size * x.shape[-2] * x.shape[-1] != self.output_size:
            raise ConfigError(
                "readout", f"frame gives C*H*W = {self.input_size * x.shape[-2] * x.shape[-1]} outputs per step, the "
                f"data wants {self.output_size}; use readout=pool for one label per clip"
            )  # fmt: skip

    def read_out(self, hidden: torch.Tensor) -> torch.Tensor:
        """All layers' hidden states [B, T, L * hidden, H, W] -> outputs [B, T, output_size]."""
        if self.readout_kind == "pool":
            return self.readout(hidden.mean(dim=(-2, -1)))
        return self.readout(hidden.flatten(0, 1)).unflatten(0, hidden.shape[:2]).flatten(2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        self.check_frames(x)
        batch, steps = x.shape[:2]
        mask = valid_step_mask(lengths, batch, steps, x.device) if lengths is not None else None
        hiddens, final = [], []
        layer_input = x
        for layer, cell in enumerate(self.encoder):
            if layer > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
            initial = cell.initial_state(batch, x) if state is None else (state[0][layer], state[1][layer])
            layer_input, last = cell.run(layer_input, mask, initial)
            hiddens.append(layer_input)
            final.append(last)
        state = tuple(torch.stack(component) for component in zip(*final))
        return self.read_out(torch.cat(hiddens, dim=2)), state

    def forecast(self, state: tuple[torch.Tensor, torch.Tensor], steps: int):
        """``steps`` frames from the encoder's ``state`` (H, C), reading no input.

        Returns outputs [B, steps, output_size] and the forecaster's final state.
        """
        if self.forecaster is None:
            h = state[0]
            blank = h.new_zeros(h.shape[1], steps, self.input_size, *h.shape[-2:])
            return self.forward(blank, state=state)
        hs, cs = list(state[0].unbind(0)), list(state[1].unbind(0))
        outputs = []
        for t in range(steps):
            layer_input = None
            for layer, cell in enumerate(self.forecaster):
                projected = None
                if layer_input is not None:
                    layer_input = F.dropout(layer_input, self.dropout, self.training)
                    projected = cell.input_conv(layer_input)
                hs[layer], cs[layer] = cell.step(projected, (hs[layer], cs[layer]), t)
                layer_input = hs[layer]
            outputs.append(torch.cat(hs, dim=1))
        return self.read_out(torch.stack(outputs, dim=1)), (torch.stack(hs), torch.stack(cs))


# ----------------------------------------------------------------------------------------------------------- LRCN


class FrameCNN(nn.Module):
    """The per-frame visual encoder of :class:`LRCN`: [N, C, H, W] -> features [N, feature_size].

    One block per entry of ``channels``: a same-size convolution, ReLU and 2 x 2 max pooling; then average pooling to
    ``pool_size`` x ``pool_size`` locations (any frame size), a linear map to ``feature_size`` and ReLU.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], feature_size: int, kernel_size: int, pool_size: int):
        super().__init__()
        padding = odd_kernel(kernel_size) // 2
        layers: list[nn.Module] = []
        for width in channels:
            conv = nn.Conv2d(in_channels, width, kernel_size, padding=padding)
            layers += [conv, nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            in_channels = width
        flat = in_channels * pool_size**2
        layers += [nn.AdaptiveAvgPool2d(pool_size), nn.Flatten(), nn.Linear(flat, feature_size), nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.layers(frames)


class LRCN(nn.Module):
    """Long-term recurrent convolutional network (Donahue et al. 2015): a CNN per frame, an LSTM over the frames.

        phi_t = CNN(x_t)                              [B, feature_size], each frame on its own (:class:`FrameCNN`)
        h_t   = LSTM(phi_t, h_{t-1})                  (survey eqs. 32-38; ``rnnlab.models.gated.LSTM``)
        y_t   = W_o h_t + b_o                          [B, T, output_size]

    For video classification the task reads the last step (``task.pooling=last``) or averages the per-frame
    predictions (``task.pooling=mean``, as Donahue et al. do). ``hidden_size``, ``num_layers``, ``bidirectional`` and
    ``dropout`` are the LSTM's; its state (h, c) is carried as in :class:`~rnnlab.models.gated.LSTM`.
    """

    input_layout = VIDEO_LAYOUT

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        channels: Sequence[int] = (16, 32),
        feature_size: int = 64,
        kernel_size: int = 3,
        pool_size: int = 4,
    ):
        super().__init__()
        channels = list(channels)
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in channels):
            raise ConfigError("channels", f"must be a non-empty list of positive ints, got {channels!r}")
        require_positive(input_size=input_size, feature_size=feature_size, pool_size=pool_size)
        self.input_size, self.output_size, self.hidden_size = input_size, output_size, hidden_size
        self.cnn = FrameCNN(input_size, channels, feature_size, kernel_size, pool_size)
        self.lstm = LSTM(
            feature_size, output_size, hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
            dropout=dropout,
        )  # fmt: skip
        self.num_directions = self.lstm.num_directions

    @classmethod
    def example_inputs(cls, batch_size: int, input_size: int) -> dict:
        return video_example_inputs(batch_size, input_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        check_video(self, x)
        return self.lstm(per_frame(self.cnn, x, lengths), lengths, state)


# ------------------------------------------------------------------------------------------------------- FT-LSTM


class FrequencyTimeLSTM(nn.Module):
    """Frequency-time LSTM (Li et al. 2015, "LSTM time and frequency recurrence for ASR"; survey Table III).

    Each frame x_t [F] (e.g. log mel energies, low to high frequency) is cut into K bands of ``band_size`` features
    every ``band_stride``, zero-padded at the top so every feature is covered: K = max(1, ceil((F - size) / stride)
    + 1) (a frame of fewer than ``band_size`` features is one padded band).
    The F-LSTM, one LSTM shared by all frames, scans the bands of one frame from the lowest, starting from a zero
    state at every frame; its outputs at all bands, concatenated, are the frame's features; the T-LSTM runs over time:

        b_{t,k}  = x_t[k * stride : k * stride + size]                  k = 0..K-1
        g_{t,k}  = F-LSTM(b_{t,k}, g_{t,k-1}),  g_{t,-1} = 0            [frequency_hidden_size]  (survey eqs. 32-36)
        h_t      = T-LSTM([g_{t,0}; ...; g_{t,K-1}], h_{t-1})            [hidden_size]
        y_t      = W_o h_t + b_o                                         [B, T, output_size]

    Input [B, T, F] (``input_size`` = F). ``hidden_size``, ``num_layers``, ``bidirectional``, ``dropout`` are the
    T-LSTM's (``rnnlab.models.gated.LSTM``), whose state (h, c) is the model's; the F-LSTM carries nothing across
    frames, so padded frames reach no valid step.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        band_size: int = 8,
        band_stride: int = 4,
        frequency_hidden_size: int = 16,
    ):
        super().__init__()
        require_positive(
            input_size=input_size, band_size=band_size, band_stride=band_stride,
            frequency_hidden_size=frequency_hidden_size,
        )  # fmt: skip
        self.input_size, self.output_size, self.hidden_size = input_size, output_size, hidden_size
        self.band_size, self.band_stride = band_size, band_stride
        self.num_bands = max(1, math.ceil((input_size - band_size) / band_stride) + 1)
        self.frequency_lstm = nn.LSTM(band_size, frequency_hidden_size, batch_first=True)
        self.time_lstm = LSTM(
            self.num_bands * frequency_hidden_size, output_size, hidden_size=hidden_size, num_layers=num_layers,
            bidirectional=bidirectional, dropout=dropout,
        )  # fmt: skip
        self.num_directions = self.time_lstm.num_directions

    def bands(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, T, K, band_size]."""
        covered = (self.num_bands - 1) * self.band_stride + self.band_size
        return F.pad(x, (0, covered - x.shape[-1])).unfold(-1, self.band_size, self.band_stride)

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """The F-LSTM's outputs at every band, concatenated: [B, T, F] -> [B, T, K * frequency_hidden_size]."""
        bands = self.bands(x)
        scanned, _ = self.frequency_lstm(bands.flatten(0, 1))  # [B*T, K, H_f]
        return scanned.reshape(*x.shape[:2], -1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        return self.time_lstm(self.frame_features(x), lengths, state)
