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
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from rnnlab.errors import require_choice, require_positive
from rnnlab.models.base import reverse_padded, valid_step_mask
from rnnlab.models.multidim_kernels import WavefrontPlan, grid_lstm_sequence, mdlstm_wavefront

IMAGE_LAYOUT = "[batch, time, channels, height, width]"
# Scan directions as flips of the [N, H, W, F] grid (dim 1 rows, dim 2 columns): a scan from the top-left corner of
# the flipped grid is a scan from another corner of the original. Order: top-left, top-right, bottom-left,
# bottom-right; 2 directions are opposite corners (top-left, bottom-right), so every pixel sees the whole image.
DIRECTION_FLIPS = {1: ((),), 2: ((), (1, 2)), 4: ((), (2,), (1,), (1, 2))}
MD_POOLINGS = ("last", "mean", "max")
RENET_POOLINGS = ("mean", "max")
RENET_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


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


def extract_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """images [N, C, H, W] -> non-overlapping patches [N, ceil(H/p), ceil(W/p), C * p * p], flattened in (C, y, x)
    order; images whose sides are not multiples of p are zero-padded at the bottom and right."""
    batch, channels, height, width = images.shape
    rows, columns = -(-height // patch_size), -(-width // patch_size)
    padded = F.pad(images, (0, columns * patch_size - width, 0, rows * patch_size - height))
    patches = padded.view(batch, channels, rows, patch_size, columns, patch_size)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, rows, columns, channels * patch_size * patch_size)


class _ReNetLayer(nn.Module):
    """Patches, then a bidirectional RNN along each row of patches, then one along each column of the result."""

    def __init__(self, input_size: int, hidden_size: int, patch_size: int, cell: str):
        super().__init__()
        self.patch_size = patch_size
        rnn = RENET_CELLS[cell]
        self.horizontal = rnn(input_size * patch_size**2, hidden_size, batch_first=True, bidirectional=True)
        self.vertical = rnn(2 * hidden_size, hidden_size, batch_first=True, bidirectional=True)

    @staticmethod
    def sweep(rnn: nn.RNNBase, grid: torch.Tensor) -> torch.Tensor:
        """A bidirectional RNN along dim 2 of grid [N, R, S, F], every one of the N * R rows at once: [N, R, S, 2h]."""
        batch, rows, steps, features = grid.shape
        out, _ = rnn(grid.reshape(batch * rows, steps, features))
        return out.view(batch, rows, steps, -1)

    def sweep_horizontal(self, patches: torch.Tensor) -> torch.Tensor:
        return self.sweep(self.horizontal, patches)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, C, H, W] -> feature map [N, 2 * hidden, H / p, W / p] (rounded up)."""
        horizontal = self.sweep_horizontal(extract_patches(images, self.patch_size))
        vertical = self.sweep(self.vertical, horizontal.transpose(1, 2)).transpose(1, 2)
        return vertical.permute(0, 3, 1, 2)


class ReNet(_ImageModel):
    """ReNet (Visin et al. 2015): RNN sweeps over patches instead of convolution and pooling.

    Each layer splits its input map into non-overlapping ``patch_size`` x ``patch_size`` patches p_{i,j} (flattened;
    the map is zero-padded to a multiple of the patch size), then

        h^->_{i,j} = RNN^->(h^->_{i,j-1}, p_{i,j}),   h^<-_{i,j} = RNN^<-(h^<-_{i,j+1}, p_{i,j})     (each row i)
        u_{i,j} = [h^->_{i,j}; h^<-_{i,j}]
        v^v_{i,j} = RNN^v(v^v_{i-1,j}, u_{i,j}),      v^^_{i,j} = RNN^^(v^^_{i+1,j}, u_{i,j})       (each column j)

    giving a map of [v^v; v^^] (2 * hidden features) in which every position has seen the whole input. Visin et
    al. sweep columns first; here rows go first (the two orders are the same model on the transposed image).
    RNN is ``nn.GRU`` or ``nn.LSTM`` (``cell``; fused kernels). ``num_layers`` layers are stacked, each with its
    own patches. The last map is pooled over positions (``pool``: mean or max) and read out linearly.

    Shapes: x [B, T, C, H, W]; outputs [B, T, output_size]; state None.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 32,
        num_layers: int = 1,
        patch_size: int = 2,
        cell: str = "gru",
        pool: str = "max",
    ):
        super().__init__(input_size, output_size, hidden_size)
        require_positive(num_layers=num_layers, patch_size=patch_size)
        require_choice("cell", cell, tuple(RENET_CELLS))
        require_choice("pool", pool, RENET_POOLINGS)
        self.num_layers = num_layers
        self.patch_size = patch_size
        self.pool = pool
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(_ReNetLayer(size, hidden_size, patch_size, cell) for size in sizes)
        self.readout = nn.Linear(2 * hidden_size, output_size)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            images = layer(images)
        return images.mean((2, 3)) if self.pool == "mean" else images.amax((2, 3))


