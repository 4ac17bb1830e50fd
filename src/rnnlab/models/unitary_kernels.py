"""Whole-sequence recurrences of the real orthogonal families with hand-written backward passes.

The cells of :mod:`rnnlab.models.unitary` step through time in Python, and autograd records every step (a dozen
graph nodes each, modReLU alone six). These functions run the same recurrence as one autograd node, as
:mod:`rnnlab.models.kernels` does for the LSTM and GRU: the forward loop writes into preallocated buffers without
recording a graph, the backward loop applies the chain rule by hand (backpropagation through time), with each
step's elementwise Jacobian computed for all steps at once before the loop and the recurrent weight's gradient
computed after it as one matrix product over all steps. The recurrent matrix is an input: it is built once per
sequence from its orthogonal parametrization (matrix exponential or Cayley map), and autograd carries its gradient
on to the parameters.

Shapes (time-major, so each step's slice is contiguous):
    projected: [T, B, H] (orthogonal RNN) or [T, B, 3H] (GORU: W_r x, W_z x, W_x x)  input projections of all steps
    h0:        [B, H]      initial state
    weight:    [H, H] U (orthogonal RNN) or [3H, H] [U_r; U_z; U] (GORU)
    returns    [T + 1, B, H] states h_0 .. h_T, so the state after a sequence of length L is entry L.

modReLU (Arjovsky et al. 2016) on real z: h = z s, s = relu(m + b) / m, m = sqrt(z^2 + 1e-8), whose derivative is
dh/dz = s + (a' - s) z^2 / m^2 and dh/db = a' z / m, with a' = 1 where m + b > 0 (else 0).

The backward passes are not themselves differentiable (``once_differentiable``): use the step loop
(``RecurrentCell.run``) for second derivatives.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

sigmoid_backward = torch.ops.aten.sigmoid_backward
tanh_backward = torch.ops.aten.tanh_backward
threshold_backward = torch.ops.aten.threshold_backward


MODRELU_EPS = 1e-8


def modrelu(z: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """modReLU (Arjovsky et al. 2016): relu(|z| + b) * z / |z|, elementwise, for real or complex ``z``.

    |z| is smoothed to sqrt(|z|^2 + 1e-8) so the gradient is finite at z = 0; with b = 0 the map is exactly the
    identity, so the norm of the state is untouched. |z|^2 of a complex z is Re^2 + Im^2.
    """
    squared = z.real.square() + z.imag.square() if z.is_complex() else z.square()
    magnitude = torch.sqrt(squared + MODRELU_EPS)
    return z * (torch.relu(magnitude + bias) / magnitude)


def modrelu_into(z: torch.Tensor, bias: torch.Tensor, magnitude: torch.Tensor, scale: torch.Tensor, out: torch.Tensor):
    """``modrelu(z, bias)`` of real z [B, H] written into ``out``, keeping m = sqrt(z^2 + 1e-8) in ``magnitude`` and
    s = relu(m + b) / m in ``scale`` for the backward pass (the same operations as ``modrelu``)."""
    torch.sqrt(z.square().add_(MODRELU_EPS), out=magnitude)
    torch.div(torch.relu(magnitude + bias), magnitude, out=scale)
    torch.mul(z, scale, out=out)


def modrelu_derivatives(pre, magnitude, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """(dh/dz, dh/db) of real modReLU at every entry of ``pre`` [..., H] from the m and s of ``modrelu_into`` (see
    module doc); a' = [s > 0], as relu(m + b) > 0 exactly where m + b > 0."""
    active = (scale > 0).to(pre.dtype)
    ratio = pre / magnitude
    return (active - scale).mul_(ratio.square()).add_(scale), active.mul_(ratio)


class OrthogonalSequence(torch.autograd.Function):
    """h_t = f(x_t + U h_{t-1}), f = tanh, relu or modReLU(., b) (:class:`rnnlab.models.unitary.OrthogonalRNN`)."""

    @staticmethod
    def forward(ctx, projected, h0, weight, bias, nonlinearity):
        steps, batch, hidden = projected.shape
        pre = torch.empty_like(projected)  # x_t + U h_{t-1}
        magnitude, scale = (torch.empty_like(projected) if nonlinearity == "modrelu" else None for _ in range(2))
        hs = projected.new_empty(steps + 1, batch, hidden)
        hs[0] = h0
        weight_t = weight.t()
        for t in range(steps):
            torch.addmm(projected[t], hs[t], weight_t, out=pre[t])
            if nonlinearity == "modrelu":
                modrelu_into(pre[t], bias, magnitude[t], scale[t], out=hs[t + 1])
            elif nonlinearity == "tanh":
                torch.tanh(pre[t], out=hs[t + 1])
            else:
                torch.clamp_min(pre[t], 0, out=hs[t + 1])
        ctx.nonlinearity = nonlinearity
        ctx.save_for_backward(weight, pre, magnitude, scale, hs)
        ctx.set_materialize_grads(False)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs):
        weight, pre, magnitude, scale, hs = ctx.saved_tensors
        steps = pre.shape[0]
        modrelu = ctx.nonlinearity == "modrelu"
        if modrelu:
            jacobian, bias_factor = modrelu_derivatives(pre, magnitude, scale)
        grad_pre = torch.empty_like(pre)
        grad_h = torch.empty_like(pre)  # d L / d h_t for t = 1..T, all paths
        grad_h[-1] = grad_hs[steps] if grad_hs is not None else 0
        for t in reversed(range(steps)):
            if modrelu:
                torch.mul(grad_h[t], jacobian[t], out=grad_pre[t])
            elif ctx.nonlinearity == "tanh":
                tanh_backward.grad_input(grad_h[t], hs[t + 1], grad_input=grad_pre[t])
            else:
                grad_pre[t] = threshold_backward(grad_h[t], hs[t + 1], 0)
            target = grad_h[t - 1] if t else torch.empty_like(grad_h[0])
            if grad_hs is None:
                torch.mm(grad_pre[t], weight, out=target)
            else:
                torch.addmm(grad_hs[t], grad_pre[t], weight, out=target)
        grad_h0 = target
        flat = grad_pre.flatten(0, 1)
        grad_weight = flat.t() @ hs[:-1].flatten(0, 1)
        grad_bias = (grad_h * bias_factor).sum((0, 1)) if modrelu else None
        return grad_pre, grad_h0, grad_weight, grad_bias, None


