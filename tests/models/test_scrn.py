"""SCRN (Mikolov et al. 2014; survey eqs. 51-53): steps by hand, alpha handling, the interface, learning."""

from __future__ import annotations

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.scrn import SCRN
from zoo_checks import check_interface

IN, H, C = 3, 4, 5


def hand_steps(model: SCRN, x, h, s, alpha):
    cell = model.cells[0]
    B, A, b = cell.input_to_context.weight, cell.input_to_hidden.weight, cell.input_to_hidden.bias
    P, R = cell.context_to_hidden.weight, cell.recurrent.weight
    outputs = []
    for t in range(x.shape[1]):
        s = (1 - alpha) * (x[:, t] @ B.T) + alpha * s  # eq. 51
        h = torch.sigmoid(s @ P.T + x[:, t] @ A.T + b + h @ R.T)  # eq. 52
        outputs.append(model.readout(torch.cat([h, s], dim=-1)))  # eq. 53: U h_t + V s_t
    return torch.stack(outputs, dim=1), h, s


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_two_steps_by_hand(learn_alpha):
    torch.manual_seed(0)
    model = SCRN(IN, 2, hidden_size=H, context_size=C, alpha=0.9, learn_alpha=learn_alpha)
    if learn_alpha:  # a per-unit decay, initialised at alpha; move it off the initial value
        torch.testing.assert_close(torch.sigmoid(model.cells[0].alpha_logit), torch.full((C,), 0.9))
        with torch.no_grad():
            model.cells[0].alpha_logit.add_(torch.randn(C))
        alpha = torch.sigmoid(model.cells[0].alpha_logit)
    else:
        alpha = 0.9
    x, h0, s0 = torch.randn(6, 2, IN), torch.randn(1, 6, H), torch.randn(1, 6, C)
    outputs, (h_n, s_n) = model(x, state=(h0, s0))
    expected, h, s = hand_steps(model, x, h0[0], s0[0], alpha)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close((h_n[0], s_n[0]), (h, s), rtol=0, atol=1e-5)


def test_context_is_an_exponential_average_of_the_projected_input():
    """With alpha fixed, s_T = (1 - alpha) sum_t alpha^(T-1-t) B x_t from s_0 = 0 (eq. 51 unrolled)."""
    torch.manual_seed(1)
    model = SCRN(IN, 1, hidden_size=H, context_size=C, alpha=0.7)
    x = torch.randn(2, 6, IN)
    _, (_, s_n) = model(x)
    weights = 0.3 * 0.7 ** torch.arange(5, -1, -1.0)
    expected = torch.einsum("t,btc->bc", weights, model.cells[0].input_to_context(x))
    torch.testing.assert_close(s_n[0], expected, rtol=0, atol=1e-5)
    assert not any("alpha" in name for name, _ in model.named_parameters())


def test_learned_alpha_gets_a_gradient():
    model = SCRN(IN, 1, hidden_size=H, context_size=C, learn_alpha=True)
    outputs, _ = model(torch.randn(2, 5, IN))
    outputs.sum().backward()
    assert model.cells[0].alpha_logit.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs,key",
    [(dict(alpha=1.5), "alpha"), (dict(alpha=1.0, learn_alpha=True), "alpha"), (dict(context_size=0), "context_size")],
)
def test_bad_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        SCRN(IN, 1, **kwargs)
    assert error.value.key == key


@pytest.mark.parametrize(
    "kwargs", [{}, dict(learn_alpha=True, num_layers=2), dict(bidirectional=True, num_layers=2, residual=True)]
)
def test_interface_shapes_padding_and_carried_state(kwargs):
    torch.manual_seed(2)
    model = SCRN(IN, 2, hidden_size=H, context_size=C, **kwargs)
    check_interface(model, IN, 2, carried=not kwargs.get("bidirectional", False))


@pytest.mark.slow
def test_learns_the_adding_problem(tmp_path):
    record = train_in_process(
        tmp_path, "model=scrn", "data=adding", "data.seq_len=10", "data.train_size=2000", "trainer.max_epochs=10"
    )
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
