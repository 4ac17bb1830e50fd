"""Multiplicative recurrences: the second-order (tensor) RNN and the factored multiplicative RNN (mRNN)."""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlab.errors import require_choice, require_positive
from rnnlab.models.base import RecurrentCell, RecurrentNetwork
from rnnlab.models.elman import ACTIVATIONS


class SecondOrderCell(RecurrentCell):
    """One second-order layer: weight W [H, H, I] (unit i, previous unit j, input k), bias b [H]. State (h,).

    No part of the step depends on the input alone, so ``project`` passes x through: precomputing W x_t for all steps
    would hold a [B, T, H, H] tensor. The step is one matrix product of the outer product h_{t-1} x_t^T [B, H*I]
    with W viewed as [H, H*I]. Its cost, O(H^2 I) per step, is that of the math, not of the loop: at H=128, I=32 it
    is 6.4 times the multiply-adds of an LSTM step, which is why ``rnnlab-bench`` times it at about 5x ``nn.LSTM``
    of the same hidden size. At the same parameter count (H^2 I = 4 H'(H' + I): H=51 against an LSTM of H'=128) the
    multiply-adds are about equal and it costs 1.5-2.5x ``nn.LSTM``; a whole-sequence kernel with a hand-written
    backward (as for the LSTM) measured no faster, as the matmuls, not autograd's graph, are the cost.
    """

    def __init__(self, input_size: int, hidden_size: int, activation):
        super().__init__()
        self.hidden_size = hidden_size
        self.activation = activation
        bound = 1 / math.sqrt(hidden_size * input_size)
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size, input_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))

    def step(self, projected, state, t):
        (h,) = state
        outer = (h.unsqueeze(2) * projected.unsqueeze(1)).flatten(1)  # [B, H*I]: h_j x_k
        return (self.activation(outer @ self.weight.flatten(1).T + self.bias),)


class SecondOrderRNN(RecurrentNetwork):
    """Second-order recurrent network (Giles et al. 1992, "Learning and extracting finite state automata with
    second-order recurrent neural networks", Neural Computation 4(3)):

        h_t^i = sigma( sum_jk W_ijk h_{t-1}^j x_t^k + b_i )

    The input gates the recurrent matrix: sum_k x_t^k W_{::k} is the transition used at step t (for one-hot inputs,
    one matrix per symbol, as in automaton learning). sigma is ``activation`` (Giles et al.: sigmoid). With h_0 = 0
    the first step gives sigma(b). W: [H, H, I] per layer, H^2 I parameters. Shapes as in ``rnnlab.models.base``;
    state h: [layers*dirs, B, H].
    """

    def __init__(self, input_size: int, output_size: int, activation: str = "sigmoid", **kwargs):
        require_choice("activation", activation, tuple(ACTIVATIONS))
        self.activation = ACTIVATIONS[activation]
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return SecondOrderCell(input_size, self.hidden_size, self.activation)


class MRNNCell(RecurrentCell):
    """One mRNN layer with F factors. State (h,): [B, H]."""

    def __init__(self, input_size: int, hidden_size: int, factors: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.factors = factors
        self.input = nn.Linear(input_size, factors + hidden_size, bias=False)  # [W_mx; W_hx]
        self.bias = nn.Parameter(torch.zeros(hidden_size))  # b
        self.factor_recurrent = nn.Linear(hidden_size, factors, bias=False)  # W_mh
        self.factor_out = nn.Linear(factors, hidden_size, bias=False)  # W_hm

    def project(self, x):
        gate, direct = self.input(x).split([self.factors, self.hidden_size], dim=-1)
        return torch.cat([gate, direct + self.bias], dim=-1)

    def step(self, projected, state, t):
        (h,) = state
        gate, direct = projected.split([self.factors, self.hidden_size], dim=-1)
        m = gate * self.factor_recurrent(h)
        return (torch.tanh(self.factor_out(m) + direct),)


class MRNN(RecurrentNetwork):
    """Multiplicative RNN (Sutskever, Martens & Hinton 2011, "Generating Text with Recurrent Neural Networks", ICML):

        m_t = (W_mx x_t) * (W_mh h_{t-1})                (F factors; * elementwise)
        h_t = tanh(W_hm m_t + W_hx x_t + b)

    The factored form of a tensor RNN: the transition W_hm diag(W_mx x_t) W_mh depends on the input, with
    F (I + 2H) parameters instead of H^2 I. Both input projections run for all steps before the loop.
    Shapes as in ``rnnlab.models.base``; state h: [layers*dirs, B, H].
    """

    def __init__(self, input_size: int, output_size: int, factors: int = 64, **kwargs):
        require_positive(factors=factors)
        self.factors = factors
        super().__init__(input_size, output_size, **kwargs)

    def make_cell(self, input_size, layer, direction):
        return MRNNCell(input_size, self.hidden_size, self.factors)
