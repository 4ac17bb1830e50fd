"""Multi-dimensional recurrent networks: MDRNN and MDLSTM (Graves et al. 2007; survey IV.D, Fig. 7, eq. 39),
Grid LSTM (Kalchbrenner et al. 2016; survey eqs. 40-41) and ReNet (Visin et al. 2015).

The image models (:class:`MDRNN`, :class:`MDLSTM`, :class:`ReNet`) read the image layout
(CONTRIBUTING.md, 'The model interface') ``x`` [B, T, C, H, W] (a still image is T = 1, ``rnnlab.data.image`` with
``layout: image``), scan the H x W grid of each frame themselves, pool it into one feature vector and read it out:
outputs [B, T, output_size], one per frame. Frames are independent (no state is carried from frame to frame or between
calls: the returned state is None), and frames past a sequence's ``lengths`` are not computed: their output is the
readout of a zero feature vector.

:class:`GridLSTM` reads ordinary sequences [B, T, F]: its grid is time x depth.

Speed (CONTRIBUTING.md, 'Speed rules'): MDRNN and MDLSTM sweep the grid by anti-diagonals (wavefront): all cells with
i + j = d depend only on diagonal d - 1, so one batched step per diagonal (H + W - 1 steps), all scan directions in
the same batched matmul. MDRNN computes every pixel's input projection in one matrix product before the sweep and
lets autograd record it; MDLSTM runs each layer's sweep, input projection included, as one autograd node with a
hand-written backward (``rnnlab.models.multidim_kernels``). The Grid LSTM likewise runs each direction as one node,
by anti-diagonals t + l of its time x depth grid (T + L - 1 steps, the layers of a diagonal in one batched matmul).
The MDLSTM's sequential depth is H + W - 1 diagonals, but its work is a recurrent matmul for every pixel and
direction, which no wavefront shortens.

Here: the image frame the image models share, the wavefront layers, :class:`MDRNN` and :class:`MDLSTM`;
:class:`ReNet` is in ``rnnlab.models.renet``, :class:`GridLSTM` in ``rnnlab.models.grid_lstm``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlab.errors import require_choice, require_positive
from rnnlab.models.base import valid_step_mask
from rnnlab.models.multidim_kernels import WavefrontPlan, mdlstm_wavefront

IMAGE_LAYOUT = "[batch, time, channels, height, width]"
# Scan directions as flips of the [N, H, W, F] grid (dim 1 rows, dim 2 columns): a scan from the top-left corner of
# the flipped grid is a scan from another corner of the original. Order: top-left, top-right, bottom-left,
# bottom-right; 2 directions are opposite corners (top-left, bottom-right), so every pixel sees the whole image.
DIRECTION_FLIPS = {1: ((),), 2: ((), (1, 2)), 4: ((), (2,), (1,), (1, 2))}
MD_POOLINGS = ("last", "mean", "max")


def diagonal_order(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Raster indices i * W + j of the pixels in wavefront order (by anti-diagonal d = i + j, then row i), the
    inverse permutation, and the number of pixels on each of the H + W - 1 diagonals."""
    rows = torch.arange(height, device=device)[:, None]
    columns = torch.arange(width, device=device)[None, :]
    order = ((rows + columns) * height + rows).flatten().argsort()
    sizes = [min(d, height - 1) - max(0, d - width + 1) + 1 for d in range(height + width - 1)]
    return order, order.argsort(), sizes


