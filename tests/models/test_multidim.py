"""Multi-dimensional family: MDRNN / MDLSTM (Graves et al. 2007), Grid LSTM (Kalchbrenner et al. 2016), ReNet
(Visin et al. 2015). Hand computations, a naive raster loop against the wavefront, scan directions as flipped images,
ReNet's sweeps through gradients, parameter budgets, and learning on 8x8 digits / the adding problem."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config, train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.grid_lstm import GridLSTM
from rnnlab.models.multidim import MDLSTM, MDRNN
from rnnlab.models.renet import ReNet, extract_patches
from rnnlab.wiring import build_model
from zoo_checks import check_interface

# Scan starts, written out independently of the module's table: flips of [N, H, W, F] (dim 1 rows, dim 2 columns).
CORNER_FLIPS = {
    1: [()],  # top-left
    2: [(), (1, 2)],  # top-left, bottom-right
    4: [(), (2,), (1,), (1, 2)],  # top-left, top-right, bottom-left, bottom-right
}


def flip(grid, dims):
    return grid.flip(dims) if dims else grid


def images(batch=3, channels=2, height=4, width=5, seed=0):
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


# --- MDRNN / MDLSTM math ------------------------------------------------------------------------------------------


def mdlstm_weights(layer, d):
    """Direction d's weights split by gate: dict gate -> (W_x [in, H], U_1 [H, H], U_2 [H, H], b [H])."""
    hidden = layer.hidden_size
    weights = {}
    for k, gate in enumerate(("i", "f1", "f2", "g", "o")):
        cols = slice(k * hidden, (k + 1) * hidden)
        U = layer.recurrent_weight[d][:, cols]
        weights[gate] = (layer.input_weight[d][:, cols], U[:hidden], U[hidden:], layer.input_bias[d][cols])
    return weights


def naive_mdlstm(layer, grid, d=0):
    """Graves et al. 2007's MDLSTM by a raster loop over pixels (row by row), with direction d's weights.

    grid [N, H, W, in] -> h [N, H, W, hidden]."""
    batch, height, width, _ = grid.shape
    w = mdlstm_weights(layer, d)
    zero = torch.zeros(batch, layer.hidden_size)
    h = [[None] * width for _ in range(height)]
    c = [[None] * width for _ in range(height)]
    for i in range(height):
        for j in range(width):
            h_up, c_up = (h[i - 1][j], c[i - 1][j]) if i > 0 else (zero, zero)
            h_left, c_left = (h[i][j - 1], c[i][j - 1]) if j > 0 else (zero, zero)

            def pre(gate):
                W_x, U_1, U_2, b = w[gate]
                return grid[:, i, j] @ W_x + h_up @ U_1 + h_left @ U_2 + b

            c[i][j] = (
                torch.sigmoid(pre("f1")) * c_up
                + torch.sigmoid(pre("f2")) * c_left
                + torch.sigmoid(pre("i")) * torch.tanh(pre("g"))
            )
            h[i][j] = torch.sigmoid(pre("o")) * torch.tanh(c[i][j])
    return torch.stack([torch.stack(row, dim=1) for row in h], dim=1)


def test_mdlstm_on_a_one_pixel_high_image_is_an_lstm_along_the_row():
    """With no row above, h_up = c_up = 0: c_j = f_2 * c_{j-1} + i * g, an LSTM with forget gate f_2 (1e-5)."""
    torch.manual_seed(0)
    model = MDLSTM(3, 4, hidden_size=6, directions=1, pool="last")
    x = torch.randn(2, 1, 3, 1, 7)  # [B, T, C, H=1, W=7]
    w = mdlstm_weights(model.layers[0], 0)
    h = c = torch.zeros(2, 6)
    expected = []
    for j in range(7):
        x_j = x[:, 0, :, 0, j]

        def pre(gate):
            W_x, _, U_2, b = w[gate]
            return x_j @ W_x + h @ U_2 + b

        c = torch.sigmoid(pre("f2")) * c + torch.sigmoid(pre("i")) * torch.tanh(pre("g"))
        h = torch.sigmoid(pre("o")) * torch.tanh(c)
        expected.append(h)
    with torch.no_grad():
        maps = model.feature_maps(x[:, 0])  # [D=1, N, 1, W, hidden]
        outputs, state = model(x)
    torch.testing.assert_close(maps[0, :, 0], torch.stack(expected, dim=1), rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, 0], model.readout(expected[-1]), rtol=0, atol=1e-5)  # pool last
    assert state is None