class GatedOrthogonalSequence(torch.autograd.Function):
    """The GORU recurrence (:class:`rnnlab.models.unitary.GatedOrthogonalRNN`; Jing et al. 2017):

        [r_t; z_t] = sigma(W_rz x_t + b_rz + U_rz h_{t-1}),   h~_t = modReLU(W_x x_t + r_t * (U h_{t-1}), b),
        h_t = z_t * h_{t-1} + (1 - z_t) * h~_t
    """

    @staticmethod
    def forward(ctx, projected, h0, gate_bias, weight, bias):
        steps, batch, _ = projected.shape
        hidden = h0.shape[-1]
        gates_x = projected[:, :, : 2 * hidden] + gate_bias  # W_rz x_t + b_rz
        recurrent = projected.new_empty(steps, batch, 3 * hidden)  # [U_r; U_z; U] h_{t-1}
        gates = projected.new_empty(steps, batch, 2 * hidden)  # r_t, z_t
        pre = projected.new_empty(steps, batch, hidden)  # W_x x_t + r_t * (U h_{t-1})
        magnitude, scale, candidates = (torch.empty_like(pre) for _ in range(3))  # modReLU's m, s and output
        hs = projected.new_empty(steps + 1, batch, hidden)
        hs[0] = h0
        weight_t = weight.t()
        for t in range(steps):
            torch.mm(hs[t], weight_t, out=recurrent[t])
            torch.add(gates_x[t], recurrent[t, :, : 2 * hidden], out=gates[t]).sigmoid_()
            reset, update = gates[t, :, :hidden], gates[t, :, hidden:]
            torch.addcmul(projected[t, :, 2 * hidden :], reset, recurrent[t, :, 2 * hidden :], out=pre[t])
            modrelu_into(pre[t], bias, magnitude[t], scale[t], out=candidates[t])
            hs[t + 1] = update * hs[t] + (1 - update) * candidates[t]
        ctx.save_for_backward(weight, recurrent, gates, pre, magnitude, scale, candidates, hs)
        ctx.set_materialize_grads(False)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs):
        weight, recurrent, gates, pre, magnitude, scale, candidates, hs = ctx.saved_tensors
        steps, batch, hidden = pre.shape
        reset, update = gates[:, :, :hidden], gates[:, :, hidden:]
        jacobian, bias_factor = modrelu_derivatives(pre, magnitude, scale)
        # d L / d (pre-activation) = d L / d h_t * factor, for all steps at once
        update_factor = sigmoid_backward(hs[:-1] - candidates, update)  # z pre-activation
        pre_factor = (1 - update) * jacobian  # h~ pre-activation
        reset_factor = sigmoid_backward(recurrent[:, :, 2 * hidden :], reset)  # r pre-activation, per d pre
        grad_recurrent = torch.empty_like(recurrent)  # d [U_r; U_z; U] h_{t-1}
        grad_pre = torch.empty_like(pre)
        grad_h = torch.empty_like(pre)  # d L / d h_t for t = 1..T, all paths
        grad_h[-1] = grad_hs[steps] if grad_hs is not None else 0
        for t in reversed(range(steps)):
            g = grad_h[t]
            torch.mul(g, update_factor[t], out=grad_recurrent[t, :, hidden : 2 * hidden])
            torch.mul(g, pre_factor[t], out=grad_pre[t])
            torch.mul(grad_pre[t], reset_factor[t], out=grad_recurrent[t, :, :hidden])
            torch.mul(grad_pre[t], reset[t], out=grad_recurrent[t, :, 2 * hidden :])
            direct = g * update[t] if grad_hs is None else torch.addcmul(grad_hs[t], g, update[t])
            target = grad_h[t - 1] if t else torch.empty_like(g)
            torch.addmm(direct, grad_recurrent[t], weight, out=target)
        grad_h0 = target
        grad_weight = grad_recurrent.flatten(0, 1).t() @ hs[:-1].flatten(0, 1)
        grad_gates = grad_recurrent[:, :, : 2 * hidden]
        grad_projected = torch.cat([grad_gates, grad_pre], dim=-1)
        grad_bias = (grad_h * (1 - update) * bias_factor).sum((0, 1))
        return grad_projected, grad_h0, grad_gates.sum((0, 1)), grad_weight, grad_bias


def orthogonal_sequence(projected, h0, weight, bias, nonlinearity: str) -> tuple[torch.Tensor]:
    """All states (h_0..h_T,) [T + 1, B, H] of the orthogonal RNN for ``projected`` [T, B, H] (see module doc);
    ``bias`` is modReLU's (None for tanh and relu)."""
    return (OrthogonalSequence.apply(projected, h0, weight, bias, nonlinearity),)


def gated_orthogonal_sequence(projected, h0, gate_bias, weight, bias) -> tuple[torch.Tensor]:
    """All GORU states (h_0..h_T,) [T + 1, B, H] for ``projected`` [T, B, 3H] (see module doc)."""
    return (GatedOrthogonalSequence.apply(projected, h0, gate_bias, weight, bias),)
