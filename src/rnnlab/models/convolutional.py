"""Convolutional recurrent networks (survey section IV.C and Table III).

* :class:`RCNN`: recurrent convolutional layers for still images (Liang & Hu 2015);
* :class:`ConvLSTM`: the LSTM with convolutions in its transitions, encoder-forecaster for frames (Shi et al. 2015);
* :class:`LRCN`: a CNN per frame, an LSTM over the frames (Donahue et al. 2015);
* :class:`FrequencyTimeLSTM`: an LSTM scanning frequency bands per frame, an LSTM over time (Li et al. 2015).

Image and video models read ``x`` [batch, time, channels, height, width] (``input_layout``; ``input_size`` is the
channel count C, T = 1 for a still image; video data with ``flatten: false``, image data with ``layout: image``).
Outputs are [batch, time, output_size] like every model; outputs at padded steps are zeros (per-frame models) or
the readout of a zero hidden state (ConvLSTM), and never depend on what the padding holds.

Here: the video layout, the helpers the family shares and :class:`ConvLSTM`; :class:`RCNN` is in
``rnnlab.models.rcnn``, :class:`LRCN` and :class:`FrequencyTimeLSTM` in ``rnnlab.models.frame_lstm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.base import RecurrentCell, State, valid_step_mask

VIDEO_LAYOUT = "[batch, time, channels, height, width]"
READOUTS = ("frame", "pool")


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