@pytest.mark.parametrize("shape", [(4, 5), (5, 3), (1, 4), (3, 1), (1, 1)])
def test_mdlstm_wavefront_equals_a_naive_raster_loop(shape):
    torch.manual_seed(1)
    model = MDLSTM(2, 3, hidden_size=5, directions=1)
    grid = images(height=shape[0], width=shape[1]).permute(0, 2, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.layers[0](grid)[0], naive_mdlstm(model.layers[0], grid), rtol=0, atol=1e-5)


def test_stacked_mdlstm_layers_read_the_layer_below():
    torch.manual_seed(2)
    model = MDLSTM(2, 3, hidden_size=4, directions=1, num_layers=2)
    x = images()
    with torch.no_grad():
        first = naive_mdlstm(model.layers[0], x.permute(0, 2, 3, 1))
        expected = naive_mdlstm(model.layers[1], first)
        torch.testing.assert_close(model.feature_maps(x)[0], expected, rtol=0, atol=1e-5)


def naive_layer(layer, grid, directions):
    """A whole layer by raster loops: each direction's scan on the flipped grid, flipped back, [D, N, H, W, hidden]."""
    return torch.stack(
        [flip(naive_mdlstm(layer, flip(grid, dims), d), dims) for d, dims in enumerate(CORNER_FLIPS[directions])]
    )


@pytest.mark.parametrize("directions, shape", [(1, (4, 5)), (2, (5, 3)), (4, (3, 4)), (4, (1, 4)), (4, (3, 1))])
def test_mdlstm_wavefront_kernel_values_and_gradients_equal_raster_loops(directions, shape):
    """The hand-written wavefront (rnnlab.models.multidim_kernels, one autograd node per layer) against autograd
    through naive raster loops: two stacked layers, every scan direction, values and all gradients to 1e-5."""
    torch.manual_seed(13)
    model = MDLSTM(2, 3, hidden_size=4, directions=directions, num_layers=2)
    x = images(height=shape[0], width=shape[1]).requires_grad_()
    weights = torch.randn(directions, 3, *shape, 4)
    maps = model.feature_maps(x)
    first = naive_layer(model.layers[0], x.permute(0, 2, 3, 1), directions)
    expected = naive_layer(model.layers[1], first.permute(1, 2, 3, 0, 4).flatten(3), directions)
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-5)
    inputs = [x, *model.layers.parameters()]
    grads = torch.autograd.grad((maps * weights).sum(), inputs)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-5)


