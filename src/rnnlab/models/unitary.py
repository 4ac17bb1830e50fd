"""Unitary and orthogonal recurrent families (survey IV.J; Arjovsky et al. 2016; Jing et al. 2017; Lezcano-Casado 2019).

A norm-preserving transition (|W h| = |h|) neither explodes nor vanishes the gradient through the recurrent matrix,
so these cells carry information over long spans. Four families, each a :class:`RecurrentNetwork`:

* :class:`UnitaryRNN` (``urnn``): complex state, W a product of cheap unitary factors (Arjovsky, Shah & Bengio 2016).
* :class:`EfficientUnitaryRNN` (``eurnn``): complex state, W a product of layers of 2x2 rotations (Jing et al. 2017).
* :class:`OrthogonalRNN` (``orthogonal_rnn``): Elman with an exactly orthogonal real W (matrix exponential or Cayley
  map of a skew-symmetric matrix; Lezcano-Casado & Martinez-Rubio 2019, Helfrich et al. 2018).
* :class:`GatedOrthogonalRNN` (``goru``): GRU-like gates around an orthogonal transition (Jing et al. 2017).

:class:`OrthogonalRNN` and :class:`GatedOrthogonalRNN` run each sequence as one autograd node with a hand-written
backward (``rnnlab.models.unitary_kernels``); their ``step`` is the same math, used under hooks and autocast.

Complex cells emit [Re h, Im h] (2 * hidden_size features per direction) and carry a complex state
[layers*dirs, B, hidden_size]; real cells carry [layers*dirs, B, hidden_size]. Other shapes as in
``rnnlab.models.base``. All parameters are real tensors (complex numbers are assembled in the forward pass), so
optimizers, clipping and DDP see ordinary tensors.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from rnnlab.errors import require_choice, require_positive
from rnnlab.models.base import RecurrentCell, RecurrentNetwork, kernel_result
from rnnlab.models.unitary_kernels import (
    gated_orthogonal_sequence,
    modrelu,
    orthogonal_sequence,
)

PARAMETRIZATIONS = {"expm": "matrix_exp", "cayley": "cayley"}
NONLINEARITIES = ("tanh", "relu", "modrelu")


def complex_dtype(reference: torch.Tensor) -> torch.dtype:
    """complex64 for float32 (and lower) inputs, complex128 for float64."""
    return torch.complex128 if reference.dtype == torch.float64 else torch.complex64


class _CachedTransitionCell(RecurrentCell):
    """A cell whose step-invariant recurrent operator (phases, rotations, matrix exponential) is built once per
    sequence in ``run`` rather than once per step; ``transition_factors`` builds it."""

    _factors = None

    def transition_factors(self):
        raise NotImplementedError

    def factors(self):
        return self._factors if self._factors is not None else self.transition_factors()

    def run(self, x, mask, state):
        self._factors = self.transition_factors()
        try:
            return super().run(x, mask, state)
        finally:
            self._factors = None


class _WholeSequenceCell(_CachedTransitionCell):
    """A cell whose ``run`` hands the whole sequence to ``sequence`` (one autograd node with a hand-written backward,
    ``rnnlab.models.unitary_kernels``) instead of stepping ``step`` in Python; ``step`` is the same math, and runs
    instead under autocast (the kernel computes in one dtype) or with a ``step_hook`` (the kernel never calls it)."""

    def sequence(self, projected: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor]:
        """(h_0..h_T,) [T + 1, B, H] from the input projections ``projected`` [T, B, ...] and h_0 [B, H]."""
        raise NotImplementedError

    def run(self, x, mask, state):
        if torch.is_autocast_enabled(x.device.type) or self.step_hook is not None:
            return super().run(x, mask, state)
        projected = self.project(x.transpose(0, 1))  # time-major [T, B, ...]: each step's slice is contiguous
        states = self.sequence(projected, state[0])
        return kernel_result(states[0][1:].transpose(0, 1), states, mask)


class _ComplexCell(_CachedTransitionCell):
    """Complex hidden state h [B, H]; input through a complex projection V x (V = V_re + i V_im, no bias);
    h_t = modReLU(W h_{t-1} + V x_t, b); emits [Re h, Im h]."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input = nn.Linear(input_size, 2 * hidden_size, bias=False)
        self.bias = nn.Parameter(torch.empty(hidden_size).uniform_(-0.01, 0.01))

    @property
    def output_size(self) -> int:
        return 2 * self.hidden_size

    def project(self, x):
        real, imag = self.input(x).chunk(2, dim=-1)
        return torch.complex(real, imag)

    def initial_state(self, batch, reference):
        return (reference.new_zeros(batch, self.hidden_size, dtype=complex_dtype(reference)),)

    def transition(self, h: torch.Tensor) -> torch.Tensor:
        """W h for a batch of complex states [B, H] (rows are the vectors)."""
        raise NotImplementedError

    def step(self, projected, state, t):
        (h,) = state
        return (modrelu(self.transition(h) + projected, self.bias),)

    def output(self, state):
        return torch.cat([state[0].real, state[0].imag], dim=-1)


