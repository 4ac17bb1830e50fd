"""Second-order RNN (Giles et al. 1992) and mRNN (Sutskever et al. 2011): steps by hand, the interface, learning."""

from __future__ import annotations

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.multiplicative import MRNN, SecondOrderRNN
from zoo_checks import check_interface

IN, H, OUT, F = 2, 3, 2, 4


def test_second_order_two_steps_by_hand_with_explicit_sums():
    """h_t^i = sigmoid(sum_jk W_ijk h_{t-1}^j x_t^k + b_i), summed index by index (no einsum) for a small model."""
    torch.manual_seed(0)
    model = SecondOrderRNN(IN, OUT, hidden_size=H)
    cell = model.cells[0]
    W, b = cell.weight.detach(), cell.bias.detach()
    x, h0 = torch.randn(2, 2, IN), torch.randn(1, 2, H)
    expected = torch.empty(2, H)
    for n in range(2):
        h = h0[0, n].tolist()
        for t in range(2):
            h = [
                torch.sigmoid(
                    sum(W[i, j, k] * h[j] * x[n, t, k] for j in range(H) for k in range(IN)) + b[i]
                ).item()
                for i in range(H)
            ]
        expected[n] = torch.tensor(h)
    with torch.no_grad():
        outputs, h_n = model(x, state=h0)
    torch.testing.assert_close(h_n[0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, -1], model.readout(expected), rtol=0, atol=1e-5)


def test_second_order_one_hot_inputs_select_one_transition_matrix_each():
    """For x_t = e_k the step is sigma(W[:, :, k] h + b): the automaton view of Giles et al."""
    torch.manual_seed(1)
    model = SecondOrderRNN(3, OUT, hidden_size=H, activation="tanh")
    cell = model.cells[0]
    h0 = torch.randn(1, 1, H)
    for k in range(3):
        x = torch.nn.functional.one_hot(torch.tensor([[k]]), 3).float()
        with torch.no_grad():
            _, h_n = model(x, state=h0)
        expected = torch.tanh(cell.weight[:, :, k] @ h0[0, 0] + cell.bias)
        torch.testing.assert_close(h_n[0, 0], expected, rtol=0, atol=1e-6)


def test_mrnn_two_steps_by_hand():
    """m_t = (W_mx x_t) * (W_mh h_{t-1}); h_t = tanh(W_hm m_t + W_hx x_t + b)."""
    torch.manual_seed(2)
    model = MRNN(IN, OUT, hidden_size=H, factors=F)
    cell = model.cells[0]
    W_mx, W_hx = cell.input.weight[:F], cell.input.weight[F:]
    x, h0 = torch.randn(4, 2, IN), torch.randn(1, 4, H)
    h = h0[0]
    for t in range(2):
        m = (x[:, t] @ W_mx.T) * (h @ cell.factor_recurrent.weight.T)
        h = torch.tanh(m @ cell.factor_out.weight.T + x[:, t] @ W_hx.T + cell.bias)
    with torch.no_grad():
        outputs, h_n = model(x, state=h0)
    torch.testing.assert_close(h_n[0], h, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[:, -1], model.readout(h), rtol=0, atol=1e-5)


def test_mrnn_is_a_factored_second_order_tensor():
    """The mRNN's recurrent term equals a second-order RNN with W_ijk = sum_f W_hm[i,f] W_mx[f,k] W_mh[f,j]."""
    torch.manual_seed(3)
    mrnn = MRNN(IN, OUT, hidden_size=H, factors=F)
    cell = mrnn.cells[0]
    W_mx = cell.input.weight[:F]
    tensor = torch.einsum("if,fk,fj->ijk", cell.factor_out.weight, W_mx, cell.factor_recurrent.weight)
    h, x = torch.randn(5, H), torch.randn(5, IN)
    projected = cell.project(x)
    direct = projected[:, F:]
    (h_next,) = cell.step(projected, (h,), 0)
    expected = torch.tanh(torch.einsum("ijk,bj,bk->bi", tensor, h, x) + direct)
    torch.testing.assert_close(h_next, expected, rtol=0, atol=1e-5)
    assert sum(p.numel() for p in cell.parameters()) == F * (IN + 2 * H) + H * IN + H


@pytest.mark.parametrize(
    "factory,key",
    [(lambda: MRNN(IN, OUT, factors=0), "factors"), (lambda: SecondOrderRNN(IN, OUT, activation="gelu"), "activation")],
)
def test_bad_settings_name_their_key(factory, key):
    with pytest.raises(ConfigError) as error:
        factory()
    assert error.value.key == key


@pytest.mark.parametrize(
    "factory",
    [
        lambda **kw: SecondOrderRNN(IN, OUT, hidden_size=H, **kw),
        lambda **kw: MRNN(IN, OUT, hidden_size=H, factors=F, **kw),
    ],
    ids=["second-order", "mrnn"],
)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_interface_shapes_padding_and_carried_state(factory, bidirectional):
    torch.manual_seed(4)
    model = factory(num_layers=2, bidirectional=bidirectional, residual=bidirectional)
    check_interface(model, IN, OUT, carried=not bidirectional)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,overrides",
    [
        # Giles et al.'s sigmoid units sit at 0.159 after 5 epochs; tanh units learn the task
        ("second_order_rnn", ["trainer.max_epochs=5", "model.activation=tanh"]),
        ("mrnn", ["trainer.max_epochs=8"]),
    ],
)
def test_learns_the_adding_problem(tmp_path, name, overrides):
    record = train_in_process(
        tmp_path, f"model={name}", "data=adding", "data.seq_len=10", "data.train_size=2000", *overrides
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
