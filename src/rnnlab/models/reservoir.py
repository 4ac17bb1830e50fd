"""Reservoir computing: the echo state network (Jaeger 2001; Lukosevicius 2012).

The recurrent and input weights are drawn once and never trained (buffers, not parameters); only the linear readout
learns. ``rnnlab.tasks.esn.EchoStateTask`` fits that readout in closed form by ridge regression; under the ordinary
``SequenceTask`` the readout is trained by gradient descent instead.
"""

from __future__ import annotations

import torch

from rnnlab.errors import ConfigError, require_positive
from rnnlab.models.base import RecurrentCell, RecurrentNetwork


def random_reservoir(size: int, spectral_radius: float, density: float, attempts: int = 100) -> torch.Tensor:
    """A size x size matrix with a fraction ``density`` of non-zero entries drawn from U(-1, 1), rescaled so its
    largest eigenvalue modulus is ``spectral_radius`` (Lukosevicius 2012, section 3.2). A draw with no non-zero
    eigenvalue (likely for small, sparse reservoirs) is redrawn. Uses torch's global generator, so the run's seed
    fixes it."""
    for _ in range(attempts):
        weights = (torch.rand(size, size) * 2 - 1) * (torch.rand(size, size) < density)
        if weights.is_meta:  # shape-only build (parameter counting)
            return weights
        radius = torch.linalg.eigvals(weights.double()).abs().max()
        if radius > 1e-6:
            return (weights.double() * (spectral_radius / radius)).to(weights.dtype)
    raise ConfigError("density", f"{density} leaves a {size}x{size} reservoir with no non-zero eigenvalue")


class EchoStateCell(RecurrentCell):
    """Leaky-integrator reservoir (Lukosevicius 2012, eqs. 2-3):

        x~_t = tanh(W_in [1; u_t] + W x_{t-1})
        x_t = (1 - a) x_{t-1} + a x~_t

    W_in [H, 1 + in] dense from U(-input_scaling, input_scaling) (its first column is the bias), W sparse with the
    given spectral radius. Both are buffers: they move with the module and are saved, but are never trained.
    """

    def __init__(self, input_size: int, hidden_size: int, spectral_radius: float, leak_rate: float,
                 input_scaling: float, density: float):
        super().__init__()
        self.hidden_size = hidden_size
        self.leak_rate = leak_rate
        self.register_buffer("input_weight", (torch.rand(hidden_size, input_size) * 2 - 1) * input_scaling)
        self.register_buffer("input_bias", (torch.rand(hidden_size) * 2 - 1) * input_scaling)
        self.register_buffer("weight", random_reservoir(hidden_size, spectral_radius, density))

    def project(self, x):
        return torch.nn.functional.linear(x, self.input_weight, self.input_bias)

    def step(self, projected, state, t):
        (h,) = state
        update = torch.tanh(projected + h @ self.weight.T)
        return ((1 - self.leak_rate) * h + self.leak_rate * update,)


class EchoStateNetwork(RecurrentNetwork):
    """Echo state network (Jaeger 2001, "The echo state approach to analysing and training recurrent neural
    networks"; Lukosevicius 2012, "A Practical Guide to Applying Echo State Networks").

        x_t = (1 - a) x_{t-1} + a tanh(W_in [1; u_t] + W x_{t-1})      (fixed random W_in, W; rho(W) = spectral_radius)
        y_t = W_out [x_t; 1]                                           (the readout, the only trained weights)

    ``spectral_radius`` rho(W) > 0 (< 1 is the usual echo-state regime), ``leak_rate`` a in (0, 1], ``input_scaling``
    the range of W_in, ``density`` the fraction of non-zero entries of W. Layers > 1 form a deep ESN (each reservoir
    reads the states of the previous one; Gallicchio et al. 2017); ``dropout`` between layers acts as state noise
    while the readout is fitted. Shapes as in ``rnnlab.models.base``; state x: [layers*dirs, B, H].
    """

    def __init__(self, input_size: int, output_size: int, spectral_radius: float = 0.9, leak_rate: float = 1.0,
                 input_scaling: float = 1.0, density: float = 0.1, **kwargs):
        require_positive(spectral_radius=spectral_radius, input_scaling=input_scaling)
        if not 0 < leak_rate <= 1:
            raise ConfigError("leak_rate", f"must be in (0, 1], got {leak_rate!r}")
        if not 0 < density <= 1:
            raise ConfigError("density", f"must be in (0, 1], got {density!r}")
        self.reservoir = dict(spectral_radius=spectral_radius, leak_rate=leak_rate, input_scaling=input_scaling,
                              density=density)
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return EchoStateCell(input_size, self.hidden_size, **self.reservoir)
