"""Forward sensitivities of a recurrent layer: exact RTRL (Williams & Zipser 1989), the Green's function method (Sun,
Chen & Lee 1992) and the block Jacobians of Schmidhuber's (1992) O(N^3) block update.

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
backward pass per state entry, O(h N^3) for h steps), which is the block update's way of carrying Q across a block.

With J_t = d s_t / d s_{t-1} and b_t = d s_t / d theta |_{s_{t-1} fixed}, the recursion solves to Q_t = G_t R_t with
G_t = J_t G_{t-1} (G_0 = I) and R_t = R_{t-1} + G_t^{-1} b_t (R_0 = Q_0): :meth:`RecurrentSensitivity.green_step`,
O(N^3) per step. It uses the structure of b_t: z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh are the pre-activations
[B, G*N] and row r of z_t depends on row r of each weight only, so

    b_t = A_t (x) [x_t, h_{t-1}, 1, 1],      A_t = d s_t / d z_t  [B, S, G*N],

the column of theta's entry W[r, k] being column r of A_t times the k-th input of W (:meth:`add_parameter_columns`).
J_t and A_t are written out for each family too (:meth:`RecurrentSensitivity.local_jacobians`).

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
    """Raise ConfigError(``training``) unless ``model`` is a network whose sensitivities are written out here."""
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
        raise ConfigError(
            "training", f"{rule} trains {SUPPORTED}; {problem}. Use bptt or tbptt for other models", full=True
        )


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
    def local_slopes(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """One step of F, and the slopes of each new state entry with respect to its own unit's pre-activations and
        cell: x [B, I], state components [B, N]; returns (new state, {name: [B, N]}). With z = W_ih x + b_ih + W_hh
        h_{t-1} + b_hh (split into gates i, f, g, o for LSTM, eqs. 32-36) and primes the activation slopes:
        Elman:  h = f'(z);
        LSTM:   c_i = g i', c_f = c_{t-1} f', c_g = i g', c_c = f (dc_t/dc_{t-1}), h_o = tanh(c_t) o',
                h_c = o (1 - tanh^2 c_t) (dh_t/dc_t).
        """
        weight_ih, weight_hh, bias_ih, bias_hh = (p.detach() for p in self.parameters)
        projected = nn.functional.linear(x, weight_ih, bias_ih)
        if not self.lstm:
            (new_h,) = self.model.cell_step(projected, state, weight_hh, bias_hh)
            return (new_h,), {"h": self.slope(new_h)}
        h, c = state
        n = self.hidden
        z = projected + nn.functional.linear(h, weight_hh, bias_hh)  # [B, 4N] pre-activations
        i, f, o = (torch.sigmoid(z[:, k * n : (k + 1) * n]) for k in (0, 1, 3))
        g = torch.tanh(z[:, 2 * n : 3 * n])
        new_c = f * c + i * g
        tanh_c = torch.tanh(new_c)
        slopes = {"c_i": g * i * (1 - i), "c_f": c * f * (1 - f), "c_g": i * (1 - g * g), "c_c": f,
                  "h_o": tanh_c * o * (1 - o), "h_c": o * (1 - tanh_c * tanh_c)}
        return (o * tanh_c, new_c), slopes

    @torch.no_grad()
    def step(self, x: torch.Tensor, keep: torch.Tensor, state: tuple[torch.Tensor, ...], sensitivity: torch.Tensor):
        """One step of F and of Q_t = (ds_t/ds_{t-1}) Q_{t-1} + ds_t/dtheta (Williams & Zipser 1989, eq. 12).

        x [B, I], keep [B], state components [B, N], sensitivity [B, S, P]; returns the new (state, sensitivity).
        With the slopes of :meth:`local_slopes`,
        Elman:  Q^h_t = h * Q^z,   Q^z = W_hh Q^h_{t-1} + [delta x_t, delta h_{t-1}, delta, delta]
        LSTM:   Q^c_t = c_c Q^c_{t-1} + c_f Q^{z_f} + c_i Q^{z_i} + c_g Q^{z_g},    Q^h_t = h_o Q^{z_o} + h_c Q^c_t
        where Q^z = W_hh Q^h_{t-1} + dz/dtheta|_{h_{t-1} fixed}.
        """
        new_state, slopes = self.local_slopes(x, state)
        dz = self.pre_activation_sensitivity(x, state[0], sensitivity[:, : self.hidden], self.parameters[1].detach())
        if not self.lstm:
            new_sensitivity = _column(slopes["h"]) * dz
        else:
            n = self.hidden
            dz_i, dz_f, dz_g, dz_o = dz.split(n, dim=1)
            q_c = (
                _column(slopes["c_c"]) * sensitivity[:, n:]
                + _column(slopes["c_f"]) * dz_f
                + _column(slopes["c_i"]) * dz_i
                + _column(slopes["c_g"]) * dz_g
            )
            q_h = _column(slopes["h_o"]) * dz_o + _column(slopes["h_c"]) * q_c
            new_sensitivity = torch.cat([q_h, q_c], dim=1)
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

    # ----- Green's function: the recursion of Q_t as G_t R_t ----------------------------------------------------
    def local_jacobians(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """One step of F with J_t = d s_t / d s_{t-1} [B, S, S] and A_t = d s_t / d z_t [B, S, G*N] at that step.

        From the slopes of :meth:`local_slopes`, diagonal per unit: A_t's blocks (gates i, f, g, o along z) are
        Elman:  A = diag(h);       J = A W_hh
        LSTM:   dc/dz = [diag(c_i), diag(c_f), diag(c_g), 0],   dh/dz = diag(h_c) dc/dz + [0, 0, 0, diag(h_o)],
                J = [A W_hh, [diag(h_c c_c); diag(c_c)]]   (columns h_{t-1}, c_{t-1});
        O(S G N^2) for A W_hh. Returns (new state, J_t, A_t).
        """
        new_state, slopes = self.local_slopes(x, state)
        weight_hh = self.parameters[1].detach()
        diagonal = torch.diag_embed
        if not self.lstm:
            return new_state, _column(slopes["h"]) * weight_hh, diagonal(slopes["h"])
        zero = torch.zeros_like(diagonal(slopes["c_c"]))
        d_c = torch.cat([diagonal(slopes["c_i"]), diagonal(slopes["c_f"]), diagonal(slopes["c_g"]), zero], dim=-1)
        d_h = _column(slopes["h_c"]) * d_c + torch.cat([zero, zero, zero, diagonal(slopes["h_o"])], dim=-1)
        pre_activation = torch.cat([d_h, d_c], dim=1)  # A_t [B, 2N, 4N]
        through_cell = torch.cat([diagonal(slopes["h_c"] * slopes["c_c"]), diagonal(slopes["c_c"])], dim=1)
        jacobian = torch.cat([torch.matmul(pre_activation, weight_hh), through_cell], dim=-1)
        return new_state, jacobian, pre_activation

    def add_parameter_columns(self, out: torch.Tensor, coefficients: torch.Tensor, x: torch.Tensor, h: torch.Tensor):
        """out [B, S, P] += C (x) [x, h, 1, 1] in place, for C [B, S, G*N]: the column of theta's W[r, k] gains
        C[:, :, r] times the k-th input of W (x for W_ih, h for W_hh, 1 for the biases); C = A_t would add b_t.
        O(S G N (I + N)) = O(N^3), with no [B, S, P] temporary."""
        batch, rows, width = coefficients.shape
        offset = 0
        for values in (x, h, None, None):  # W_ih, W_hh, b_ih, b_hh
            columns = 1 if values is None else values.shape[-1]
            block = out[:, :, offset : offset + width * columns].view(batch, rows, width, columns)
            if values is None:
                block.squeeze(-1).add_(coefficients)
            else:
                block.addcmul_(coefficients.unsqueeze(-1), values[:, None, None, :])
            offset += width * columns

    @torch.no_grad()
    def green_step(self, x: torch.Tensor, keep: torch.Tensor, state: tuple[torch.Tensor, ...], green, weighted):
        """One step of F, of G_t = J_t G_{t-1} [B, S, S] and of R_t = R_{t-1} + G_t^{-1} b_t [B, S, P] (in place).

        G_t^{-1} b_t = (G_t^{-1} A_t) (x) [x_t, h_{t-1}, 1, 1]: one linear solve with G*N right-hand sides
        (``torch.linalg.solve_ex``, no explicit inverse) and an outer product, O(N^3); b_t is never formed. A G_t that
        is singular to working precision (a zero pivot) makes that sequence's R NaN, so its gradients are not finite.
        Padded steps leave the state, G and R unchanged. Returns the new (state, G); ``weighted`` (R) is updated in
        place.
        """
        new_state, jacobian, slopes = self.local_jacobians(x, state)
        green = torch.where(keep.view(-1, 1, 1), torch.bmm(jacobian, green), green)
        coefficients, singular = torch.linalg.solve_ex(green, slopes)  # G_t^{-1} A_t
        coefficients = coefficients.masked_fill((singular != 0).view(-1, 1, 1), float("nan")) * keep.view(-1, 1, 1)
        self.add_parameter_columns(weighted, coefficients, x, state[0])
        row = keep.view(-1, 1)
        return tuple(torch.where(row, new, old) for new, old in zip(new_state, state)), green

    # ----- block update: sensitivities across a block by reverse mode -------------------------------------------
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