class _GridLSTMColumn(nn.Module):
    """One direction of a 2-D Grid LSTM (time x depth): the input projection and the per-layer block weights.

    ``weight`` [L, 8H, 2H] and ``bias`` [L, 8H]: rows 0..4H the time LSTM's gates (i, f, g, o), rows 4H..8H the depth
    LSTM's; columns 0..H read h^time, columns H..2H read h^depth (H = [h^time; h^depth], eq. 40).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.input = nn.Linear(input_size, hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight = nn.Parameter(torch.empty(num_layers, 8 * hidden_size, 2 * hidden_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_layers, 8 * hidden_size).uniform_(-bound, bound))

    def block(self, layer: int, h_time, m_time, h_depth, m_depth):
        """One Grid LSTM block (eqs. 40-41): both transforms read the same H = [h^time; h^depth]; their
        LSTM(H, m, W) updates run as one set of elementwise ops on [B, 2, H] (time, depth)."""
        batch = h_time.shape[0]
        gates = torch.addmm(self.bias[layer], torch.cat([h_time, h_depth], dim=-1), self.weight[layer].T)
        i, f, g, o = gates.view(batch, 2, 4, self.hidden_size).unbind(2)  # each [B, 2, H]
        memory = torch.sigmoid(f) * torch.stack([m_time, m_depth], dim=1) + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(memory)
        return hidden[:, 0], memory[:, 0], hidden[:, 1], memory[:, 1]

    def run(self, x: torch.Tensor, mask: torch.Tensor | None, state: tuple[torch.Tensor, torch.Tensor]):
        """x [B, T, in], mask [B, T] (a prefix: padding at the end) or None, state (h^time, m^time) [L, B, H] ->
        (top h^depth [B, T, H], state).

        Every block runs in one autograd node (``multidim_kernels.grid_lstm_sequence``, hand-written backward),
        padded steps included: they come after a sequence's valid steps, so they never reach them; each sequence's
        time state after its last valid step is picked out and padded outputs are zeroed. Under autocast (mixed
        precision) the block loop of :meth:`run_blocks` runs instead, as the kernel computes in one dtype.
        """
        if torch.is_autocast_enabled(x.device.type):
            return self.run_blocks(x, mask, state)
        top, h_time, m_time = grid_lstm_sequence(self.input(x.transpose(0, 1)), *state, self.weight, self.bias)
        outputs = top.transpose(0, 1)  # [B, T, H]
        if mask is None:
            return outputs, (h_time[:, -1], m_time[:, -1])
        lengths = mask.sum(1)
        batch = torch.arange(lengths.shape[0], device=lengths.device)
        state = (h_time[:, lengths, batch], m_time[:, lengths, batch])
        return outputs.masked_fill(~mask.unsqueeze(-1), 0.0), state

    def run_blocks(self, x: torch.Tensor, mask: torch.Tensor | None, state: tuple[torch.Tensor, torch.Tensor]):
        """:meth:`run` as a Python loop over the blocks, each :meth:`block` recorded by autograd."""
        h_time, m_time = list(state[0].unbind(0)), list(state[1].unbind(0))
        outputs = []
        keeps = mask.unbind(1) if mask is not None else [None] * x.shape[1]
        for projected, keep in zip(self.input(x).unbind(1), keeps):  # h^depth_{t,0} = W_in x_t + b_in, m^depth = 0
            h_depth, m_depth = projected, torch.zeros_like(projected)
            for layer in range(self.num_layers):
                h, m, h_depth, m_depth = self.block(layer, h_time[layer], m_time[layer], h_depth, m_depth)
                if keep is not None:  # padded steps keep the time state
                    h, m = torch.where(keep[:, None], h, h_time[layer]), torch.where(keep[:, None], m, m_time[layer])
                h_time[layer], m_time[layer] = h, m
            outputs.append(h_depth if keep is None else torch.where(keep[:, None], h_depth, 0.0))
        return torch.stack(outputs, dim=1), (torch.stack(h_time), torch.stack(m_time))


class GridLSTM(nn.Module):
    """2-D Grid LSTM over time and depth (Kalchbrenner et al. 2016; survey eqs. 40-41).

    Block (t, l) holds an LSTM along time (h^time, m^time, passed from (t - 1, l)) and one along depth (h^depth,
    m^depth, passed from (t, l - 1)); both read the same concatenated hidden vector:

        H = [h^time_{t-1,l}; h^depth_{t,l-1}]                                            (eq. 40)
        (h^time_{t,l}, m^time_{t,l})   = LSTM(H, m^time_{t-1,l},  W^time_l)              (eq. 41)
        (h^depth_{t,l}, m^depth_{t,l}) = LSTM(H, m^depth_{t,l-1}, W^depth_l)
        LSTM(H, m, W): [i; f; g; o] = W H + b,  m' = sigma(f) * m + sigma(i) * tanh(g),  h' = sigma(o) * tanh(m')

    (the paper prints h' = tanh(sigma(o) * m'); the standard LSTM output is used here, and biases are explicit). The
    input enters at the bottom of the depth dimension: h^depth_{t,0} = W_in x_t + b_in, m^depth_{t,0} = 0; the output
    is read from the top: y_t = W_y h^depth_{t,L} + b_y. Weights are untied across layers. ``bidirectional`` adds a
    second grid reading each sequence reversed within its length; the two top outputs are concatenated.

    Shapes: x [B, T, input_size], lengths [B] or None; outputs [B, T, output_size]; state (h^time, m^time), each
    [num_layers * directions, B, H] ordered (layer, direction). Padded steps keep the time state and emit the readout
    of zeros.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        bidirectional: bool = False,
    ):
        super().__init__()
        require_positive(input_size=input_size, output_size=output_size, hidden_size=hidden_size, num_layers=num_layers)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.columns = nn.ModuleList(
            _GridLSTMColumn(input_size, hidden_size, num_layers) for _ in range(self.num_directions)
        )
        self.readout = nn.Linear(self.num_directions * hidden_size, output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        batch, steps, _ = x.shape
        mask = None if lengths is None else valid_step_mask(lengths, batch, steps, x.device)
        if mask is not None and bool(mask.all()):
            mask = None
        if state is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            state = (zeros, zeros)
        directions = self.num_directions
        outputs, finals = [], []
        for direction, column in enumerate(self.columns):
            initial = tuple(s[direction::directions] for s in state)  # this direction's layers
            seq = reverse_padded(x, lengths) if direction else x
            out, final = column.run(seq, mask, initial)
            outputs.append(reverse_padded(out, lengths) if direction else out)
            finals.append(final)
        h, m = (torch.stack([f[k] for f in finals], dim=1).flatten(0, 1) for k in range(2))  # (layer, direction)
        return self.readout(torch.cat(outputs, dim=-1)), (h, m)
