"""Unitary and orthogonal families: W built from its factors by hand, norm preservation, orthogonality under training,
a GORU step by hand, the interface, config errors, learning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import REPO, train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.unitary import (
    EfficientUnitaryCell,
    EfficientUnitaryRNN,
    GatedOrthogonalRNN,
    OrthogonalRNN,
    UnitaryCell,
    UnitaryRNN,
    modrelu,
)
from zoo_checks import check_interface

IN, OUT, H = 3, 2, 6
EYE = torch.eye(H, dtype=torch.complex64)


def matrix_of(cell, size=H) -> torch.Tensor:
    """W as a matrix: ``transition`` maps the rows of I (e_i -> W e_i), so W is the transpose of the result."""
    with torch.no_grad():
        return cell.transition(torch.eye(size, dtype=torch.complex64)).T


def assert_unitary(w: torch.Tensor) -> None:
    torch.testing.assert_close(w.conj().T @ w, torch.eye(len(w), dtype=w.dtype), rtol=0, atol=1e-5)


def test_modrelu_is_relu_of_the_shifted_modulus_with_the_phase_kept():
    torch.manual_seed(0)
    z = torch.polar(0.05 + torch.rand(50), torch.rand(50) * 2 * math.pi)  # |z| >= 0.05: away from the smoothing
    b = torch.randn(50) * 0.5
    expected = torch.relu(z.abs() + b) * z / z.abs()
    torch.testing.assert_close(modrelu(z, b), expected, rtol=1e-5, atol=1e-6)
    real = torch.randn(50)
    real = real + 0.05 * torch.sign(real)  # |z| is smoothed to sqrt(|z|^2 + 1e-8), which shows only near 0
    torch.testing.assert_close(modrelu(real, b), torch.relu(real.abs() + b) * torch.sign(real), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(modrelu(z, torch.zeros(50)), z, rtol=1e-6, atol=0)  # b = 0: the identity
    zero = torch.zeros(3, requires_grad=True)
    modrelu(zero, torch.full((3,), 0.1)).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_urnn_matrix_is_the_documented_product_of_factors_and_unitary():
    torch.manual_seed(0)
    cell = UnitaryCell(IN, H)
    d1, d2, d3 = (torch.diag(torch.exp(1j * theta.detach()).to(torch.complex64)) for theta in cell.phases)
    j, k = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    dft = torch.exp(-2j * math.pi * j * k / H).to(torch.complex64) / math.sqrt(H)
    reflections = []
    for re, im in cell.reflections.detach():
        v = torch.complex(re, im)[:, None]
        reflections.append(torch.eye(H, dtype=torch.complex64) - 2 * (v @ v.conj().T) / (v.conj().T @ v))
    permutation = torch.zeros(H, H, dtype=torch.complex64)
    permutation[torch.arange(H), cell.permutation] = 1  # (Pi h)_i = h_{pi(i)}
    expected = d3 @ reflections[1] @ dft.conj().T @ d2 @ permutation @ reflections[0] @ dft @ d1
    w = matrix_of(cell)
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-5)
    assert_unitary(w)


@pytest.mark.parametrize("size,capacity", [(6, 4), (7, 3), (5, 1), (8, 8), (1, 2), (2, 3)])
def test_eurnn_matrix_is_the_product_of_givens_layers_and_unitary(size, capacity):
    torch.manual_seed(1)
    cell = EfficientUnitaryCell(IN, size, capacity)
    expected = torch.eye(size, dtype=torch.complex64)
    for layer in range(capacity):  # the reference: one 2x2 block per pair, written out with loops
        offset = layer % 2
        theta = (cell.theta_a if offset == 0 else cell.theta_b)[layer // 2].detach()
        phi = (cell.phi_a if offset == 0 else cell.phi_b)[layer // 2].detach()
        block = torch.eye(size, dtype=torch.complex64)
        for pair, p in enumerate(range(offset, size - 1, 2)):
            c, s, e = math.cos(theta[pair]), math.sin(theta[pair]), complex(math.cos(phi[pair]), math.sin(phi[pair]))
            block[p, p], block[p, p + 1], block[p + 1, p], block[p + 1, p + 1] = e * c, -e * s, s, c
        expected = block @ expected
    expected = torch.diag(torch.exp(1j * cell.omega.detach()).to(torch.complex64)) @ expected
    w = matrix_of(cell, size)
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-5)
    assert_unitary(w)
    assert cell.theta_a.numel() + cell.theta_b.numel() == sum((size - layer % 2) // 2 for layer in range(capacity))


def norm_preserving(name: str):
    """The network with the nonlinearity made the identity (modReLU bias 0), so h_t = W h_{t-1} + (input)."""
    torch.manual_seed(2)
    model = {
        "urnn": lambda: UnitaryRNN(IN, OUT, hidden_size=H),
        "eurnn": lambda: EfficientUnitaryRNN(IN, OUT, hidden_size=H, capacity=5),
        "orthogonal_rnn/expm": lambda: OrthogonalRNN(IN, OUT, hidden_size=H, nonlinearity="modrelu"),
        "orthogonal_rnn/cayley": lambda: OrthogonalRNN(IN, OUT, hidden_size=H, parametrization="cayley"),
    }[name]()
    with torch.no_grad():
        model.cells[0].bias.zero_()
    return model


@pytest.mark.parametrize("name", ["urnn", "eurnn", "orthogonal_rnn/expm", "orthogonal_rnn/cayley"])
def test_recurrence_preserves_the_state_norm_with_zero_input(name):
    model = norm_preserving(name)
    complex_state = name in ("urnn", "eurnn")
    dtype = torch.complex64 if complex_state else torch.float32
    h0 = torch.randn(1, 4, H, dtype=dtype)
    h0 = h0 / torch.linalg.vector_norm(h0, dim=-1, keepdim=True)
    with torch.no_grad():
        hidden, final = model.run_layers(torch.zeros(4, 40, IN), None, h0)  # hidden: [Re h, Im h] or h per step
        norms = torch.linalg.vector_norm(hidden, dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)
        assert torch.linalg.vector_norm(final[0] - h0[0]) > 0.1  # the state moved, it did not just stay put
        h = h0[0]
        for _ in range(40):  # the linear transition alone, no nonlinearity at all
            h = model.cells[0].transition(h)
        torch.testing.assert_close(torch.linalg.vector_norm(h, dim=-1), torch.ones(4), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", [OrthogonalRNN, GatedOrthogonalRNN])
@pytest.mark.parametrize("parametrization", ["expm", "cayley"])
def test_recurrent_matrix_stays_orthogonal_after_optimizer_steps(family, parametrization):
    torch.manual_seed(3)
    model = family(IN, OUT, hidden_size=16, parametrization=parametrization)
    before = model.cells[0].recurrent.weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 12, IN), torch.randn(8, 12, OUT)
    for _ in range(5):
        optimizer.zero_grad()
        loss = ((model(x)[0] - y) ** 2).mean()
        loss.backward()
        optimizer.step()
    u = model.cells[0].recurrent.weight.detach()
    assert (u - before).abs().max() > 1e-2
    torch.testing.assert_close(u.T @ u, torch.eye(16), rtol=0, atol=1e-5)
    h = torch.randn(5, 16)
    torch.testing.assert_close(torch.linalg.vector_norm(h @ u.T, dim=-1), torch.linalg.vector_norm(h, dim=-1))


def test_goru_step_by_hand():
    torch.manual_seed(4)
    model = GatedOrthogonalRNN(IN, OUT, hidden_size=H)
    cell = model.cells[0]
    with torch.no_grad():
        cell.bias.copy_(torch.linspace(-0.5, 0.5, H))  # both signs of modReLU's bias matter
        cell.gate_bias.normal_()
    x, h = torch.randn(5, 1, IN), torch.randn(1, 5, H)
    w_r, w_z, w_x = cell.input.weight.split(H)
    u_r, u_z = cell.gates.weight.split(H)
    b_r, b_z = cell.gate_bias.split(H)
    u = cell.recurrent.weight
    xt, h0 = x[:, 0], h[0]
    r = torch.sigmoid(xt @ w_r.T + h0 @ u_r.T + b_r)
    z = torch.sigmoid(xt @ w_z.T + h0 @ u_z.T + b_z)
    pre = xt @ w_x.T + r * (h0 @ u.T)
    candidate = torch.relu(pre.abs() + cell.bias) * torch.sign(pre)
    expected = z * h0 + (1 - z) * candidate
    with torch.no_grad():
        outputs, state = model(x, state=h)
        torch.testing.assert_close(state[0], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(outputs[:, 0], model.readout(expected), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(u.T @ u, torch.eye(H), rtol=0, atol=1e-5)


def real_modrelu(z, b):
    """modReLU of real z as first written: relu(m + b) * z / m, m = sqrt(z^2 + 1e-8)."""
    magnitude = torch.sqrt(z.square() + 1e-8)
    return z * (torch.relu(magnitude + b) / magnitude)


def orthogonal_loop(cell, x, h, mask):
    """The orthogonal RNN as the step loop of autograd ops it was written as: h_t = f(W_x x_t + U h_{t-1} + b)."""
    u, outputs = cell.recurrent.weight, []
    activations = {"modrelu": lambda z: real_modrelu(z, cell.bias), "tanh": torch.tanh, "relu": torch.relu}
    for t in range(x.shape[1]):
        pre = cell.input(x[:, t]) + h @ u.T
        keep = mask[:, t, None]
        h = torch.where(keep, activations[cell.nonlinearity](pre), h)
        outputs.append(torch.where(keep, h, 0.0))
    return torch.stack(outputs, dim=1), h


def goru_loop(cell, x, h, mask):
    """GORU (Jing et al. 2017) as the step loop of autograd ops it was written as."""
    size, outputs = cell.hidden_size, []
    for t in range(x.shape[1]):
        projected = cell.input(x[:, t])
        gates = torch.sigmoid(projected[:, : 2 * size] + cell.gate_bias + h @ cell.gates.weight.T)
        reset, update = gates.chunk(2, dim=-1)
        candidate = real_modrelu(projected[:, 2 * size :] + reset * (h @ cell.recurrent.weight.T), cell.bias)
        keep = mask[:, t, None]
        h = torch.where(keep, update * h + (1 - update) * candidate, h)
        outputs.append(torch.where(keep, h, 0.0))
    return torch.stack(outputs, dim=1), h


@pytest.mark.parametrize(
    "build,loop",
    [
        (lambda: OrthogonalRNN(IN, OUT, hidden_size=H), orthogonal_loop),
        (lambda: OrthogonalRNN(IN, OUT, hidden_size=H, nonlinearity="tanh", parametrization="cayley"), orthogonal_loop),
        (lambda: OrthogonalRNN(IN, OUT, hidden_size=H, nonlinearity="relu"), orthogonal_loop),
        (lambda: GatedOrthogonalRNN(IN, OUT, hidden_size=H), goru_loop),
        (lambda: GatedOrthogonalRNN(IN, OUT, hidden_size=H, parametrization="cayley"), goru_loop),
    ],
    ids=["orthogonal_modrelu", "orthogonal_tanh_cayley", "orthogonal_relu", "goru", "goru_cayley"],
)
def test_sequence_kernel_matches_the_step_loop_in_values_and_gradients(build, loop):
    """The hand-written whole-sequence kernels (rnnlab.models.unitary_kernels) against the autograd step loop, with
    padding and a carried state: outputs, final state and every gradient to 1e-5."""
    torch.manual_seed(6)
    model = build()
    cell = model.cells[0]
    with torch.no_grad():
        if hasattr(cell, "bias"):
            cell.bias.copy_(torch.linspace(-0.5, 0.5, H))  # both signs of modReLU's bias matter
        if hasattr(cell, "gate_bias"):
            cell.gate_bias.normal_()
    x = torch.randn(4, 9, IN, requires_grad=True)
    h0 = torch.randn(1, 4, H, requires_grad=True)
    lengths = torch.tensor([9, 4, 1, 7])
    mask = torch.arange(9)[None, :] < lengths[:, None]
    weights = torch.randn(4, 9, H)
    leaves = [x, h0, *model.parameters()]

    def gradients(hidden, final):
        loss = (hidden * weights).sum() + (final * torch.linspace(-1, 1, H)).sum()
        return torch.autograd.grad(loss, leaves, allow_unused=True)

    hidden, final = model.run_layers(x, lengths, h0)
    expected_hidden, expected_final = loop(cell, x, h0[0], mask)
    torch.testing.assert_close(hidden, expected_hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final[0], expected_final, rtol=1e-5, atol=1e-5)
    for got, want in zip(gradients(hidden, final[0]), gradients(expected_hidden, expected_final)):
        if want is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def transition_as_written(cell, h):
    """W h as first written: reflections by an elementwise product and sum, rows permuted and partners gathered by
    advanced indexing, phases and rotations from the cell's parameters."""
    if isinstance(cell, UnitaryCell):
        d1, d2, d3 = torch.polar(torch.ones_like(cell.phases), cell.phases)
        v1, v2 = (torch.complex(re, im) for re, im in cell.reflections)
        u1, u2 = v1 / torch.linalg.vector_norm(v1), v2 / torch.linalg.vector_norm(v2)

        def reflect(z, u):
            return z - 2 * (z * u.conj()).sum(-1, keepdim=True) * u

        h = torch.fft.fft(h * d1, norm="ortho")
        h = reflect(h, u1)[:, cell.permutation] * d2
        return reflect(torch.fft.ifft(h, norm="ortho"), u2) * d3
    for layer in range(cell.capacity):
        offset, index = layer % 2, layer // 2
        theta = (cell.theta_a, cell.theta_b)[offset][index]
        phi = (cell.phi_a, cell.phi_b)[offset][index]
        partner = (cell.partner_a, cell.partner_b)[offset]
        rotated = h.clone()
        for pair, p in enumerate(range(offset, h.shape[-1] - 1, 2)):  # one 2x2 block per pair
            e = torch.polar(torch.ones_like(phi[pair]), phi[pair])
            c, s = torch.cos(theta[pair]), torch.sin(theta[pair])
            rotated[:, p] = e * c * h[:, p] - e * s * h[:, partner[p]]
            rotated[:, p + 1] = s * h[:, p] + c * h[:, p + 1]
        h = rotated
    return torch.polar(torch.ones_like(cell.omega), cell.omega) * h