def test_mdlstm_under_autocast_runs_the_autograd_wavefront():
    """Mixed precision runs the step loop (the kernel computes in one dtype): same values, to bfloat16 precision."""
    torch.manual_seed(14)
    model = MDLSTM(2, 3, hidden_size=4, directions=2)
    x = images()
    with torch.no_grad():
        expected = model.feature_maps(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            maps = model.feature_maps(x)
    torch.testing.assert_close(maps.float(), expected, rtol=0, atol=0.05)


def test_mdrnn_2x2_image_by_hand():
    """h_{i,j} = tanh(W x_{i,j} + U_1 h_{i-1,j} + U_2 h_{i,j-1} + b), h outside the image 0."""
    torch.manual_seed(3)
    model = MDRNN(2, 3, hidden_size=4, directions=1, pool="mean")
    layer = model.layers[0]
    W, b = layer.input_weight[0], layer.input_bias[0]
    U_1, U_2 = layer.recurrent_weight[0][:4], layer.recurrent_weight[0][4:]
    x = images(batch=2, height=2, width=2)
    p = x.permute(0, 2, 3, 1)  # p[:, i, j] = x_{i,j}
    h00 = torch.tanh(p[:, 0, 0] @ W + b)
    h01 = torch.tanh(p[:, 0, 1] @ W + h00 @ U_2 + b)
    h10 = torch.tanh(p[:, 1, 0] @ W + h00 @ U_1 + b)
    h11 = torch.tanh(p[:, 1, 1] @ W + h01 @ U_1 + h10 @ U_2 + b)
    with torch.no_grad():
        maps = model.feature_maps(x)[0]
        outputs, _ = model(x[:, None])
    for (i, j), expected in {(0, 0): h00, (0, 1): h01, (1, 0): h10, (1, 1): h11}.items():
        torch.testing.assert_close(maps[:, i, j], expected, rtol=0, atol=1e-6)
    mean = (h00 + h01 + h10 + h11) / 4
    torch.testing.assert_close(outputs[:, 0], model.readout(mean), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", [MDRNN, MDLSTM])
@pytest.mark.parametrize("directions", [2, 4])
def test_each_scan_direction_is_the_one_direction_model_on_the_flipped_image(cls, directions):
    torch.manual_seed(4)
    many = cls(2, 3, hidden_size=4, directions=directions)
    one = cls(2, 3, hidden_size=4, directions=1)
    x = images(height=4, width=6)
    with torch.no_grad():
        maps = many.feature_maps(x)  # [D, N, H, W, hidden], original orientation
        for d, dims in enumerate(CORNER_FLIPS[directions]):
            for name, parameter in one.layers[0].named_parameters():
                parameter.copy_(getattr(many.layers[0], name)[d : d + 1])
            flipped = flip(x.permute(0, 2, 3, 1), dims).permute(0, 3, 1, 2)
            expected = flip(one.feature_maps(flipped)[0], dims)
            torch.testing.assert_close(maps[d], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", [MDRNN, MDLSTM])
def test_each_scan_sees_exactly_the_quadrant_behind_it(cls):
    """h_{i,j} of the scan from corner (a, b) depends on the pixels between (a, b) and (i, j), and on no other."""
    torch.manual_seed(5)
    model = cls(1, 2, hidden_size=3, directions=4)
    x = images(batch=1, channels=1, height=5, width=5).requires_grad_()
    i, j = 2, 3
    corners = [(0, 0), (0, 4), (4, 0), (4, 4)]  # top-left, top-right, bottom-left, bottom-right
    maps = model.feature_maps(x)
    for d, (a, b) in enumerate(corners):
        (grad,) = torch.autograd.grad(maps[d, 0, i, j].sum(), x, retain_graph=True)
        rows = torch.arange(5)[:, None].expand(5, 5)
        cols = torch.arange(5)[None, :].expand(5, 5)
        behind = ((rows - a) * (rows - i) <= 0) & ((cols - b) * (cols - j) <= 0)
        assert (grad[0, 0][behind] != 0).all(), d
        assert (grad[0, 0][~behind] == 0).all(), d


@pytest.mark.parametrize("pool", ["last", "max"])
def test_pooling_reads_the_opposite_corner_or_the_maximum(pool):
    torch.manual_seed(6)
    model = MDRNN(2, 3, hidden_size=4, directions=4, pool=pool)
    x = images(height=3, width=4)
    with torch.no_grad():
        maps = model.feature_maps(x)
        outputs, _ = model(x[:, None])
    if pool == "last":  # the scan from corner (a, b) ends at the opposite corner
        pooled = [maps[0, :, -1, -1], maps[1, :, -1, 0], maps[2, :, 0, -1], maps[3, :, 0, 0]]
    else:
        pooled = [maps[d].amax((1, 2)) for d in range(4)]
    torch.testing.assert_close(outputs[:, 0], model.readout(torch.cat(pooled, dim=-1)), rtol=0, atol=1e-6)


# --- image-model interface ----------------------------------------------------------------------------------------

IMAGE_MODELS = [
    (MDRNN, {}),
    (MDLSTM, dict(num_layers=2, directions=2, pool="last")),
    (ReNet, {}),
    (ReNet, dict(cell="lstm", num_layers=2, pool="max")),
]


@pytest.mark.parametrize("cls, kwargs", IMAGE_MODELS)
def test_image_models_read_frames_independently_and_ignore_padded_frames(cls, kwargs):
    torch.manual_seed(7)
    model = cls(2, 3, hidden_size=5, **kwargs).eval()
    inputs = cls.example_inputs(4, 2)
    x, lengths = inputs["x"], inputs["lengths"]
    assert x.shape[:3] == (4, 3, 2) and lengths.tolist() == [3, 2, 1, 3]
    noisy = x.clone()
    padded = torch.arange(3)[None, :] >= lengths[:, None]
    noisy[padded] = 100 * torch.randn_like(noisy[padded])
    with torch.no_grad():
        outputs, state = model(**inputs)
        noisy_outputs, _ = model(noisy, lengths)
        assert outputs.shape == (4, 3, 3) and state is None and model.output_size == 3
        torch.testing.assert_close(noisy_outputs, outputs, rtol=0, atol=0)
        torch.testing.assert_close(outputs[padded], model.readout.bias.expand(int(padded.sum()), 3))
        alone, _ = model(x[1:2, 1:2])  # one frame alone gives the output it has inside the batch
        torch.testing.assert_close(alone[0, 0], outputs[1, 1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls, kwargs", IMAGE_MODELS)
def test_image_models_backpropagate_to_every_parameter(cls, kwargs):
    torch.manual_seed(8)
    model = cls(2, 3, hidden_size=5, **kwargs)
    x = cls.example_inputs(2, 2)["x"].requires_grad_()
    outputs, _ = model(x)
    outputs.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_image_models_refuse_sequences_and_state():
    model = MDLSTM(1, 3, hidden_size=4)
    with pytest.raises(ValueError, match="layout=image"):
        model(torch.randn(2, 8, 1))
    with pytest.raises(ValueError, match="no state"):
        model(torch.randn(2, 1, 1, 4, 4), state=torch.zeros(1))


@pytest.mark.parametrize(
    "cls, kwargs, key",
    [
        (MDRNN, dict(directions=3), "directions"),
        (MDLSTM, dict(pool="sum"), "pool"),
        (MDLSTM, dict(num_layers=0), "num_layers"),
        (ReNet, dict(cell="rnn"), "cell"),
        (ReNet, dict(patch_size=0), "patch_size"),
        (ReNet, dict(pool="last"), "pool"),
        (GridLSTM, dict(hidden_size=0), "hidden_size"),
    ],
)
def test_bad_settings_name_their_key(cls, kwargs, key):
    with pytest.raises(ConfigError) as error:
        cls(1, 3, **kwargs)
    assert error.value.key == key


# --- ReNet --------------------------------------------------------------------------------------------------------


def test_patches_are_the_non_overlapping_blocks_zero_padded_at_the_edges():
    x = torch.randn(2, 3, 5, 7)
    patches = extract_patches(x, 2)
    assert patches.shape == (2, 3, 4, 3 * 2 * 2)
    padded = torch.zeros(2, 3, 6, 8)
    padded[:, :, :5, :7] = x
    for i in range(3):
        for j in range(4):
            block = padded[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]  # [N, C, 2, 2]
            torch.testing.assert_close(patches[:, i, j], block.reshape(2, -1), rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_renet_horizontal_sweep_is_bidirectional_and_the_vertical_one_spreads_it(cell):
    """Through gradients: the row sweep's output at patch (i, j) reads every patch of row i, left and right of j,
    and no other row; after the column sweep, every patch of the image."""
    torch.manual_seed(9)
    model = ReNet(1, 2, hidden_size=3, patch_size=2, cell=cell)
    layer = model.layers[0]
    patches = extract_patches(torch.randn(1, 1, 8, 10), 2).requires_grad_()  # 4 x 5 patches
    horizontal = layer.sweep_horizontal(patches)
    assert horizontal.shape == (1, 4, 5, 6)
    i, j = 1, 2
    (grad,) = torch.autograd.grad(horizontal[0, i, j].sum(), patches, retain_graph=True)
    reaches = grad[0].abs().sum(-1) > 0  # [rows, columns] of patches
    assert reaches[i].all()  # left of j, j itself and right of j
    assert not reaches[torch.arange(4) != i].any()
    forward_only, backward_only = horizontal[0, i, j, :3], horizontal[0, i, j, 3:]
    (grad_forward,) = torch.autograd.grad(forward_only.sum(), patches, retain_graph=True)
    (grad_backward,) = torch.autograd.grad(backward_only.sum(), patches)
    assert (grad_forward[0, i].abs().sum(-1) > 0).tolist() == [True, True, True, False, False]
    assert (grad_backward[0, i].abs().sum(-1) > 0).tolist() == [False, False, True, True, True]
    image = torch.randn(1, 1, 8, 10, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(image)[0, :, i, j].sum(), image)
    assert (grad.abs() > 0).all()  # the vertical sweep over the rows' summaries reaches the whole image


def test_renet_layers_halve_the_map_with_2x2_patches():
    model = ReNet(1, 2, hidden_size=3, num_layers=2, patch_size=2)
    x = torch.randn(4, 1, 8, 8)
    first = model.layers[0](x)
    assert first.shape == (4, 6, 4, 4)
    assert model.layers[1](first).shape == (4, 6, 2, 2)


# --- Grid LSTM ----------------------------------------------------------------------------------------------------


def lstm_by_hand(W, b, H, m):
    """LSTM(H, m, W) of Kalchbrenner et al. eq. 41 with gate rows (i, f, g, o)."""
    n = m.shape[-1]
    pre = H @ W.T + b
    i, f, g, o = (pre[:, k * n : (k + 1) * n] for k in range(4))
    m = torch.sigmoid(f) * m + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(m), m


def test_grid_lstm_one_step_by_hand():
    """Eqs. 40-41: per layer, H = [h^time; h^depth], time and depth LSTMs each with their own weights."""
    torch.manual_seed(10)
    hidden = 4
    model = GridLSTM(3, 2, hidden_size=hidden, num_layers=2)
    column = model.columns[0]
    x = torch.randn(5, 1, 3)
    h_time, m_time = torch.randn(2, 5, hidden), torch.randn(2, 5, hidden)
    h_depth = x[:, 0] @ column.input.weight.T + column.input.bias  # the input enters at the bottom of depth
    m_depth = torch.zeros(5, hidden)
    new_h, new_m = [], []
    for layer in range(2):
        W, b = column.weight[layer], column.bias[layer]
        H = torch.cat([h_time[layer], h_depth], dim=-1)  # eq. 40
        h, m = lstm_by_hand(W[: 4 * hidden], b[: 4 * hidden], H, m_time[layer])  # eq. 41, time
        h_depth, m_depth = lstm_by_hand(W[4 * hidden :], b[4 * hidden :], H, m_depth)  # eq. 41, depth
        new_h.append(h)
        new_m.append(m)
    with torch.no_grad():
        outputs, (state_h, state_m) = model(x, state=(h_time, m_time))
    torch.testing.assert_close(outputs[:, 0], model.readout(h_depth), rtol=0, atol=1e-6)
    torch.testing.assert_close(state_h, torch.stack(new_h), rtol=0, atol=1e-6)
    torch.testing.assert_close(state_m, torch.stack(new_m), rtol=0, atol=1e-6)


def grid_lstm_by_hand(model, x, lengths, state):
    """The unidirectional Grid LSTM block by block (eqs. 40-41), padded steps keeping the time state."""
    column, hidden = model.columns[0], model.hidden_size
    h_time, m_time = list(state[0]), list(state[1])
    outputs = []
    for t in range(x.shape[1]):
        keep = (t < lengths)[:, None]
        h_depth = x[:, t] @ column.input.weight.T + column.input.bias
        m_depth = torch.zeros_like(h_depth)
        for layer in range(model.num_layers):
            W, b = column.weight[layer], column.bias[layer]
            H = torch.cat([h_time[layer], h_depth], dim=-1)
            h, m = lstm_by_hand(W[: 4 * hidden], b[: 4 * hidden], H, m_time[layer])
            h_depth, m_depth = lstm_by_hand(W[4 * hidden :], b[4 * hidden :], H, m_depth)
            h_time[layer] = torch.where(keep, h, h_time[layer])
            m_time[layer] = torch.where(keep, m, m_time[layer])
        outputs.append(torch.where(keep, h_depth, 0.0))
    return model.readout(torch.stack(outputs, dim=1)), (torch.stack(h_time), torch.stack(m_time))


@pytest.mark.parametrize("steps, layers", [(6, 3), (1, 3), (2, 4), (5, 1)])
def test_grid_lstm_sequence_kernel_values_and_gradients_equal_the_block_loop(steps, layers):
    """The whole-grid wavefront kernel (rnnlab.models.multidim_kernels, hand-written backward) against autograd
    through the blocks by hand, on a padded batch with a carried state: outputs, final state and every gradient to
    1e-5 (also with fewer steps than layers, where the anti-diagonals are cut by the time axis)."""
    torch.manual_seed(15)
    model = GridLSTM(3, 2, hidden_size=4, num_layers=layers)
    x = torch.randn(3, steps, 3, requires_grad=True)
    lengths = torch.tensor([steps, max(steps - 2, 1), 1])
    state = tuple(torch.randn(layers, 3, 4, requires_grad=True) for _ in range(2))
    outputs, (h, m) = model(x, lengths, state)
    expected, (expected_h, expected_m) = grid_lstm_by_hand(model, x, lengths, state)
    torch.testing.assert_close((outputs, h, m), (expected, expected_h, expected_m), rtol=0, atol=1e-5)
    weights = torch.randn_like(outputs)
    inputs = [x, *state, *model.parameters()]
    grads = torch.autograd.grad((outputs * weights).sum() + h.sum() + m.sin().sum(), inputs)
    expected_grads = torch.autograd.grad((expected * weights).sum() + expected_h.sum() + expected_m.sin().sum(), inputs)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-5)


def test_grid_lstm_under_autocast_runs_the_block_loop():
    """Mixed precision runs the block loop (the kernel computes in one dtype): same values, to bfloat16 precision."""
    torch.manual_seed(16)
    model = GridLSTM(3, 2, hidden_size=4, num_layers=2)
    x, lengths = torch.randn(3, 5, 3), torch.tensor([5, 3, 1])
    with torch.no_grad():
        expected, _ = model(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs, _ = model(x, lengths)
    torch.testing.assert_close(outputs.float(), expected, rtol=0, atol=0.05)


@pytest.mark.parametrize("kwargs", [{}, dict(num_layers=3), dict(bidirectional=True)])
def test_grid_lstm_interface_shapes_padding_and_carried_state(kwargs):
    torch.manual_seed(11)
    model = GridLSTM(3, 2, hidden_size=5, **kwargs)
    check_interface(model, 3, 2, carried=not kwargs.get("bidirectional", False))


def test_bidirectional_grid_lstm_backward_column_reads_the_reversed_sequence():
    torch.manual_seed(12)
    model = GridLSTM(3, 2, hidden_size=4, bidirectional=True)
    x, lengths = torch.randn(2, 6, 3), torch.tensor([6, 4])
    zeros = torch.zeros(2, 2, 4)
    with torch.no_grad():
        _, (h, _) = model(x, lengths)
        for row, length in enumerate(lengths.tolist()):
            reversed_ = x[row : row + 1, :length].flip(1)
            _, (h_back, _) = model.columns[1].run(reversed_, None, (zeros[:, :1], zeros[:, :1]))
            torch.testing.assert_close(h[1::2, row], h_back[:, 0], rtol=0, atol=1e-6)  # (layer, direction) order


# --- configs and parameter budgets --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mdrnn", "mdlstm", "renet", "grid_lstm"])
def test_param_budget_picks_a_hidden_size_within_five_percent(tmp_path, name):
    cfg = compose_config(tmp_path, [f"model={name}", "model.param_budget=20000"])
    model = build_model(cfg.model, 1, 10)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 20000) <= 0.05 * 20000, (name, count, model.hidden_size)


# --- learning -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name, epochs", [("mdlstm", 5), ("mdrnn", 4), ("renet", 4)])
def test_image_models_learn_8x8_digits(tmp_path, one_thread, name, epochs):
    record = train_in_process(
        tmp_path,
        f"model={name}",
        "model.hidden_size=16",
        "data=digits",
        "data.layout=image",
        "optimizer.lr=0.01",
        f"trainer.max_epochs={epochs}",
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/acc"] > 0.5, record["metrics"]  # chance 0.1


@pytest.mark.slow
def test_grid_lstm_learns_the_adding_problem(tmp_path, one_thread):
    record = train_in_process(
        tmp_path,
        "model=grid_lstm",
        "model.hidden_size=32",
        "data=adding",
        "data.seq_len=10",
        "data.train_size=4000",
        "optimizer.lr=0.01",
        "trainer.max_epochs=5",
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.05, record["metrics"]  # predicting the mean sum 1: MSE 0.167