def flip_dims(grid: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return grid.flip(dims) if dims else grid


class _ImageModel(nn.Module):
    """Shared image-model frame: checks the layout, runs ``image_features`` on the valid frames, reads them out.

    Subclasses implement ``image_features`` (images [N, C, H, W] -> [N, features]) and set ``readout``, which maps
    features to ``output_size``.
    """

    input_layout = IMAGE_LAYOUT

    def __init__(self, input_size: int, output_size: int, hidden_size: int):
        super().__init__()
        require_positive(input_size=input_size, output_size=output_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size

    @classmethod
    def example_inputs(cls, batch_size: int, input_size: int) -> dict:
        """A small random batch: 3 frames of 5 x 7 pixels (H != W, odd sizes), lengths 3, 2, 1, 3, 2, 1, ..."""
        steps = 3
        lengths = steps - torch.arange(batch_size) % steps
        return {"x": torch.randn(batch_size, steps, input_size, 5, 7), "lengths": lengths}

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        if x.dim() != 5 or x.shape[2] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} reads {IMAGE_LAYOUT} with {self.input_size} channel(s), got {tuple(x.shape)} "
                "(image data needs data.layout=image)"
            )
        if state is not None:
            raise ValueError(f"{type(self).__name__} carries no state between calls; pass state=None")
        batch, steps = x.shape[:2]
        if lengths is None:
            features = self.image_features(x.flatten(0, 1)).view(batch, steps, -1)
        else:
            mask = valid_step_mask(lengths, batch, steps, x.device)
            valid = self.image_features(x[mask])  # [valid frames, features]
            features = valid.new_zeros(batch, steps, valid.shape[-1]).index_put((mask,), valid)
        return self.readout(features), None


