"""rnnlab.measure: the allocator's peak and the FLOPs of a step, checked against hand counts."""

from __future__ import annotations

import torch

from rnnlab.measure import AllocatorPeak, StepFlops, resident_bytes
from rnnlab.models.gated import GRU, LSTM

IN, H, OUT, B, T = 3, 16, 2, 4, 7


def step_flops(model: torch.nn.Module) -> int:
    counter = StepFlops()
    counter.start()
    model(torch.randn(B, T, IN))[0].sum().backward()
    return counter.stop()


def test_fused_lstm_flops_by_hand():
    """Forward: 2 FLOPs per weight of W_ih [4H, I] and W_hh [4H, H] per token, and the readout [O, H]; the backward
    twice the forward (oneDNN's kernel also computes the input gradient)."""
    forward = 2 * B * T * (4 * H * (IN + H) + OUT * H)
    assert step_flops(LSTM(IN, OUT, hidden_size=H, implementation="fused")) == 3 * forward


def test_hand_written_lstm_counts_the_same_products_but_the_unneeded_input_gradient():
    fused, cell = (step_flops(LSTM(IN, OUT, hidden_size=H, implementation=impl)) for impl in ("fused", "cell"))
    assert fused - cell == 2 * B * T * 4 * H * IN


def test_a_gru_step_costs_fewer_flops_than_an_lstm_step():
    assert step_flops(GRU(IN, OUT, hidden_size=H)) < step_flops(LSTM(IN, OUT, hidden_size=H))


def test_allocator_peak_sees_a_freed_temporary_and_not_what_was_held_before():
    held = torch.ones(1 << 20)  # 4 MiB allocated before: not counted
    peak = AllocatorPeak(torch.device("cpu"))
    peak.start()
    kept = torch.ones(1 << 17)  # 0.5 MiB, still live at the end
    temporary = torch.ones(1 << 18)  # 1 MiB, freed before the end
    del temporary
    measured = peak.stop()
    assert 1.5 * 2**20 <= measured < 1.6 * 2**20
    assert held.numel() and kept.numel()


def test_resident_bytes_counts_parameters_and_optimizer_state():
    model = LSTM(IN, OUT, hidden_size=H)
    optimizer = torch.optim.Adam(model.parameters())
    params = sum(p.numel() for p in model.parameters()) * 4
    assert resident_bytes(model, [optimizer]) == params
    model(torch.randn(B, T, IN))[0].sum().backward()
    optimizer.step()  # two moments per parameter, and a step count per parameter tensor
    steps = sum(4 if optimizer.state[p]["step"].dtype == torch.float32 else 8 for p in model.parameters())
    assert resident_bytes(model, [optimizer]) == 3 * params + steps
