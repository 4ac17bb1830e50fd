"""Forward sensitivities of a recurrent layer: exact RTRL (Williams & Zipser 1989) and the block Jacobians of the
O(N^3) BPTT/RTRL hybrid (Schmidhuber 1992).

A single-layer, unidirectional Elman (survey eqs. 1-2) or LSTM (eqs. 32-36) network is a map

    s_t = F(s_{t-1}, x_t; theta),     s = h (Elman) or [h; c] (LSTM), S = N or 2N entries per sequence,

with theta = (W_ih [G*N, I], W_hh [G*N, N], b_ih [G*N], b_hh [G*N]) the weights of the network's ``nn.RNN`` /
``nn.LSTM`` (G = 1 or 4 gates), flattened in that order to P = G*N*(I + N + 2) entries. Its sensitivity

    Q_t = d s_t / d theta   [B, S, P]

obeys the RTRL recursion (Williams & Zipser 1989, eq. 12; survey section III)

    Q_t = (d s_t / d s_{t-1}) Q_{t-1} + d s_t / d theta |_{s_{t-1} fixed},       Q_0 = 0,

so the gradient of a loss l_t of the output at step t is (d l_t / d s_t) Q_t, available at step t (online). The
product with Q_{t-1} costs O(S^2 P) = O(N^4) per step and Q needs O(N^3) memory, independent of the sequence
length. :meth:`RecurrentSensitivity.step` writes the recursion out for each family (no autograd inside the loop);
:meth:`RecurrentSensitivity.block_jacobians` instead differentiates a whole block of steps by reverse mode (one
backward pass per state entry, O(h N^3) for h steps), which is the hybrid's way of carrying Q across a block.

Readout weights are not part of theta: the loss's gradient with respect to them is immediate (no recurrence).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jacrev, vmap

from rnnlab.errors import ConfigError

# Derivative f'(a) of each Elman activation written through its output h = f(a).
ACTIVATION_SLOPES = {
    "tanh": lambda h: 1.0 - h * h,
    "relu": lambda h: (h > 0).to(h.dtype),
    "sigmoid": lambda h: h * (1.0 - h),
}
SUPPORTED = "single-layer unidirectional elman and lstm models (model=elman, irnn, lstm; no LSTM peepholes or variants)"


def _column(values: torch.Tensor) -> torch.Tensor:
    """[B, N] -> [B, N, 1], to scale the rows of a sensitivity [B, N, P]."""
    return values.unsqueeze(-1)


def check_supported(model: nn.Module, rule: str) -> None:
    """Raise ConfigError(``training.rule``) unless ``model`` is a network whose sensitivities are written out here."""
    from rnnlab.models.elman import Elman
    from rnnlab.models.gated import LSTM

    name = type(model).__name__
    problem = None
    if type(model) not in (Elman, LSTM):
        problem = f"got {name}"
    elif model.num_layers != 1 or model.num_directions != 1:
        problem = f"got {name} with num_layers={model.num_layers}, bidirectional={model.num_directions == 2}"
    elif isinstance(model, LSTM) and not model.plain:
        problem = f"got LSTM variant={model.variant}, peepholes={model.peepholes}"
    elif not model.rnn.bias or getattr(model.rnn, "proj_size", 0):
        problem = f"got {name} without biases or with a projection"
    if problem is not None:
        raise ConfigError("training.rule", f"{rule} trains {SUPPORTED}; {problem}. Use bptt or tbptt for other models")


class RecurrentSensitivity:
    """The state map F of an Elman or LSTM network and its sensitivities Q_t (module docstring for the notation).

    States are tuples of [B, N] tensors ((h,) or (h, c)); ``flat_state`` concatenates them to [B, S]. ``keep`` [B]
    bool marks sequences whose step is valid: padded steps leave the state and its sensitivity unchanged.
    """

    def __init__(self, model: nn.Module, rule: str):
        check_supported(model, rule)
        self.model = model
        self.lstm = model.state_tensors == 2
        self.gates = 4 if self.lstm else 1
        self.hidden = model.hidden_size
        self.state_size = self.hidden * model.state_tensors
        rnn = model.rnn
        self.parameters = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
        self.num_parameters = sum(p.numel() for p in self.parameters)
        self.slope = None if self.lstm else ACTIVATION_SLOPES[model.activation]

    # ----- states -----------------------------------------------------------------------------------------------
    def initial(self, batch: int, reference: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Zero state and zero sensitivity [B, S, P] (the initial state does not depend on theta)."""
        state = tuple(reference.new_zeros(batch, self.hidden) for _ in range(self.model.state_tensors))
        return state, reference.new_zeros(batch, self.state_size, self.num_parameters)

    def from_model_state(self, state) -> tuple[torch.Tensor, ...]:
        """The network's state ([1, B, N] or a tuple of them) as a tuple of [B, N]."""
        components = state if isinstance(state, tuple) else (state,)
        return tuple(component[0] for component in components)

    def to_model_state(self, state: tuple[torch.Tensor, ...]):
        """Inverse of :meth:`from_model_state`."""
        stacked = tuple(component.unsqueeze(0) for component in state)
        return stacked if self.lstm else stacked[0]

    @staticmethod
    def flat_state(state: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat(state, dim=-1)

    def split_state(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flat.split(self.hidden, dim=-1))

    def flat_parameters(self) -> torch.Tensor:
        """theta as one vector [P], differentiable with respect to the network's parameters."""
        return torch.cat([p.reshape(-1) for p in self.parameters])

    # ----- the map F, as the network computes it ----------------------------------------------------------------
    def cell(self, x: torch.Tensor, state: tuple[torch.Tensor, ...], parameters) -> tuple[torch.Tensor, ...]:
        """s_t = F(s_{t-1}, x_t; theta) with the network's own ``cell_step``; x [..., I], state components [..., N]."""
        weight_ih, weight_hh, bias_ih, bias_hh = parameters
        return self.model.cell_step(nn.functional.linear(x, weight_ih, bias_ih), state, weight_hh, bias_hh)

    def run_block(self, x: torch.Tensor, keep: torch.Tensor, state: tuple[torch.Tensor, ...], parameters=None):
        """Run steps x [B, L, I] (valid where keep [B, L]) from ``state``; returns h of every step [B, L, N] (zeros at
        padded steps, as the network emits) and the final state."""
        parameters = self.parameters if parameters is None else parameters
        hs = []
        for x_t, keep_t in zip(x.unbind(1), keep.unbind(1)):
            new = self.cell(x_t, state, parameters)
            row = keep_t.unsqueeze(-1)
            state = tuple(torch.where(row, n, o) for n, o in zip(new, state))
            hs.append(torch.where(row, state[0], 0.0))
        return torch.stack(hs, dim=1), state

    # ----- RTRL: one step of the sensitivity recursion -----------------------------------------------------------
    @torch.no_grad()
    def step(self, x: torch.Tensor, keep: torch.Tensor, state: tuple[torch.Tensor, ...], sensitivity: torch.Tensor):
        """One step of F and of Q_t = (ds_t/ds_{t-1}) Q_{t-1} + ds_t/dtheta (Williams & Zipser 1989, eq. 12).

        x [B, I], keep [B], state components [B, N], sensitivity [B, S, P]; returns the new (state, sensitivity).
        Elman:  Q^h_t = f'(a_t) * (W_hh Q^h_{t-1} + [delta x_t, delta h_{t-1}, delta, delta])
        LSTM:   with z = W_ih x + b_ih + W_hh h_{t-1} + b_hh split into gates i, f, g, o (eqs. 32-36),
                Q^c_t = f Q^c_{t-1} + c_{t-1} f' Q^{z_f} + g i' Q^{z_i} + i g' Q^{z_g}
                Q^h_t = tanh(c_t) o' Q^{z_o} + o (1 - tanh^2 c_t) Q^c_t
        where Q^z = W_hh Q^h_{t-1} + dz/dtheta|_{h_{t-1} fixed} and primes are the activation slopes.
        """
        weight_ih, weight_hh, bias_ih, bias_hh = (p.detach() for p in self.parameters)
        h = state[0]
        projected = nn.functional.linear(x, weight_ih, bias_ih)
        dz = self.pre_activation_sensitivity(x, h, sensitivity[:, : self.hidden], weight_hh)  # [B, G*N, P]
        if not self.lstm:
            (new_h,) = self.model.cell_step(projected, state, weight_hh, bias_hh)
            new_sensitivity = _column(self.slope(new_h)) * dz
            new_state = (new_h,)
        else:
            c = state[1]
            n = self.hidden
            z = projected + nn.functional.linear(h, weight_hh, bias_hh)  # [B, 4N] pre-activations
            i, f, o = (torch.sigmoid(z[:, k * n : (k + 1) * n]) for k in (0, 1, 3))
            g = torch.tanh(z[:, 2 * n : 3 * n])
            dz_i, dz_f, dz_g, dz_o = dz.split(n, dim=1)
            new_c = f * c + i * g
            tanh_c = torch.tanh(new_c)
            new_h = o * tanh_c
            q_c = (
                _column(f) * sensitivity[:, n:]
                + _column(c * f * (1 - f)) * dz_f
                + _column(g * i * (1 - i)) * dz_i
                + _column(i * (1 - g * g)) * dz_g
            )
            q_h = _column(tanh_c * o * (1 - o)) * dz_o + _column(o * (1 - tanh_c * tanh_c)) * q_c
            new_sensitivity = torch.cat([q_h, q_c], dim=1)
            new_state = (new_h, new_c)
        row = keep.view(-1, 1)
        new_state = tuple(torch.where(row, new, old) for new, old in zip(new_state, state))
        new_sensitivity = torch.where(keep.view(-1, 1, 1), new_sensitivity, sensitivity)
        return new_state, new_sensitivity

    def pre_activation_sensitivity(self, x, h, sensitivity_h, weight_hh) -> torch.Tensor:
        """dz_t/dtheta [B, G*N, P]: W_hh Q^h_{t-1} (the O(N^4) product) plus the immediate term, which puts x_t,
        h_{t-1} and 1 on the diagonal rows of the blocks of W_ih, W_hh, b_ih, b_hh (z_r depends on row r only)."""
        dz = torch.matmul(weight_hh, sensitivity_h)  # [G*N, N] @ [B, N, P]
        batch, rows = x.shape[0], self.gates * self.hidden
        offset = 0
        for values in (x, h, None, None):  # W_ih, W_hh, b_ih, b_hh
            columns = 1 if values is None else values.shape[-1]
            block = dz[:, :, offset : offset + rows * columns].view(batch, rows, rows, columns)
            diagonal = block.diagonal(dim1=1, dim2=2)  # [B, columns, rows]: entry (r, r, k)
            diagonal += 1.0 if values is None else values.unsqueeze(-1)
            offset += rows * columns
        return dz

    # ----- hybrid: sensitivities across a block by reverse mode -------------------------------------------------
    @torch.no_grad()
    def block_jacobians(self, x: torch.Tensor, keep: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """d s_end / d s_start [B, S, S] and d s_end / d theta |_{s_start fixed} [B, S, P] of a block x [B, L, I].

        Reverse mode per sequence (``torch.func.jacrev`` under ``vmap``): S backward passes through the block's L
        steps, O(L S N^2) = O(L N^3) per sequence (Schmidhuber 1992, section 3).
        """
        parameters = tuple(p.detach() for p in self.parameters)

        def block_end(start: torch.Tensor, theta, xs: torch.Tensor, keeps: torch.Tensor) -> torch.Tensor:
            current = self.split_state(start)
            for x_t, keep_t in zip(xs.unbind(0), keeps.unbind(0)):
                new = self.cell(x_t, current, theta)
                current = tuple(torch.where(keep_t, n, o) for n, o in zip(new, current))
            return self.flat_state(current)

        jacobian = vmap(jacrev(block_end, argnums=(0, 1)), in_dims=(0, None, 0, 0))
        d_state, d_theta = jacobian(self.flat_state(state), parameters, x, keep)
        batch = x.shape[0]
        return d_state, torch.cat([d.reshape(batch, self.state_size, -1) for d in d_theta], dim=-1)
