"""Convolutional recurrent networks that encode each frame on its own, then run an LSTM over the frames (survey
section IV.C and Table III): :class:`LRCN` (a CNN per frame, Donahue et al. 2015) and :class:`FrequencyTimeLSTM`
(an LSTM scanning frequency bands per frame, Li et al. 2015).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rnnlab.errors import ConfigError, require_positive
from rnnlab.models.convolutional import VIDEO_LAYOUT, check_video, odd_kernel, per_frame, video_example_inputs
from rnnlab.models.gated import LSTM


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
