"""The dRNN recurrence (Veeriah et al. 2015; survey eqs. 42-46) over a whole sequence, as one autograd node with a
hand-written backward pass (backpropagation through time).

:class:`rnnlab.models.differential.DRNNCell` steps through time in Python; recorded by autograd every step costs
about twenty graph nodes. Here the forward loop writes into preallocated buffers without a graph and the backward
loop applies the chain rule by hand, the three weight gradients computed after the loop as one matrix product each
over all steps. The math is ``DRNNCell.step``'s (tests check values and gradients against it):

    [i; f; g; o]_pre = P_t + W_h h_{t-1},  with W_d{i,f} D_{t-1} added to i, f
    s_t = sigma(f) s_{t-1} + sigma(i) tanh(g),   d1_t = s_t - s_{t-1},   d2_t = d1_t - d1_{t-1},   D_t = [d1_t; d2_t]
    h_t = sigma(o + W_do D_t) tanh(s_t)

Shapes (time-major, so each step's slice is contiguous; R = order):
    projected:  [T, B, 4H]   W_x x_t + b of every step
    h0, s0:     [B, H];  dos0: [B, R*H] (d1 then d2)
    weight_h: [4H, H], weight_dif: [2H, R*H], weight_do: [H, R*H]
    returns     hs, ss [T + 1, B, H] and dos [T + 1, B, R*H]: the states after 0..T steps (entry 0 the initial one)

The backward pass is not itself differentiable (``once_differentiable``).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

sigmoid_backward = torch.ops.aten.sigmoid_backward
tanh_backward = torch.ops.aten.tanh_backward


class DRNNSequence(torch.autograd.Function):
    """hs, ss, dos of the dRNN (survey eqs. 42-46; gate order i, f, g, o as in ``DRNNCell``; see the module doc)."""

    @staticmethod
    def forward(ctx, projected, h0, s0, dos0, weight_h, weight_dif, weight_do):
        steps, batch, _ = projected.shape
        hidden = h0.shape[-1]
        order = dos0.shape[-1] // hidden
        gates = projected.clone()  # pre-activations, then (in place) the activations i, f, g, o
        hs = projected.new_empty(steps + 1, batch, hidden)
        ss = torch.empty_like(hs)
        tanh_ss = projected.new_empty(steps, batch, hidden)
        dos = projected.new_empty(steps + 1, batch, order * hidden)
        hs[0], ss[0], dos[0] = h0, s0, dos0
        four = gates.view(steps, batch, 4, hidden)
        weight_h_t, weight_dif_t, weight_do_t = weight_h.t(), weight_dif.t(), weight_do.t()
        for t in range(steps):
            pre, h, s, s_next, d, d_next = gates[t], hs[t], ss[t], ss[t + 1], dos[t], dos[t + 1]
            pre.addmm_(h, weight_h_t)
            pre[:, : 2 * hidden].addmm_(d, weight_dif_t)  # W_d{i,f} D_{t-1}
            i, f, g, o = four[t].unbind(1)
            four[t, :, :2].sigmoid_()
            g.tanh_()
            torch.mul(f, s, out=s_next).addcmul_(i, g)  # s_t = f s_{t-1} + i g
            torch.sub(s_next, s, out=d_next[:, :hidden])  # d1_t
            if order == 2:
                torch.sub(d_next[:, :hidden], d[:, :hidden], out=d_next[:, hidden:])  # d2_t
            o.addmm_(d_next, weight_do_t).sigmoid_()
            torch.tanh(s_next, out=tanh_ss[t])
            torch.mul(o, tanh_ss[t], out=hs[t + 1])  # h_t = o tanh(s_t)
        ctx.save_for_backward(weight_h, weight_dif, weight_do, gates, hs, ss, tanh_ss, dos)
        ctx.set_materialize_grads(False)
        return hs, ss, dos

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs, grad_ss, grad_dos):
        weight_h, weight_dif, weight_do, gates, hs, ss, tanh_ss, dos = ctx.saved_tensors
        steps, batch, _ = gates.shape
        hidden = hs.shape[-1]
        order = dos.shape[-1] // hidden
        four = gates.view(steps, batch, 4, hidden)
        grad_gates = torch.empty_like(gates)
        grad_four = grad_gates.view(steps, batch, 4, hidden)
        dh = grad_hs[steps] if grad_hs is not None else hs.new_zeros(batch, hidden)  # d h_t, all paths
        ds = grad_ss[steps] if grad_ss is not None else hs.new_zeros(batch, hidden)  # d s_t, through later steps
        dd = grad_dos[steps] if grad_dos is not None else hs.new_zeros(batch, order * hidden)  # d D_t, later steps
        for t in reversed(range(steps)):
            i, f, g, o = four[t].unbind(1)
            d_i, d_f, d_g, d_o = grad_four[t].unbind(1)
            sigmoid_backward.grad_input(dh * tanh_ss[t], o, grad_input=d_o)
            dd = torch.addmm(dd, d_o, weight_do)  # D_t also feeds o_t
            d1 = dd[:, :hidden] + dd[:, hidden:] if order == 2 else dd  # d2_t = d1_t - d1_{t-1}
            ds = tanh_backward(dh * o, tanh_ss[t]).add_(ds).add_(d1)  # d s_t: via h_t, s_{t+1}, d1_t
            sigmoid_backward.grad_input(ds * g, i, grad_input=d_i)
            sigmoid_backward.grad_input(ds * ss[t], f, grad_input=d_f)
            tanh_backward.grad_input(ds * i, g, grad_input=d_g)
            d_previous = grad_four[t, :, :2].reshape(batch, 2 * hidden) @ weight_dif  # d D_{t-1} via i, f
            if order == 2:
                d_previous[:, :hidden] -= dd[:, hidden:]
            ds = ds * f - d1  # d s_{t-1}: via s_t and d1_t = s_t - s_{t-1}
            dh = grad_gates[t] @ weight_h
            dd = d_previous
            for grad, grad_out in ((dh, grad_hs), (ds, grad_ss), (dd, grad_dos)):
                if grad_out is not None:  # the state after step t - 1 is an output too
                    grad += grad_out[t]
        flat = grad_gates.view(steps * batch, 4 * hidden)
        grad_weight_h = flat.t() @ hs[:-1].reshape(steps * batch, hidden)
        grad_weight_dif = flat[:, : 2 * hidden].t() @ dos[:-1].reshape(steps * batch, -1)
        grad_weight_do = flat[:, 3 * hidden :].t() @ dos[1:].reshape(steps * batch, -1)
        return grad_gates, dh, ds, dd, grad_weight_h, grad_weight_dif, grad_weight_do


def drnn_sequence(projected, h0, s0, dos0, weight_h, weight_dif, weight_do):
    """hs, ss [T + 1, B, H] and dos [T + 1, B, R*H] for ``projected`` [T, B, 4H] (see the module docstring)."""
    return DRNNSequence.apply(projected, h0, s0, dos0, weight_h, weight_dif, weight_do)
