"""Whole-sequence LSTM and GRU recurrences with hand-written backward passes (backpropagation through time).

The hand-written cells of :mod:`rnnlab.models.gated` step through time in Python; letting autograd record every
step costs about a dozen graph nodes per step. These functions run the same recurrence as one autograd node: the
forward loop writes into preallocated buffers without recording a graph, and the backward loop applies the chain
rule of survey eqs. 32-36 / 47-50 by hand (backpropagation through time, Werbos 1990), with the weight gradient
computed after the loop as one matrix product over all steps. The math is that of ``nn.LSTM`` / ``nn.GRU`` (the
fused kernels) and of ``LSTM.cell_step`` / ``GRU.cell_step``; tests check values and gradients against both.

Shapes (time-major, so each step's slice is contiguous):
    projected: [T, B, G*H]  the input projection W_x x_t + b_x of every step (G = 4 for LSTM, 3 for GRU)
    h0, c0:    [B, H]       initial state
    weight_hh: [G*H, H], bias_hh: [G*H]
    returns    [T + 1, B, H] states h_0 .. h_T (and c_0 .. c_T for LSTM), so the state after a sequence of
               length L is entry L, the initial state included.

The backward pass is not itself differentiable (``once_differentiable``): use the step loop
(``RecurrentCell.run`` of a plain cell) for second derivatives.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# grad * s * (1 - s) and grad * (1 - t^2) from the activations s = sigmoid(x), t = tanh(x), in one pass each
sigmoid_backward = torch.ops.aten.sigmoid_backward
tanh_backward = torch.ops.aten.tanh_backward


class LSTMSequence(torch.autograd.Function):
    """h_t, c_t of the LSTM (survey eqs. 32-36 without peepholes; gate order i, f, g, o as in ``nn.LSTM``)."""

    @staticmethod
    def forward(ctx, projected, h0, c0, weight_hh, bias_hh):
        steps, batch, _ = projected.shape
        hidden = h0.shape[-1]
        gates = projected + bias_hh  # [T, B, 4H]: pre-activations, then (in place) the gate activations
        hs = projected.new_empty(steps + 1, batch, hidden)
        cs = projected.new_empty(steps + 1, batch, hidden)
        tanh_cs = projected.new_empty(steps, batch, hidden)
        hs[0], cs[0] = h0, c0
        four = gates.view(steps, batch, 4, hidden)
        weight_t = weight_hh.t()
        per_step = zip(gates, four[:, :, 0:2], *four.unbind(2), hs, cs, hs[1:], cs[1:], tanh_cs)
        for pre, input_forget, i, f, g, o, h, c, h_next, c_next, tanh_c in per_step:
            pre.addmm_(h, weight_t)
            input_forget.sigmoid_()
            g.tanh_()
            o.sigmoid_()
            torch.mul(f, c, out=c_next)
            c_next.addcmul_(i, g)  # c_t = f * c_{t-1} + i * g
            torch.tanh(c_next, out=tanh_c)
            torch.mul(o, tanh_c, out=h_next)  # h_t = o * tanh(c_t)
        ctx.save_for_backward(weight_hh, gates, hs, cs, tanh_cs)
        ctx.set_materialize_grads(False)
        return hs, cs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs, grad_cs):
        weight_hh, gates, hs, cs, tanh_cs = ctx.saved_tensors
        steps, batch, _ = gates.shape
        hidden = hs.shape[-1]
        i, f, g, o = gates.view(steps, batch, 4, hidden).unbind(2)
        # d pre-activation = d c_t * factor (i, f, g) or d h_t * factor (o); sigma' = s (1 - s), tanh' = 1 - t^2
        factors = torch.empty_like(gates).view(steps, batch, 4, hidden)
        sigmoid_backward.grad_input(g, i, grad_input=factors[:, :, 0])  # c_t = f c_{t-1} + i g
        sigmoid_backward.grad_input(cs[:-1], f, grad_input=factors[:, :, 1])
        tanh_backward.grad_input(i, g, grad_input=factors[:, :, 2])
        sigmoid_backward.grad_input(tanh_cs, o, grad_input=factors[:, :, 3])  # h_t = o tanh(c_t)
        through_h = tanh_backward(o, tanh_cs)  # d h_t / d c_t
        grad_gates = torch.empty_like(gates)
        grad_four = grad_gates.view(steps, batch, 4, hidden)
        grad_h_out = grad_hs.unbind(0) if grad_hs is not None else None
        grad_c_out = grad_cs.unbind(0) if grad_cs is not None else None
        per_step = zip(
            grad_gates, grad_four[:, :, 0:3], grad_four[:, :, 3], factors[:, :, 0:3], factors[:, :, 3], through_h, f
        )
        dh = grad_hs[steps] if grad_hs is not None else hs.new_zeros(batch, hidden)  # d h_t, all paths
        dc = grad_cs[steps] if grad_cs is not None else hs.new_zeros(batch, hidden)  # d c_t, all paths
        for t, (grad_pre, grad_ifg, grad_o, factor_ifg, factor_o, through, forget) in reversed(
            list(enumerate(per_step))
        ):
            dc = torch.addcmul(dc, dh, through)
            torch.mul(factor_ifg, dc.unsqueeze(1), out=grad_ifg)
            torch.mul(factor_o, dh, out=grad_o)
            dc = dc * forget if grad_c_out is None else torch.addcmul(grad_c_out[t], dc, forget)
            dh = grad_pre @ weight_hh if grad_h_out is None else torch.addmm(grad_h_out[t], grad_pre, weight_hh)
        flat = grad_gates.view(steps * batch, -1)
        grad_weight = flat.t() @ hs[:-1].reshape(steps * batch, hidden)
        return grad_gates, dh, dc, grad_weight, flat.sum(0)


class GRUSequence(torch.autograd.Function):
    """h_t of the GRU (survey eqs. 47-50; gate order r, z, n and the reset applied after W_hn, as in ``nn.GRU``)."""

    @staticmethod
    def forward(ctx, projected, h0, weight_hh, bias_hh):
        steps, batch, _ = projected.shape
        hidden = h0.shape[-1]
        x = projected.view(steps, batch, 3, hidden)
        recurrent = projected.new_empty(steps, batch, 3, hidden)  # W_h h_{t-1} + b_h
        acts = projected.new_empty(steps, batch, 3, hidden)  # r, z, n
        hs = projected.new_empty(steps + 1, batch, hidden)
        hs[0] = h0
        weight_t = weight_hh.t()
        flat_recurrent = recurrent.view(steps, batch, 3 * hidden)
        per_step = zip(
            x[:, :, 0:2], x[:, :, 2], flat_recurrent, recurrent[:, :, 0:2], recurrent[:, :, 2], acts[:, :, 0:2],
            *acts.unbind(2), hs, hs[1:],
        )  # fmt: skip
        for x_rz, x_n, rec, rec_rz, rec_n, rz, r, z, n, h, h_next in per_step:
            torch.addmm(bias_hh, h, weight_t, out=rec)
            torch.add(x_rz, rec_rz, out=rz).sigmoid_()  # r, z
            torch.addcmul(x_n, r, rec_n, out=n).tanh_()  # n = tanh(x_n + r * (W_hn h + b_hn))
            torch.lerp(n, h, z, out=h_next)  # h_t = (1 - z) * n + z * h_{t-1}
        ctx.save_for_backward(weight_hh, recurrent, acts, hs)
        ctx.set_materialize_grads(False)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs):
        weight_hh, recurrent, acts, hs = ctx.saved_tensors
        steps, batch, _, hidden = acts.shape
        r, z, n = acts.unbind(2)
        grad_n_pre_factor = tanh_backward(1 - z, n)  # d n_pre / d h_t
        grad_z_pre_factor = sigmoid_backward(hs[:-1] - n, z)  # d z_pre / d h_t
        grad_r_pre_factor = sigmoid_backward(recurrent[:, :, 2], r)  # d r_pre / d n_pre
        grad_recurrent = torch.empty_like(recurrent)  # d (W_h h_{t-1} + b_h)
        grad_projected = torch.empty_like(recurrent)  # d (W_x x_t + b_x): r, z as above, n its own
        grad_h_out = grad_hs.unbind(0) if grad_hs is not None else None
        per_step = zip(
            grad_recurrent.view(steps, batch, 3 * hidden), grad_recurrent[:, :, 0], grad_recurrent[:, :, 1],
            grad_recurrent[:, :, 2], grad_projected[:, :, 2], grad_n_pre_factor, grad_z_pre_factor, grad_r_pre_factor,
            r, z,
        )  # fmt: skip
        dh = grad_hs[steps] if grad_hs is not None else hs.new_zeros(batch, hidden)  # d h_t, all paths
        for t, (grad_rec, grad_r, grad_z, grad_rec_n, grad_n, n_factor, z_factor, r_factor, r_t, z_t) in reversed(
            list(enumerate(per_step))
        ):
            torch.mul(dh, n_factor, out=grad_n)
            torch.mul(dh, z_factor, out=grad_z)
            torch.mul(grad_n, r_factor, out=grad_r)
            torch.mul(grad_n, r_t, out=grad_rec_n)
            dh = dh * z_t if grad_h_out is None else torch.addcmul(grad_h_out[t], dh, z_t)
            dh.addmm_(grad_rec, weight_hh)
        flat = grad_recurrent.view(steps * batch, 3 * hidden)
        grad_weight = flat.t() @ hs[:-1].reshape(steps * batch, hidden)
        grad_projected[:, :, 0:2] = grad_recurrent[:, :, 0:2]
        return grad_projected.view(steps, batch, 3 * hidden), dh, grad_weight, flat.sum(0)


def lstm_sequence(projected, h0, c0, weight_hh, bias_hh) -> tuple[torch.Tensor, torch.Tensor]:
    """All LSTM states (h_0..h_T, c_0..c_T), each [T + 1, B, H], for ``projected`` [T, B, 4H] (see module doc)."""
    return LSTMSequence.apply(projected, h0, c0, weight_hh, bias_hh)


def gru_sequence(projected, h0, weight_hh, bias_hh) -> tuple[torch.Tensor]:
    """All GRU states (h_0..h_T,) [T + 1, B, H] for ``projected`` [T, B, 3H] (see module doc)."""
    return (GRUSequence.apply(projected, h0, weight_hh, bias_hh),)