def _unit_phases(angles: torch.Tensor) -> torch.Tensor:
    return torch.polar(torch.ones_like(angles), angles)


class UnitaryCell(_ComplexCell):
    """W = D3 R2 F^-1 D2 Pi R1 F D1 (Arjovsky et al. 2016).

    D_k = diag(exp(i theta_k)), R_k = I - 2 v_k v_k^* / ||v_k||^2 (complex reflections), F the unitary DFT
    (``norm="ortho"``), Pi a fixed random permutation. 7H real parameters for W (3H phases, 2 x 2H reflection).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.phases = nn.Parameter(torch.empty(3, hidden_size).uniform_(-math.pi, math.pi))
        self.reflections = nn.Parameter(torch.empty(2, 2, hidden_size).uniform_(-1.0, 1.0))  # [k, (re, im), H]
        self.register_buffer("permutation", torch.randperm(hidden_size))

    def transition_factors(self):
        diagonals = _unit_phases(self.phases)  # [3, H]
        vectors = torch.complex(self.reflections[:, 0], self.reflections[:, 1])
        units = vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)  # [2, H]
        return diagonals, units

    def transition(self, h):
        (d1, d2, d3), (u1, u2) = self.factors()

        def reflect(z, u):  # z - 2 (u^* z) u for each row z: one matrix-vector product and one rank-1 update
            return torch.addr(z, z @ u.conj(), u, alpha=-2)

        h = torch.fft.fft(h * d1, norm="ortho")
        h = reflect(h, u1).index_select(-1, self.permutation) * d2
        h = reflect(torch.fft.ifft(h, norm="ortho"), u2)
        return h * d3


class UnitaryRNN(RecurrentNetwork):
    """Unitary evolution RNN (Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks").

        h_t = modReLU(W h_{t-1} + V x_t, b),   W = D3 R2 F^-1 D2 Pi R1 F D1
        y_t = U [Re h_t ; Im h_t] + b_o                                       (the network's readout)

    h_t is complex [B, hidden_size]; each layer/direction emits [Re h, Im h] (2 * hidden_size). See
    :class:`UnitaryCell` for the factors. State: complex [layers*dirs, B, hidden_size].
    """

    def make_cell(self, input_size, layer, direction):
        return UnitaryCell(input_size, self.hidden_size)


def _rotation_layer(theta: torch.Tensor, phi: torch.Tensor, offset: int, size: int):
    """Coefficient vectors of layers of 2x2 rotations on pairs (offset + 2k, offset + 2k + 1).

    Each pair (p, q) is rotated by [[e^{i phi} cos theta, -e^{i phi} sin theta], [sin theta, cos theta]], so
    y = diag * h + off * h[partner]. theta, phi: [layers, pairs] -> diag, off: complex [layers, size]
    (unpaired positions: diag 1, off 0).
    """
    phase = _unit_phases(phi)
    cos = torch.complex(torch.cos(theta), torch.zeros_like(theta))
    sin = torch.complex(torch.sin(theta), torch.zeros_like(theta))
    diag = torch.stack([phase * cos, cos], dim=-1).flatten(-2)
    off = torch.stack([-phase * sin, sin], dim=-1).flatten(-2)
    layers, paired = diag.shape
    ones = diag.new_ones(layers, 1)
    zeros = diag.new_zeros(layers, 1)
    tail = size - offset - paired
    diag = torch.cat([ones.expand(-1, offset), diag, ones.expand(-1, tail)], dim=-1)
    off = torch.cat([zeros.expand(-1, offset), off, zeros.expand(-1, tail)], dim=-1)
    return diag, off


def _partner_index(offset: int, size: int) -> torch.Tensor:
    """partner[p] = q for each rotated pair (p, q), partner[p] = p for unpaired positions."""
    partner = torch.arange(size)
    first = torch.arange(offset, max(offset, size - 1), 2)
    partner[first], partner[first + 1] = first + 1, first
    return partner


class EfficientUnitaryCell(_ComplexCell):
    """W = D F^(L) ... F^(2) F^(1), tunable space of Jing et al. (2017).

    F^(l) rotates the pairs (0,1), (2,3), ... for odd l and (1,2), (3,4), ... for even l, one 2x2 rotation
    (theta, phi) per pair (see ``_rotation_layer``); D = diag(exp(i omega)). Each layer is one vectorised
    elementwise op over all pairs. ``capacity`` = L; L = H spans the whole unitary group.
    """

    def __init__(self, input_size: int, hidden_size: int, capacity: int):
        super().__init__(input_size, hidden_size)
        self.capacity = capacity
        even_layers, odd_layers = (capacity + 1) // 2, capacity // 2  # layers A (offset 0) and B (offset 1)
        self.theta_a = nn.Parameter(torch.empty(even_layers, hidden_size // 2).uniform_(-math.pi, math.pi))
        self.phi_a = nn.Parameter(torch.empty(even_layers, hidden_size // 2).uniform_(-math.pi, math.pi))
        self.theta_b = nn.Parameter(torch.empty(odd_layers, (hidden_size - 1) // 2).uniform_(-math.pi, math.pi))
        self.phi_b = nn.Parameter(torch.empty(odd_layers, (hidden_size - 1) // 2).uniform_(-math.pi, math.pi))
        self.omega = nn.Parameter(torch.empty(hidden_size).uniform_(-math.pi, math.pi))
        self.register_buffer("partner_a", _partner_index(0, hidden_size))
        self.register_buffer("partner_b", _partner_index(1, hidden_size))

    def transition_factors(self):
        layers_a = _rotation_layer(self.theta_a, self.phi_a, 0, self.hidden_size)
        layers_b = _rotation_layer(self.theta_b, self.phi_b, 1, self.hidden_size)
        return layers_a, layers_b, _unit_phases(self.omega)

    def transition(self, h):
        (diag_a, off_a), (diag_b, off_b), diagonal = self.factors()
        for layer in range(self.capacity):
            if layer % 2 == 0:
                h = torch.addcmul(diag_a[layer // 2] * h, off_a[layer // 2], h.index_select(-1, self.partner_a))
            else:
                h = torch.addcmul(diag_b[layer // 2] * h, off_b[layer // 2], h.index_select(-1, self.partner_b))
        return diagonal * h


class EfficientUnitaryRNN(RecurrentNetwork):
    """Efficient unitary RNN, tunable space (Jing et al. 2017, "Tunable Efficient Unitary Neural Networks (EUNN)
    and their application to RNNs").

        h_t = modReLU(W h_{t-1} + V x_t, b),   W = D F^(capacity) ... F^(1)   (layers of Givens rotations)
        y_t = U [Re h_t ; Im h_t] + b_o

    ``capacity``: number of rotation layers (cost O(capacity * H) per step). Shapes as :class:`UnitaryRNN`.
    """

    def __init__(self, input_size: int, output_size: int, capacity: int = 4, **kwargs):
        require_positive(capacity=capacity)
        self.capacity = capacity
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return EfficientUnitaryCell(input_size, self.hidden_size, self.capacity)


def orthogonal_linear(size: int, parametrization: str) -> nn.Linear:
    """A bias-free size x size linear map whose weight stays exactly orthogonal: W = B f(A), A skew-symmetric,
    f = matrix exponential (``expm``) or Cayley map (``cayley``), B the initial random orthogonal matrix
    (torch.nn.utils.parametrizations.orthogonal; Lezcano-Casado & Martinez-Rubio 2019)."""
    require_choice("parametrization", parametrization, tuple(PARAMETRIZATIONS))
    return orthogonal(nn.Linear(size, size, bias=False), orthogonal_map=PARAMETRIZATIONS[parametrization])


class OrthogonalCell(_WholeSequenceCell):
    """h_t = f(W_x x_t + U h_{t-1} + b), U orthogonal; for f = modReLU the bias is modReLU's and W_x has none.

    ``run`` builds U once and runs ``unitary_kernels.orthogonal_sequence``; ``step`` is the same step by autograd.
    """

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str, parametrization: str):
        super().__init__()
        self.hidden_size = hidden_size
        self.nonlinearity = nonlinearity
        self.input = nn.Linear(input_size, hidden_size, bias=nonlinearity != "modrelu")
        self.recurrent = orthogonal_linear(hidden_size, parametrization)
        if nonlinearity == "modrelu":
            self.bias = nn.Parameter(torch.empty(hidden_size).uniform_(-0.01, 0.01))

    def project(self, x):
        return self.input(x)

    def transition_factors(self):
        return self.recurrent.weight  # one matrix exponential / Cayley solve per sequence

    def transition(self, h):
        return h @ self.factors().T

    def sequence(self, projected, h0):
        bias = self.bias if self.nonlinearity == "modrelu" else None
        return orthogonal_sequence(projected, h0, self.recurrent.weight, bias, self.nonlinearity)

    def step(self, projected, state, t):
        (h,) = state
        pre = projected + self.transition(h)
        if self.nonlinearity == "modrelu":
            return (modrelu(pre, self.bias),)
        return (torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre),)


class OrthogonalRNN(RecurrentNetwork):
    """Elman RNN with an exactly orthogonal recurrent matrix (survey eqs. 1-3 with U^T U = I; expRNN,
    Lezcano-Casado & Martinez-Rubio 2019; scoRNN, Helfrich et al. 2018).

        h_t = f(W_x x_t + U h_{t-1} + b),   U = B exp(A) or B (I + A/2)^-1 (I - A/2),   A = -A^T

    ``nonlinearity``: tanh, relu or modrelu (h_t = modReLU(W_x x_t + U h_{t-1}, b)); ``parametrization``: expm or
    cayley. The trainable parameter of U is an H x H matrix of which only the skew part is used (H(H-1)/2 free).
    Shapes as in ``rnnlab.models.base``; state h: [layers*dirs, B, H].
    """

    def __init__(self, input_size: int, output_size: int, nonlinearity: str = "modrelu",
                 parametrization: str = "expm", **kwargs):
        require_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        require_choice("parametrization", parametrization, tuple(PARAMETRIZATIONS))
        self.nonlinearity = nonlinearity
        self.parametrization = parametrization
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return OrthogonalCell(input_size, self.hidden_size, self.nonlinearity, self.parametrization)


class GatedOrthogonalCell(_WholeSequenceCell):
    """One GORU step (Jing et al. 2017); see :class:`GatedOrthogonalRNN`. ``run`` stacks [U_r; U_z; U] (one matrix
    product per step) and runs ``unitary_kernels.gated_orthogonal_sequence``; ``step`` is the same step by autograd.
    """

    def __init__(self, input_size: int, hidden_size: int, parametrization: str):
        super().__init__()
        self.hidden_size = hidden_size
        self.input = nn.Linear(input_size, 3 * hidden_size, bias=False)  # W_r, W_z, W_x
        self.gate_bias = nn.Parameter(torch.zeros(2 * hidden_size))  # b_r, b_z
        self.gates = nn.Linear(hidden_size, 2 * hidden_size, bias=False)  # U_r, U_z
        self.recurrent = orthogonal_linear(hidden_size, parametrization)  # U
        self.bias = nn.Parameter(torch.empty(hidden_size).uniform_(-0.01, 0.01))  # modReLU's b

    def project(self, x):
        return self.input(x)

    def transition_factors(self):
        return self.recurrent.weight

    def sequence(self, projected, h0):
        weight = torch.cat([self.gates.weight, self.recurrent.weight])  # [3H, H]: U_r, U_z, U
        return gated_orthogonal_sequence(projected, h0, self.gate_bias, weight, self.bias)

    def step(self, projected, state, t):
        (h,) = state
        size = self.hidden_size
        reset, update = torch.sigmoid(projected[:, : 2 * size] + self.gate_bias + self.gates(h)).chunk(2, dim=-1)
        candidate = modrelu(projected[:, 2 * size :] + reset * (h @ self.factors().T), self.bias)
        return (update * h + (1 - update) * candidate,)


class GatedOrthogonalRNN(RecurrentNetwork):
    """Gated orthogonal recurrent unit (Jing et al. 2017, "Gated Orthogonal Recurrent Units: On Learning to Forget";
    survey IV.J).

        r_t = sigma(W_r x_t + U_r h_{t-1} + b_r)                        (reset gate)
        z_t = sigma(W_z x_t + U_z h_{t-1} + b_z)                        (update gate)
        h~_t = modReLU(W_x x_t + r_t * (U h_{t-1}), b)                  (U orthogonal)
        h_t = z_t * h_{t-1} + (1 - z_t) * h~_t

    U uses the orthogonal parametrization of :class:`OrthogonalRNN` (``parametrization`` expm or cayley; the paper
    uses a complex EUNN, here U is real). Shapes as in ``rnnlab.models.base``; state h: [layers*dirs, B, H].
    """

    def __init__(self, input_size: int, output_size: int, parametrization: str = "expm", **kwargs):
        require_choice("parametrization", parametrization, tuple(PARAMETRIZATIONS))
        self.parametrization = parametrization
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return GatedOrthogonalCell(input_size, self.hidden_size, self.parametrization)
