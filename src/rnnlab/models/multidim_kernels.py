"""Hand-written backward passes for the multi-dimensional family: one MDLSTM layer's wavefront (Graves et al. 2007;
survey eq. 39, :class:`MDLSTMWavefront`) and one direction of the 2-D Grid LSTM (Kalchbrenner et al. 2016; survey
eqs. 40-41, :class:`GridLSTMSequence`), each as one autograd node. The rest of this docstring is the MDLSTM's.

``rnnlab.models.multidim`` sweeps the H x W grid by anti-diagonals d = i + j; recorded by autograd, each of the
H + W - 1 diagonal steps costs a few dozen graph nodes and copies (the neighbours' states sliced and padded with zero
rows, the two recurrent inputs concatenated), and every step's tensors are kept as slices of whole-grid tensors.
Here the forward loop runs without a graph and the backward loop applies the chain rule of eq. 39 by hand
(backpropagation through the grid); the weight gradients are accumulated per diagonal.

Layout: diagonal d's cells (i, d - i), i = lo_d..hi_d, are r_d rows ordered by i; each row holds the N images.
Its states are kept as one block [D, r_d + 2, N, hidden]: a zero row, the r_d cells, a zero row. The upper
neighbours (i - 1, j) of diagonal d's cells are then rows lo_d - lo_{d-1} .. of block d - 1 and their left neighbours
(i, j - 1) the rows one further, both contiguous slices (a zero row where the neighbour is outside the grid), so each
recurrent product is one batched matmul on a view. Every saved buffer is per diagonal (at most min(H, W) rows),
small enough for the allocator to keep and reuse between calls; whole-grid buffers of the gates (5 h per cell and
direction) were fresh memory, page-faulted in, at every call.

Shapes:
    cells:            [D, C, N, in]      each cell's input, cells in wavefront order (by diagonal, then row i),
                                         C = H * W (``WavefrontPlan.order``); D scan directions, N images
    input_weight:     [D, in, 5h], input_bias: [D, 5h]       W, b (gate order i, f_1, f_2, g, o)
    recurrent_weight: [D, 2h, 5h]        rows 0..h read h_{i-1,j} (U_1), rows h..2h read h_{i,j-1} (U_2)
    returns           [D, N, H, W, h]    h_{i,j} in raster order

The backward pass is not itself differentiable (``once_differentiable``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

sigmoid_backward = torch.ops.aten.sigmoid_backward
tanh_backward = torch.ops.aten.tanh_backward


@dataclass(frozen=True)
class WavefrontPlan:
    """The diagonals of an H x W grid: ``diagonals[d]`` = (first cell of diagonal d in wavefront order, r_d, first
    row of its upper neighbours in block d - 1, first raster index lo_d * W + d - lo_d); ``order``: raster index
    i * W + j of each cell in wavefront order, [C]."""

    height: int
    width: int
    diagonals: tuple[tuple[int, int, int, int], ...]
    order: torch.Tensor

    @classmethod
    def build(cls, height: int, width: int, device: torch.device) -> "WavefrontPlan":
        diagonals, order, first, previous_lo = [], [], 0, 0  # diagonal -1: a zero block of rows i = -1, 0
        for d in range(height + width - 1):
            lo, hi = max(0, d - width + 1), min(d, height - 1)
            diagonals.append((first, hi - lo + 1, lo - previous_lo, lo * width + d - lo))
            order.extend(i * width + d - i for i in range(lo, hi + 1))
            first, previous_lo = first + hi - lo + 1, lo
        return cls(height, width, tuple(diagonals), torch.tensor(order, device=device))

    def raster(self, grid: torch.Tensor, d: int) -> torch.Tensor:
        """The cells of diagonal d in ``grid`` [D, N, H, W, ...] as a view [D, r_d, N, ...] (row i, i = lo_d..)."""
        _, size, _, base = self.diagonals[d]
        flat = grid.flatten(2, 3)  # consecutive cells of a diagonal are W - 1 apart in raster order
        return flat[:, :, base :: max(self.width - 1, 1)][:, :, :size].transpose(1, 2)


class MDLSTMWavefront(torch.autograd.Function):
    """h_{i,j} of one MDLSTM layer, every scan direction at once (eq. 39; see the module docstring)."""

    @staticmethod
    def forward(ctx, cells, input_weight, input_bias, recurrent_weight, plan: WavefrontPlan):
        directions, _, batch, _ = cells.shape
        hidden = recurrent_weight.shape[1] // 2
        u_above, u_left = recurrent_weight[:, :hidden], recurrent_weight[:, hidden:]
        bias = input_bias.unsqueeze(1)
        output = cells.new_empty(directions, batch, plan.height, plan.width, hidden)
        h_block = c_block = cells.new_zeros(directions, 2, batch, hidden)  # diagonal -1
        saved = []
        for d, (first, size, above, _) in enumerate(plan.diagonals):
            x = cells[:, first : first + size].flatten(1, 2)  # [D, r N, in]
            h_above, h_left = (h_block[:, k : k + size].flatten(1, 2) for k in (above, above + 1))
            c_above, c_left = (c_block[:, k : k + size].flatten(1, 2) for k in (above, above + 1))
            gates = torch.baddbmm(bias, x, input_weight).baddbmm_(h_above, u_above).baddbmm_(h_left, u_left)
            i_f, g, o = gates.unflatten(-1, (5, hidden)).split([3, 1, 1], dim=2)  # activations in place
            i, f_above, f_left = i_f.sigmoid_().unbind(2)
            g, o = g.squeeze(2).tanh_(), o.squeeze(2).sigmoid_()
            new_h, new_c = cells.new_zeros(2, directions, size + 2, batch, hidden).unbind(0)
            c = new_c[:, 1:-1].flatten(1, 2)
            torch.mul(f_above, c_above, out=c).addcmul_(f_left, c_left).addcmul_(i, g)  # f_1 c_up + f_2 c_left + i g
            tanh_c = torch.tanh(c)
            torch.mul(o, tanh_c, out=new_h[:, 1:-1].flatten(1, 2))  # h = o tanh(c)
            plan.raster(output, d).copy_(new_h[:, 1:-1])
            saved += [gates, tanh_c, new_h, new_c]
            h_block, c_block = new_h, new_c
        ctx.save_for_backward(cells, input_weight, recurrent_weight, *saved)
        ctx.plan = plan
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        cells, input_weight, recurrent_weight, *saved = ctx.saved_tensors
        plan = ctx.plan
        grad_output = grad_output.contiguous()  # ``raster`` views it per diagonal
        directions, _, batch, _ = cells.shape
        hidden = recurrent_weight.shape[1] // 2
        u_above_t, u_left_t = recurrent_weight[:, :hidden].transpose(1, 2), recurrent_weight[:, hidden:].transpose(1, 2)
        grad_cells = torch.empty_like(cells)
        grad_input_weight = torch.zeros_like(input_weight)
        grad_bias = input_weight.new_zeros(directions, input_weight.shape[2])
        grad_recurrent = torch.zeros_like(recurrent_weight)
        grad_above, grad_left = grad_recurrent[:, :hidden], grad_recurrent[:, hidden:]
        # d h, d c of the current diagonal's block (all paths: its outputs and the next diagonal's cells)
        grad_h = grad_c = None
        zero_block = cells.new_zeros(directions, 2, batch, hidden)
        for d in reversed(range(len(plan.diagonals))):
            first, size, above, _ = plan.diagonals[d]
            gates, tanh_c = saved[4 * d : 4 * d + 2]
            h_block, c_block = saved[4 * d - 2 : 4 * d] if d else (zero_block, zero_block)
            if grad_h is None:  # the last diagonal: nothing after it
                grad_h = torch.zeros_like(saved[4 * d + 2])
                grad_c = torch.zeros_like(grad_h)
            grad_h[:, 1:-1] += plan.raster(grad_output, d)
            dh, dc = grad_h[:, 1:-1].flatten(1, 2), grad_c[:, 1:-1].flatten(1, 2)
            i, f_above, f_left, g, o = gates.unflatten(-1, (5, hidden)).unbind(2)
            c_above, c_left = (c_block[:, k : k + size].flatten(1, 2) for k in (above, above + 1))
            h_above, h_left = (h_block[:, k : k + size].flatten(1, 2) for k in (above, above + 1))
            dc = tanh_backward(dh * o, tanh_c).add_(dc)  # d c, through h_{i,j} as well
            d_pre = torch.empty_like(gates)  # d pre-activations [D, r N, 5h]
            d_i, d_above, d_left, d_g, d_o = d_pre.unflatten(-1, (5, hidden)).unbind(2)
            sigmoid_backward.grad_input(dc * g, i, grad_input=d_i)
            sigmoid_backward.grad_input(dc * c_above, f_above, grad_input=d_above)
            sigmoid_backward.grad_input(dc * c_left, f_left, grad_input=d_left)
            tanh_backward.grad_input(dc * i, g, grad_input=d_g)
            sigmoid_backward.grad_input(dh * tanh_c, o, grad_input=d_o)
            torch.bmm(d_pre, input_weight.transpose(1, 2), out=grad_cells[:, first : first + size].flatten(1, 2))
            x = cells[:, first : first + size].flatten(1, 2)
            grad_input_weight.baddbmm_(x.transpose(1, 2), d_pre)
            grad_bias += d_pre.sum(1)
            grad_above.baddbmm_(h_above.transpose(1, 2), d_pre)
            grad_left.baddbmm_(h_left.transpose(1, 2), d_pre)
            if d == 0:
                break
            grad_h = torch.zeros_like(h_block)
            grad_c = torch.zeros_like(c_block)
            for k, forget, u_t in ((above, f_above, u_above_t), (above + 1, f_left, u_left_t)):
                grad_c[:, k : k + size].flatten(1, 2).addcmul_(dc, forget)
                grad_h[:, k : k + size].flatten(1, 2).baddbmm_(d_pre, u_t)
        return grad_cells, grad_input_weight, grad_bias, grad_recurrent, None


def mdlstm_wavefront(cells, input_weight, input_bias, recurrent_weight, plan: WavefrontPlan) -> torch.Tensor:
    """h [D, N, H, W, hidden] of one MDLSTM layer (see the module docstring for the shapes)."""
    return MDLSTMWavefront.apply(cells, input_weight, input_bias, recurrent_weight, plan)


class GridLSTMSequence(torch.autograd.Function):
    """One direction of the 2-D Grid LSTM over time x depth (Kalchbrenner et al. 2016; survey eqs. 40-41), every
    block (t, l) in one autograd node with a hand-written backward pass (backpropagation through the grid).

    Block (t, l) reads X[l, t] = [h^time_{t-1,l}; h^depth_{t,l-1}] and M[l, t] = [m^time_{t-1,l}; m^depth_{t,l-1}]
    and writes its time half into X[l, t + 1], M[l, t + 1] and its depth half into X[l + 1, t], M[l + 1, t]
    (buffers [L + 1, T + 1, B, 2H]), so the concatenation of eq. 40 is never copied. Its gates are
    W_l X[l, t] + b_l, [B, 8H] viewed as [B, 2 (time, depth), 4 (i, f, g, o), H]; both LSTM updates of eq. 41 run
    as one set of elementwise ops on [B, 2, H].

    Wavefront: block (t, l) depends on (t - 1, l) and (t, l - 1) only, so the blocks of one anti-diagonal
    t + l = k are independent: T + L - 1 steps, each one batched matmul over its layers. Layer l's entry of
    diagonal k sits at flat index l T + k of X or M viewed as [(L + 1)(T + 1), B, 2H] and at l (T - 1) + k of the
    [L T, ...] gate buffers, so each diagonal is a strided view (step T or T - 1). The weight gradients are one
    batched matrix product after the loop.

    Shapes: depth_in [T, B, H] (h^depth_{t,0} = W_in x_t + b_in; m^depth_{t,0} = 0), h_time0, m_time0 [L, B, H],
    weight [L, 8H, 2H], bias [L, 8H]. Returns the top depth outputs h^depth_{t,L} [T, B, H] and the time states
    h^time, m^time after 0..T steps, each [L, T + 1, B, H] (entry 0 the initial state).
    """

    @staticmethod
    def diagonals(steps: int, layers: int):
        """(k, first layer, number of layers) of each anti-diagonal t + l = k."""
        for k in range(steps + layers - 1):
            lo, hi = max(0, k - steps + 1), min(layers - 1, k)
            yield k, lo, hi - lo + 1

    @staticmethod
    def forward(ctx, depth_in, h_time0, m_time0, weight, bias):
        steps, batch, hidden = depth_in.shape
        layers = weight.shape[0]
        xs = depth_in.new_zeros(layers + 1, steps + 1, batch, 2 * hidden)
        ms = torch.zeros_like(xs)
        xs[0, :steps, :, hidden:] = depth_in
        xs[:layers, 0, :, :hidden] = h_time0
        ms[:layers, 0, :, :hidden] = m_time0
        gates = depth_in.new_empty(layers, steps, batch, 8 * hidden)  # pre-activations, then activations
        tanh_ms = depth_in.new_empty(layers, steps, batch, 2, hidden)
        flat_xs, flat_ms, flat_gates, flat_tanh = (b.flatten(0, 1) for b in (xs, ms, gates, tanh_ms))
        weight_t = weight.transpose(1, 2)
        gate_step = max(steps - 1, 1)  # one step has one block per diagonal: any stride
        for k, lo, n in GridLSTMSequence.diagonals(steps, layers):
            at = lo * steps + k  # block (k - lo, lo) in X and M; its time successor is at + 1, its depth one at + T + 1
            pre = flat_gates[lo * (steps - 1) + k :: gate_step][:n]  # [n, B, 8H]
            torch.baddbmm(bias[lo : lo + n].unsqueeze(1), flat_xs[at::steps][:n], weight_t[lo : lo + n], out=pre)
            five = pre.unflatten(-1, (2, 4, hidden))  # [n, B, 2, 4, H]
            five[:, :, :, :2].sigmoid_()
            i, f, g, o = five.unbind(3)
            g.tanh_()
            o.sigmoid_()
            new_m = torch.mul(f, flat_ms[at::steps][:n].unflatten(-1, (2, hidden))).addcmul_(i, g)  # m' = f m + i g
            tanh_m = flat_tanh[lo * (steps - 1) + k :: gate_step][:n]
            new_h = torch.mul(o, torch.tanh(new_m, out=tanh_m))  # h' = o tanh(m')
            for buffer, new in ((flat_xs, new_h), (flat_ms, new_m)):
                buffer[at + 1 :: steps][:n, :, :hidden] = new[:, :, 0]
                buffer[at + steps + 1 :: steps][:n, :, hidden:] = new[:, :, 1]
        ctx.save_for_backward(weight, xs, ms, gates, tanh_ms)
        ctx.set_materialize_grads(False)
        top = xs[layers, :steps, :, hidden:].clone()
        return top, xs[:layers, :, :, :hidden].clone(), ms[:layers, :, :, :hidden].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_top, grad_h_time, grad_m_time):
        weight, xs, ms, gates, tanh_ms = ctx.saved_tensors
        layers, steps, batch, _ = gates.shape
        hidden = xs.shape[-1] // 2
        grad_xs = torch.zeros_like(xs)  # d X, d M: all paths
        grad_ms = torch.zeros_like(ms)
        if grad_top is not None:
            grad_xs[layers, :steps, :, hidden:] = grad_top
        if grad_h_time is not None:
            grad_xs[:layers, :, :, :hidden] += grad_h_time
        if grad_m_time is not None:
            grad_ms[:layers, :, :, :hidden] += grad_m_time
        grad_gates = torch.empty_like(gates)
        flat_xs, flat_ms, flat_gates, flat_tanh = (b.flatten(0, 1) for b in (xs, ms, gates, tanh_ms))
        flat_grad_xs, flat_grad_ms, flat_grad_gates = (b.flatten(0, 1) for b in (grad_xs, grad_ms, grad_gates))
        gate_step = max(steps - 1, 1)  # one step has one block per diagonal: any stride
        for k, lo, n in reversed(list(GridLSTMSequence.diagonals(steps, layers))):
            at, gate_at = lo * steps + k, lo * (steps - 1) + k
            i, f, g, o = flat_gates[gate_at::gate_step][:n].unflatten(-1, (2, 4, hidden)).unbind(3)  # [n, B, 2, H]
            tanh_m = flat_tanh[gate_at::gate_step][:n]
            dh, dm = (
                torch.stack([grad[at + 1 :: steps][:n, :, :hidden], grad[at + steps + 1 :: steps][:n, :, hidden:]], 2)
                for grad in (flat_grad_xs, flat_grad_ms)
            )  # d h', d m' [n, B, 2, H]
            dm.add_(tanh_backward(dh * o, tanh_m))  # d m', through h' as well
            d_pre = flat_grad_gates[gate_at::gate_step][:n]
            d_i, d_f, d_g, d_o = d_pre.unflatten(-1, (2, 4, hidden)).unbind(3)
            sigmoid_backward.grad_input(dm * g, i, grad_input=d_i)
            sigmoid_backward.grad_input(dm * flat_ms[at::steps][:n].unflatten(-1, (2, hidden)), f, grad_input=d_f)
            tanh_backward.grad_input(dm * i, g, grad_input=d_g)
            sigmoid_backward.grad_input(dh * tanh_m, o, grad_input=d_o)
            flat_grad_ms[at::steps][:n].unflatten(-1, (2, hidden)).addcmul_(dm, f)
            flat_grad_xs[at::steps][:n].baddbmm_(d_pre, weight[lo : lo + n])
        flat = grad_gates.view(layers, steps * batch, 8 * hidden)
        grad_weight = torch.bmm(flat.transpose(1, 2), xs[:layers, :steps].reshape(layers, steps * batch, 2 * hidden))
        grad_depth_in = grad_xs[0, :steps, :, hidden:]
        return grad_depth_in, grad_xs[:layers, 0, :, :hidden], grad_ms[:layers, 0, :, :hidden], grad_weight, flat.sum(1)


def grid_lstm_sequence(depth_in, h_time0, m_time0, weight, bias):
    """Top outputs [T, B, H] and time states (h, m) [L, T + 1, B, H] of one Grid LSTM direction (see
    :class:`GridLSTMSequence`)."""
    return GridLSTMSequence.apply(depth_in, h_time0, m_time0, weight, bias)