class _WavefrontLayer(nn.Module):
    """One layer of a 2-D recurrent grid, scanned from 1, 2 or 4 corners (``DIRECTION_FLIPS``), by anti-diagonals.

    Parameters, one slice per direction d: ``input_weight`` [D, in, G], ``input_bias`` [D, G] and
    ``recurrent_weight`` [D, 2 * hidden, G], whose first ``hidden`` rows read the state above (i - 1, j) and the
    next ``hidden`` rows the state to the left (i, j - 1), in the scan's own (flipped) frame. Subclasses set
    ``gates`` (G = gates * hidden) and ``state_tensors`` and implement ``cell``.
    """

    gates: int
    state_tensors: int

    def __init__(self, input_size: int, hidden_size: int, directions: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.flips = DIRECTION_FLIPS[directions]
        width = self.gates * hidden_size
        # input weights and bias: nn.Linear's range U(+-1/sqrt(fan_in)) (a 1-channel image would get tiny input
        # weights from the recurrent range); recurrent weights: nn.RNN / nn.LSTM's U(+-1/sqrt(hidden))
        bound = 1.0 / math.sqrt(input_size)
        self.input_weight = nn.Parameter(torch.empty(directions, input_size, width).uniform_(-bound, bound))
        self.input_bias = nn.Parameter(torch.empty(directions, width).uniform_(-bound, bound))
        bound = 1.0 / math.sqrt(hidden_size)
        self.recurrent_weight = nn.Parameter(torch.empty(directions, 2 * hidden_size, width).uniform_(-bound, bound))

    def cell(self, projected: torch.Tensor, above: tuple, left: tuple) -> tuple:
        """New states [D, N, r, hidden] of the r cells of one diagonal from their projected inputs [D, N, r, G] and
        the states above and to their left (tuples of [D, N, r, hidden], zeros outside the grid)."""
        raise NotImplementedError

    def recurrent(self, above_h: torch.Tensor, left_h: torch.Tensor) -> torch.Tensor:
        """U_1 h_{i-1,j} + U_2 h_{i,j-1} for every direction, one batched matmul: [D, N, r, G]."""
        directions, batch, rows, _ = above_h.shape
        both = torch.cat([above_h, left_h], dim=-1).reshape(directions, batch * rows, 2 * self.hidden_size)
        return torch.bmm(both, self.recurrent_weight).view(directions, batch, rows, -1)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """grid [N, H, W, in] -> hidden maps [D, N, H, W, hidden], each direction's map in the original orientation."""
        maps = self.scan(torch.stack([flip_dims(grid, dims) for dims in self.flips]))
        return torch.stack([flip_dims(m, dims) for m, dims in zip(maps.unbind(0), self.flips)])  # unbind: one backward

    def scan(self, scans: torch.Tensor) -> torch.Tensor:
        """Each direction's grid scanned from its top-left corner: scans [D, N, H, W, in] -> h [D, N, H, W, hidden].

        Every cell's input projection W x + b, all directions, is one batched matmul before the wavefront."""
        directions, batch, height, width, features = scans.shape
        projected = torch.baddbmm(
            self.input_bias.unsqueeze(1), scans.reshape(directions, -1, features), self.input_weight
        ).view(directions, batch, height, width, -1)
        return self.wavefront(projected)

    def wavefront(self, projected: torch.Tensor) -> torch.Tensor:
        """Scan from the top-left corner of each direction's grid: projected [D, N, H, W, G] -> h [D, N, H, W, hidden].

        Step d computes the cells (i, d - i), rows i = lo..hi, of anti-diagonal d at once. States are kept for those
        rows only ([D, N, hi - lo + 1, hidden]); cell (i, j)'s upper neighbour is row i - 1 and its left neighbour
        row i of the previous diagonal, a zero row where that falls outside the grid.
        """
        directions, batch, height, width, _ = projected.shape
        order, inverse, sizes = diagonal_order(height, width, projected.device)
        inputs = projected.flatten(2, 3).index_select(2, order).split(sizes, dim=2)  # per diagonal [D, N, r, G]
        zero_row = projected.new_zeros(directions, batch, 1, self.hidden_size)
        state, previous_lo, previous_hi = (zero_row,) * self.state_tensors, 0, -1
        outputs = []
        for d, cells in enumerate(inputs):
            lo, hi = max(0, d - width + 1), min(d, height - 1)
            if d == 0:
                above = left = state
            else:
                above = tuple(s[:, :, max(lo - 1 - previous_lo, 0) : hi - previous_lo] for s in state)
                left = tuple(s[:, :, lo - previous_lo :] for s in state)
                if lo == 0:  # row 0 has nothing above
                    above = tuple(torch.cat([zero_row, s], dim=2) for s in above)
                if hi > previous_hi:  # column 0 has nothing to its left
                    left = tuple(torch.cat([s, zero_row], dim=2) for s in left)
            state, previous_lo, previous_hi = self.cell(cells, above, left), lo, hi
            outputs.append(state[0])
        hidden = torch.cat(outputs, dim=2).index_select(2, inverse)  # raster order [D, N, H * W, hidden]
        return hidden.view(directions, batch, height, width, self.hidden_size)


class _MDRNNLayer(_WavefrontLayer):
    gates = 1
    state_tensors = 1

    def cell(self, projected, above, left):
        return (torch.tanh(projected + self.recurrent(above[0], left[0])),)


class _MDLSTMLayer(_WavefrontLayer):
    """Gate order in G = 5 * hidden: input i, forget f_1 (rows, from above), forget f_2 (columns, from the left),
    candidate g, output o."""

    gates = 5
    state_tensors = 2

    def scan(self, scans):
        """As :meth:`_WavefrontLayer.scan`, by the hand-written wavefront of ``rnnlab.models.multidim_kernels`` (one
        autograd node, the input projection inside it, diagonal by diagonal). Under autocast (mixed precision) the
        autograd loop of :meth:`_WavefrontLayer.wavefront` runs instead, as the kernel computes in one dtype."""
        if torch.is_autocast_enabled(scans.device.type):
            return super().scan(scans)
        height, width = scans.shape[2:4]
        plan = WavefrontPlan.build(height, width, scans.device)
        cells = scans.flatten(2, 3).transpose(1, 2).index_select(1, plan.order)  # [D, H * W, N, in], wavefront order
        return mdlstm_wavefront(cells, self.input_weight, self.input_bias, self.recurrent_weight, plan)

    def cell(self, projected, above, left):
        (above_h, above_c), (left_h, left_c) = above, left
        i, f_1, f_2, g, o = (projected + self.recurrent(above_h, left_h)).chunk(5, dim=-1)
        c = torch.sigmoid(f_1) * above_c + torch.sigmoid(f_2) * left_c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _MultiDimensionalNetwork(_ImageModel):
    """Stacked 2-D recurrent layers over each frame, pooled per direction, concatenated, read out linearly.

    Layer l > 0 reads, at each pixel, the concatenated hidden maps of all directions of layer l - 1
    (Graves et al. 2007, section 3.2). ``pool``: ``last`` the state of each scan's last pixel (the corner opposite
    its start, which has seen the whole image from that direction), ``mean`` / ``max`` over all pixels.
    """

    layer_class: type[_WavefrontLayer]

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 32,
        num_layers: int = 1,
        directions: int = 4,
        pool: str = "last",
    ):
        super().__init__(input_size, output_size, hidden_size)
        require_positive(num_layers=num_layers)
        require_choice("directions", directions, tuple(DIRECTION_FLIPS))
        require_choice("pool", pool, MD_POOLINGS)
        self.num_layers = num_layers
        self.directions = directions
        self.pool = pool
        features = directions * hidden_size
        sizes = [input_size] + [features] * (num_layers - 1)
        self.layers = nn.ModuleList(self.layer_class(size, hidden_size, directions) for size in sizes)
        self.readout = nn.Linear(features, output_size)

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, C, H, W] -> the last layer's hidden maps [D, N, H, W, hidden], in the original orientation."""
        maps = self.layers[0](images.permute(0, 2, 3, 1))  # reads [N, H, W, C]
        for layer in self.layers[1:]:
            maps = layer(maps.permute(1, 2, 3, 0, 4).flatten(3))  # reads [N, H, W, D * hidden]
        return maps

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.feature_maps(images)
        if self.pool == "mean":
            pooled = maps.mean((2, 3))
        elif self.pool == "max":
            pooled = maps.amax((2, 3))
        else:  # the last pixel of the scan from a flipped corner is the opposite corner of the original
            flips = DIRECTION_FLIPS[self.directions]
            rows, columns = ([0 if dim in f else maps.shape[dim + 1] - 1 for f in flips] for dim in (1, 2))
            index = torch.tensor([list(range(len(flips))), rows, columns], device=maps.device)
            pooled = maps[index[0], :, index[1], index[2]]  # [D, N, hidden]; one gather: one gradient map in backward
        return pooled.transpose(0, 1).flatten(1)  # [N, D * hidden]


