"""RCNN: recurrent convolutional layers for still images (Liang & Hu 2015; survey section IV.C and Table III).

The layer (:class:`RecurrentConvLayer`), its ReLU + local response normalisation with a hand-written backward
(:class:`RectifiedResponseNorm`) and the network (:class:`RCNN`); the video layout and shared helpers are
``rnnlab.models.convolutional``'s.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from rnnlab.errors import ConfigError, require_positive
from rnnlab.models.convolutional import (
    VIDEO_LAYOUT,
    check_video,
    odd_kernel,
    per_frame,
    require_probability,
    video_example_inputs,
)

LRN_ALPHA, LRN_BETA = 0.001, 0.75  # Liang & Hu 2015, section 3.1


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
