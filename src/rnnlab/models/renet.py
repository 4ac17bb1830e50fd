"""ReNet (Visin et al. 2015): RNN sweeps over patches of each frame instead of convolution and pooling.

An image model of the multi-dimensional family: the image frame (layout, valid frames, readout) is
``rnnlab.models.multidim``'s; here the patches, the layer of row and column sweeps, and the network.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rnnlab.errors import require_choice, require_positive
from rnnlab.models.multidim import _ImageModel

RENET_POOLINGS = ("mean", "max")
RENET_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


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