class MDRNN(_MultiDimensionalNetwork):
    """Multi-dimensional RNN over the pixel grid of each frame (Graves et al. 2007; survey IV.D, Fig. 7).

        h_{i,j} = tanh(W x_{i,j} + U_1 h_{i-1,j} + U_2 h_{i,j-1} + b),    h outside the grid = 0

    for a scan from the top-left corner; ``directions`` 2 adds the scan from the bottom-right corner, 4 the scans from
    all four corners (each with its own W, U_1, U_2, b; "multi-directional MDRNN"). Each direction's hidden map
    [H, W, hidden] is pooled (``pool``); the directions' vectors are concatenated and read out:
    y = W_y [pool(h^1); ...; pool(h^D)] + b_y.

    Shapes: x [B, T, C, H, W] (C = ``input_size``), lengths [B] valid frames or None; outputs [B, T, output_size];
    state None. Computed by anti-diagonal wavefront (see the module docstring).
    """

    layer_class = _MDRNNLayer


class MDLSTM(_MultiDimensionalNetwork):
    """Multi-dimensional LSTM (Graves et al. 2007; survey eq. 39): one forget gate per dimension.

        [i, f_1, f_2, g, o] = W x_{i,j} + U_1 h_{i-1,j} + U_2 h_{i,j-1} + b      (gates pre-activations)
        c_{i,j} = sigma(f_1) * c_{i-1,j} + sigma(f_2) * c_{i,j-1} + sigma(i) * tanh(g)
        h_{i,j} = sigma(o) * tanh(c_{i,j}),                                     h, c outside the grid = 0

    (no peepholes). On an image one pixel high it is an LSTM along the row with forget gate f_2. ``directions``,
    ``num_layers`` and ``pool`` as in :class:`MDRNN`. Shapes: x [B, T, C, H, W]; outputs [B, T, output_size];
    state None. Computed by anti-diagonal wavefront: H + W - 1 batched steps, each layer one autograd node with a
    hand-written backward (``rnnlab.models.multidim_kernels``).
    """

    layer_class = _MDLSTMLayer
