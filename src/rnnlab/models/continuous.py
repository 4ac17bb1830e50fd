"""Recurrent networks with explicit time constants: leaky-integrator units and the continuous-time RNN."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.base import RecurrentCell, RecurrentNetwork
from rnnlab.models.elman import ACTIVATIONS

SOLVERS = ("euler", "rk4")
LEARNED_TAU_FLOOR = 1e-3  # a learned tau starts at max(tau, 1 + this): softplus cannot reach 0


def time_constants(
    tau: float | Sequence[float], hidden_size: int, minimum: float, strict: bool = False
) -> torch.Tensor:
    """Per-unit time constants [H]: one value for all units, or ``[low, high]`` spaced geometrically over the units.

    Every value must be >= ``minimum`` (> ``minimum`` when ``strict``); ConfigError on ``tau`` otherwise.
    """
    values = list(tau) if isinstance(tau, Sequence) and not isinstance(tau, str) else [tau]
    if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError("tau", f"must be a number or a range [low, high], got {tau!r}")
    too_small = min(values) <= minimum if strict else min(values) < minimum
    if too_small or values[0] > values[-1]:
        bound = f"{'>' if strict else '>='} {minimum}"
        raise ConfigError("tau", f"must be {bound} (a range as [low, high] with low <= high), got {tau!r}")
    low, high = float(values[0]), float(values[-1])
    return torch.exp(torch.linspace(math.log(low), math.log(high), hidden_size))


class LeakyCell(RecurrentCell):
    """One layer of leaky integrators; tau [H] fixed (buffer) or learned as tau = 1 + softplus(rho). State (h,)."""

    def __init__(self, input_size: int, hidden_size: int, tau: torch.Tensor, learn_tau: bool):
        super().__init__()
        self.hidden_size = hidden_size
        self.input = nn.Linear(input_size, hidden_size)  # W, b
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)  # U
        if learn_tau:
            excess = (tau - 1).clamp(min=LEARNED_TAU_FLOOR)
            self.rho = nn.Parameter(excess + torch.log(-torch.expm1(-excess)))  # softplus^-1(tau - 1)
        else:
            self.register_buffer("fixed_tau", tau)

    @property
    def tau(self) -> torch.Tensor:
        """Per-unit time constants [H], all >= 1."""
        return 1 + nn.functional.softplus(self.rho) if hasattr(self, "rho") else self.fixed_tau

    def project(self, x):
        return self.input(x)

    def step(self, projected, state, t):
        (h,) = state
        leak = 1 / self.tau
        return ((1 - leak) * h + leak * torch.tanh(projected + self.recurrent(h)),)


class LeakyRNN(RecurrentNetwork):
    """RNN of leaky-integrator units (Jaeger et al. 2007; Goodfellow, Bengio & Courville, Deep Learning, 10.9.2).

        h_t = (1 - 1/tau) * h_{t-1} + (1/tau) * tanh(W x_t + U h_{t-1} + b)

    with one time constant tau_i >= 1 per unit (tau = 1 is an Elman unit; larger tau remembers longer). ``tau`` is a
    number for all units or a range [low, high] spread geometrically over each layer's units; ``learn_tau`` trains
    them, parametrised as tau = 1 + softplus(rho) so they stay >= 1. Shapes as in ``rnnlab.models.base``;
    state h: [layers*dirs, B, H].
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        tau: float | Sequence[float] = (1.0, 10.0),
        learn_tau: bool = False,
        **kwargs,
    ):
        self.tau = tau
        self.learn_tau = learn_tau
        time_constants(tau, 1, minimum=1.0)  # fail on a bad tau before building anything
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return LeakyCell(input_size, self.hidden_size, time_constants(self.tau, self.hidden_size, 1.0), self.learn_tau)


class CTRNNCell(RecurrentCell):
    """One CTRNN layer: ``substeps`` solver steps of size dt per input step, input held constant. State (h,)."""

    def __init__(self, input_size, hidden_size, tau: torch.Tensor, activation, solver: str, dt: float, substeps: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input = nn.Linear(input_size, hidden_size)  # V, b
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)  # W
        self.register_buffer("tau", tau)
        self.activation = activation
        self.solver = solver
        self.dt = dt
        self.substeps = substeps

    def project(self, x):
        return self.input(x)

    def derivative(self, h: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
        """dh/dt = (-h + W sigma(h) + V x + b) / tau."""
        return (-h + self.recurrent(self.activation(h)) + drive) / self.tau

    def step(self, projected, state, t):
        (h,) = state
        dt = self.dt
        for _ in range(self.substeps):
            k1 = self.derivative(h, projected)
            if self.solver == "euler":
                h = h + dt * k1
                continue
            k2 = self.derivative(h + dt / 2 * k1, projected)
            k3 = self.derivative(h + dt / 2 * k2, projected)
            k4 = self.derivative(h + dt * k3, projected)
            h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return (h,)

    def output(self, state):
        return self.activation(state[0])


class CTRNN(RecurrentNetwork):
    """Continuous-time RNN (Funahashi & Nakamura 1993; Beer 1995), integrated with a fixed-step solver.

        tau dh/dt = -h + W sigma(h) + V x(t) + b

    Each input step holds x(t) = x_t for ``substeps`` steps of size ``dt`` (so one input step spans dt * substeps time
    units) of forward Euler, h += dt f(h), or classical Runge-Kutta 4 (``solver``). The layer emits the firing rate
    sigma(h_t) (``activation``), which the next layer and the readout read; the state is the potential h.
    ``tau`` is one number or a range [low, high] spread geometrically over the units (fixed; > 0). Explicit Euler is
    stable only for dt / tau below about 2. Shapes as in ``rnnlab.models.base``; state h: [layers*dirs, B, H].
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        tau: float | Sequence[float] = 1.0,
        dt: float = 0.5,
        substeps: int = 2,
        solver: str = "euler",
        activation: str = "tanh",
        **kwargs,
    ):
        time_constants(tau, 1, minimum=0.0, strict=True)
        require_positive(dt=dt, substeps=substeps)
        if not isinstance(substeps, int):
            raise ConfigError("substeps", f"must be an integer, got {substeps!r}")
        require_choice("solver", solver, SOLVERS)
        require_choice("activation", activation, tuple(ACTIVATIONS))
        self.tau = tau
        self.dt = dt
        self.substeps = substeps
        self.solver = solver
        self.activation = ACTIVATIONS[activation]
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        tau = time_constants(self.tau, self.hidden_size, minimum=0.0, strict=True)
        return CTRNNCell(input_size, self.hidden_size, tau, self.activation, self.solver, self.dt, self.substeps)
