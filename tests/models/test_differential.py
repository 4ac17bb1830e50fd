"""Differential RNN (Veeriah et al. 2015; survey eqs. 42-46): steps by hand, the interface, learning."""

from __future__ import annotations

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.differential import DRNN
from zoo_checks import check_interface

IN, H = 3, 4


def hand_run(model: DRNN, x):
    """The dRNN from a zero start, keeping the history of cell states s and forming the DoS in closed form:
    d1 s_t = s_t - s_{t-1} (eq. 45), d2 s_t = s_t - 2 s_{t-1} + s_{t-2} (eq. 46), with s_{<0} = 0."""
    cell, order = model.cells[0], model.order

    def rows(w, k):
        return w[k * H : (k + 1) * H]

    w_x, b, w_h = cell.input.weight, cell.input.bias, cell.recurrent.weight
    w_dif, w_do = cell.dos_input_forget.weight, cell.dos_output.weight  # [2H, R*H], [H, R*H]
    zeros = torch.zeros(x.shape[0], H)
    s_hist = [zeros, zeros, zeros]  # s_{t-1}, s_{t-2}, s_{t-3}
    h, outputs = zeros, []

    def dos(s_now, s_1, s_2):
        return torch.cat([s_now - s_1, s_now - 2 * s_1 + s_2][:order], dim=-1)

    for t in range(x.shape[1]):
        def pre(k):
            return x[:, t] @ rows(w_x, k).T + rows(b, k) + h @ rows(w_h, k).T

        dos_prev = dos(*s_hist)
        i = torch.sigmoid(pre(0) + dos_prev @ rows(w_dif, 0).T)  # eq. 42
        f = torch.sigmoid(pre(1) + dos_prev @ rows(w_dif, 1).T)  # eq. 43
        s = f * s_hist[0] + i * torch.tanh(pre(2))
        o = torch.sigmoid(pre(3) + dos(s, s_hist[0], s_hist[1]) @ w_do.T)  # eq. 44
        h = o * torch.tanh(s)
        s_hist = [s] + s_hist[:2]
        outputs.append(model.readout(h))
    return torch.stack(outputs, dim=1), h, s, dos(s, s_hist[1], s_hist[2])


@pytest.mark.parametrize("order", [1, 2])
def test_three_steps_by_hand(order):
    torch.manual_seed(order)
    model = DRNN(IN, 2, hidden_size=H, order=order)
    x = torch.randn(5, 3, IN)
    outputs, (h_n, s_n, *dos_n) = model(x)
    expected, h, s, dos = hand_run(model, x)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close((h_n[0], s_n[0]), (h, s), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat([d[0] for d in dos_n], dim=-1), dos, rtol=0, atol=1e-5)


@pytest.mark.parametrize("order", [1, 2])
def test_sequence_kernel_values_and_gradients_equal_the_step_by_step_math(order):
    """The whole-sequence kernel (rnnlab.models.differential_kernels, hand-written backward) against autograd
    through the closed-form steps of ``hand_run``: outputs, final state and every gradient to 1e-5."""
    torch.manual_seed(10 + order)
    model = DRNN(IN, 2, hidden_size=H, order=order)
    x = torch.randn(3, 9, IN, requires_grad=True)
    outputs, (h_n, s_n, *dos_n) = model(x)
    expected, h, s, dos = hand_run(model, x)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-5)
    weights = torch.randn_like(outputs)
    loss = (outputs * weights).sum() + h_n.sum() + (s_n**2).sum() + torch.cat(dos_n, dim=-1).sin().sum()
    expected_loss = (expected * weights).sum() + h.sum() + (s**2).sum() + dos.sin().sum()
    inputs = [x, *model.parameters()]
    for grad, expected_grad in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(expected_loss, inputs)):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-5)


def test_without_dos_weights_it_is_an_lstm():
    """Zero DoS matrices leave the LSTM of survey eqs. 32-36 (no peepholes)."""
    torch.manual_seed(3)
    model = DRNN(IN, 1, hidden_size=H, order=2)
    with torch.no_grad():
        model.cells[0].dos_input_forget.weight.zero_()
        model.cells[0].dos_output.weight.zero_()
    lstm = torch.nn.LSTM(IN, H, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(model.cells[0].input.weight)
        lstm.bias_ih_l0.copy_(model.cells[0].input.bias)
        lstm.weight_hh_l0.copy_(model.cells[0].recurrent.weight)
        lstm.bias_hh_l0.zero_()
    x = torch.randn(2, 6, IN)
    _, (h_n, s_n, *_) = model(x)
    _, (h_ref, c_ref) = lstm(x)
    torch.testing.assert_close((h_n, s_n), (h_ref, c_ref), rtol=0, atol=1e-5)


def test_bad_order_names_its_key():
    with pytest.raises(ConfigError) as error:
        DRNN(IN, 1, order=3)
    assert error.value.key == "order"


@pytest.mark.parametrize("kwargs", [{}, dict(order=2, num_layers=2), dict(order=2, bidirectional=True)])
def test_interface_shapes_padding_and_carried_state(kwargs):
    torch.manual_seed(4)
    model = DRNN(IN, 2, hidden_size=H, **kwargs)
    check_interface(model, IN, 2, carried=not kwargs.get("bidirectional", False))


@pytest.mark.slow
def test_learns_the_adding_problem(tmp_path):
    record = train_in_process(
        tmp_path, "model=drnn", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=5"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