def complex_loop(cell, x):
    """h_t = modReLU(W h_{t-1} + V x_t, b) step by step, |z| from view_as_real as first written; [Re h, Im h]."""
    real, imag = cell.input(x).chunk(2, dim=-1)
    h, outputs = torch.zeros(x.shape[0], cell.hidden_size, dtype=torch.complex64), []
    for t in range(x.shape[1]):
        z = transition_as_written(cell, h) + torch.complex(real[:, t], imag[:, t])
        magnitude = torch.sqrt(torch.view_as_real(z).square().sum(-1) + 1e-8)
        h = z * (torch.relu(magnitude + cell.bias) / magnitude)
        outputs.append(torch.cat([h.real, h.imag], dim=-1))
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize(
    "build",
    [lambda: UnitaryRNN(IN, OUT, hidden_size=H), lambda: EfficientUnitaryRNN(IN, OUT, hidden_size=7, capacity=5)],
    ids=["urnn", "eurnn"],
)
def test_complex_transitions_match_the_first_written_ops_in_values_and_gradients(build):
    """The reflections as matrix-vector products and rank-1 updates, gathers by index_select and the rotations as
    one addcmul per layer, against the ops they replaced: outputs and every gradient to 1e-5."""
    torch.manual_seed(7)
    model = build()
    cell = model.cells[0]
    with torch.no_grad():
        cell.bias.copy_(torch.linspace(-0.5, 0.5, cell.hidden_size))  # both signs of modReLU's bias matter
    x = torch.randn(4, 6, IN, requires_grad=True)
    weights = torch.randn(4, 6, 2 * cell.hidden_size)
    leaves = [x, *cell.parameters()]
    hidden, _ = model.run_layers(x, None, None)
    expected = complex_loop(cell, x)
    torch.testing.assert_close(hidden, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad((hidden * weights).sum(), leaves)
    for got, want in zip(grads, torch.autograd.grad((expected * weights).sum(), leaves)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", [UnitaryRNN, EfficientUnitaryRNN])
def test_complex_families_carry_a_complex_state_and_emit_real_and_imaginary_parts(family):
    model = family(IN, OUT, hidden_size=H, num_layers=2, bidirectional=True)
    outputs, state = model(torch.randn(2, 4, IN))
    assert state.dtype == torch.complex64 and state.shape == (4, 2, H)
    assert outputs.dtype == torch.float32 and model.readout.in_features == 2 * 2 * H
    assert all(not p.is_complex() for p in model.parameters())


BUILDERS = {
    "urnn": lambda **kw: UnitaryRNN(IN, OUT, hidden_size=H, **kw),
    "eurnn": lambda **kw: EfficientUnitaryRNN(IN, OUT, hidden_size=5, capacity=3, **kw),
    "orthogonal_rnn": lambda **kw: OrthogonalRNN(IN, OUT, hidden_size=H, **kw),
    "orthogonal_rnn_tanh_cayley": lambda **kw: OrthogonalRNN(
        IN, OUT, hidden_size=H, nonlinearity="tanh", parametrization="cayley", **kw
    ),
    "orthogonal_rnn_relu": lambda **kw: OrthogonalRNN(IN, OUT, hidden_size=H, nonlinearity="relu", **kw),
    "goru": lambda **kw: GatedOrthogonalRNN(IN, OUT, hidden_size=H, **kw),
}


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize(
    "kwargs", [{}, dict(num_layers=2, residual=True), dict(bidirectional=True, num_layers=2, dropout=0.2)],
    ids=["plain", "stacked", "bidirectional"],
)
def test_interface_shapes_padding_and_carried_state(name, kwargs):
    torch.manual_seed(5)
    check_interface(BUILDERS[name](**kwargs), IN, OUT, carried=not kwargs.get("bidirectional", False))


@pytest.mark.parametrize(
    "build,key",
    [
        (lambda: EfficientUnitaryRNN(IN, OUT, capacity=0), "capacity"),
        (lambda: OrthogonalRNN(IN, OUT, parametrization="householder"), "parametrization"),
        (lambda: OrthogonalRNN(IN, OUT, nonlinearity="sigmoid"), "nonlinearity"),
        (lambda: GatedOrthogonalRNN(IN, OUT, parametrization="qr"), "parametrization"),
        (lambda: UnitaryRNN(IN, OUT, hidden_size=0), "hidden_size"),
    ],
)
def test_bad_settings_name_their_key(build, key):
    with pytest.raises(ConfigError) as error:
        build()
    assert error.value.key == key


@pytest.mark.parametrize("name", ["urnn", "eurnn", "orthogonal_rnn", "goru"])
def test_config_keys_are_constructor_arguments(name):
    cfg = OmegaConf.load(Path(REPO) / "conf" / "model" / f"{name}.yaml")
    model = instantiate(cfg)(input_size=IN, output_size=OUT)
    assert model.hidden_size == cfg.hidden_size


@pytest.mark.slow
@pytest.mark.parametrize("name", ["urnn", "eurnn", "orthogonal_rnn", "goru"])
def test_learns_the_adding_problem(tmp_path, name):
    record = train_in_process(
        tmp_path, f"model={name}", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=3"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
