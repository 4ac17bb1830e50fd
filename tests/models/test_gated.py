"""LSTM (peepholes, original 1997 form, Greff et al. 2017 variants) and GRU: steps computed by hand from the
module's own weights, fused kernel vs hand-written cell, the model interface, config errors, and learning."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from conftest import train_in_process
from rnnlab.errors import ConfigError
from rnnlab.models.budget import hidden_size_for_budget
from rnnlab.models.gated import DROPPED_GATES, GRU, LSTM, LSTM_VARIANTS
from rnnlab.models.initialization import initialize
from zoo_checks import LENGTHS, check_interface

IN, H = 3, 4
sigmoid = torch.sigmoid


def lstm_weights(model: LSTM, suffix: str = "_l0"):
    """W_x*, W_h*, b_* of one layer/direction, split by gate as in survey eqs. 32-36 (nn.LSTM order i, f, g, o); a
    gate the variant has no weights for (``rnn.gate_order``) gets zeros, which its change then overrides."""
    w_ih, w_hh = getattr(model.rnn, "weight_ih" + suffix), getattr(model.rnn, "weight_hh" + suffix)
    bias = getattr(model.rnn, "bias_ih" + suffix) + getattr(model.rnn, "bias_hh" + suffix)
    order = getattr(model.rnn, "gate_order", "ifgo")

    def by_gate(weight):
        rows = dict(zip(order, weight.split(H)))
        return {g: rows.get(g, torch.zeros_like(weight[:H])) for g in "ifgo"}

    return by_gate(w_ih), by_gate(w_hh), by_gate(bias)


def hand_lstm_step(model: LSTM, x, h, c, a=None, change: str = "vanilla", peepholes: bool = False):
    """One LSTM step written out gate by gate; ``change`` is the one Greff et al. 2017 modification to apply.

    Returns h, c and the gate activations (i, f, o) that FGR feeds to the next step.
    """
    wx, wh, b = lstm_weights(model)
    cell = model.cells[0]
    pre = {g: x @ wx[g].T + h @ wh[g].T + b[g] for g in "ifgo"}
    if change == "fgr":  # R [3H, 3H] acting on [i_{t-1}; f_{t-1}; o_{t-1}]
        R = cell.gate_recurrence
        for k, g in enumerate("ifo"):
            pre[g] = pre[g] + a @ R[k * H : (k + 1) * H].T
    peep = {g: getattr(cell, f"peephole_{g}", None) if peepholes else None for g in "ifo"}
    i = sigmoid(pre["i"] + (peep["i"] * c if peep["i"] is not None else 0))
    f = sigmoid(pre["f"] + (peep["f"] * c if peep["f"] is not None else 0))
    g = torch.tanh(pre["g"])
    if change == "nig":
        i = torch.ones_like(i)
    if change == "nfg":
        f = torch.ones_like(f)
    if change == "cifg":
        f = 1 - i
    if change == "niaf":
        g = pre["g"]
    c_new = f * c + i * g
    o = sigmoid(pre["o"] + (peep["o"] * c_new if peep["o"] is not None else 0))
    if change == "nog":
        o = torch.ones_like(o)
    h_new = o * (c_new if change == "noaf" else torch.tanh(c_new))
    return h_new, c_new, torch.cat([i, f, o], dim=-1)


def two_hand_steps(model, x, state, change="vanilla", peepholes=False):
    h, c = state[0][0], state[1][0]
    a = state[2][0] if len(state) > 2 else None
    hs = []
    for t in range(x.shape[1]):
        h, c, a = hand_lstm_step(model, x[:, t], h, c, a, change, peepholes)
        hs.append(h)
    return torch.stack(hs, dim=1), h, c, a


def random_state(batch: int, fgr: bool = False):
    state = (torch.randn(1, batch, H), torch.randn(1, batch, H))
    return state + (torch.rand(1, batch, 3 * H),) if fgr else state


def test_default_lstm_two_steps_by_hand():
    torch.manual_seed(0)
    model = LSTM(IN, 2, hidden_size=H, implementation="cell")
    x, state = torch.randn(5, 2, IN), random_state(5)
    outputs, (h_n, c_n) = model(x, state=state)
    hs, h, c, _ = two_hand_steps(model, x, state)
    torch.testing.assert_close(outputs, model.readout(hs), rtol=0, atol=1e-5)
    torch.testing.assert_close((h_n[0], c_n[0]), (h, c), rtol=0, atol=1e-5)


def test_peephole_lstm_two_steps_by_hand():
    """Survey eqs. 32-36: p_i * c_{t-1} and p_f * c_{t-1} in the input and forget gates, p_o * c_t in the output."""
    torch.manual_seed(1)
    model = LSTM(IN, 2, hidden_size=H, peepholes=True)
    assert not model.use_fused
    x, state = torch.randn(5, 2, IN), random_state(5)
    outputs, (h_n, c_n) = model(x, state=state)
    hs, h, c, _ = two_hand_steps(model, x, state, peepholes=True)
    torch.testing.assert_close(outputs, model.readout(hs), rtol=0, atol=1e-5)
    torch.testing.assert_close((h_n[0], c_n[0]), (h, c), rtol=0, atol=1e-5)
    loaded = LSTM(IN, 2, hidden_size=H).load_state_dict(model.state_dict(), strict=False)
    assert not loaded.missing_keys
    assert set(loaded.unexpected_keys) == {"cells.0.peephole_i", "cells.0.peephole_f", "cells.0.peephole_o"}


def greff_cases():
    for variant in LSTM_VARIANTS:
        for peepholes in (False, True):
            yield variant, peepholes


@pytest.mark.parametrize("variant,peepholes", list(greff_cases()))
def test_greff_variant_differs_from_lstm_only_in_its_change(variant, peepholes):
    """Each variant, on the weights of a (peephole) LSTM, equals the hand LSTM step with just its change applied."""
    torch.manual_seed(2)
    reference = LSTM(IN, 2, hidden_size=H, peepholes=peepholes and variant != "np", implementation="cell")
    model = LSTM(IN, 2, hidden_size=H, variant=variant, peepholes=peepholes, implementation="cell")
    loaded = model.load_state_dict(kept_rows(reference, model), strict=False)  # the same weights where both have them
    assert not loaded.missing_keys or variant == "fgr"
    x, state = torch.randn(5, 2, IN), random_state(5, fgr=variant == "fgr")
    outputs, final = model(x, state=state)
    change = "vanilla" if variant == "np" else variant
    hs, h, c, a = two_hand_steps(reference if variant != "fgr" else model, x, state, change,
                                 peepholes and variant != "np")
    torch.testing.assert_close(outputs, model.readout(hs), rtol=0, atol=1e-5)
    torch.testing.assert_close((final[0][0], final[1][0]), (h, c), rtol=0, atol=1e-5)
    if variant == "fgr":
        torch.testing.assert_close(final[2][0], a, rtol=0, atol=1e-5)
    plain, _ = reference(x, state=state[:2])
    if variant in ("vanilla", "np"):
        torch.testing.assert_close(outputs, plain, rtol=0, atol=1e-6)
    else:  # the change is real: the variant's function differs from the LSTM's on the same weights
        assert (outputs - plain).abs().max() > 1e-4


def kept_rows(reference: LSTM, variant: LSTM) -> dict:
    """``reference``'s state dict with the rows of the gates ``variant`` drops cut out of the stacked gate weights."""
    order = getattr(variant.rnn, "gate_order", "ifgo")
    rows = torch.cat([torch.arange(k * H, (k + 1) * H) for k in map("ifgo".index, order)])
    return {name: value[rows] if name.startswith("rnn.") else value for name, value in reference.state_dict().items()}


@pytest.mark.parametrize("variant", LSTM_VARIANTS)
def test_parameter_counts_follow_greff(variant):
    """Greff et al. 2017: a removed gate takes its H(I + H + 1) weights with it (nn.LSTM has two biases per gate);
    FGR adds the [3H, 3H] gate recurrence; peepholes add H per remaining sigmoid gate."""
    def count(model):
        return sum(p.numel() for p in model.rnn.parameters()) + sum(p.numel() for p in model.cells.parameters())

    peepholes = variant != "np"
    model = LSTM(IN, 1, hidden_size=H, variant=variant, peepholes=peepholes)
    gates = 3 if variant in DROPPED_GATES else 4
    sigmoid_gates = 3 - (variant in ("nig", "nfg", "nog", "cifg"))
    expected = (
        gates * H * (IN + H + 2) + (9 * H * H if variant == "fgr" else 0) + (sigmoid_gates * H if peepholes else 0)
    )
    assert count(model) == expected


@pytest.mark.parametrize("variant", LSTM_VARIANTS)
def test_param_budget_matches_every_variant_within_five_percent(variant):
    peepholes = variant != "np"
    factory = partial(LSTM, IN, 1, variant=variant, peepholes=peepholes)
    model = factory(hidden_size=hidden_size_for_budget(factory, 5000))
    assert abs(sum(p.numel() for p in model.parameters()) - 5000) <= 0.05 * 5000


def test_forget_bias_finds_the_forget_gate_of_a_variant_without_input_gate():
    model = initialize(LSTM(IN, 1, hidden_size=H, variant="nig", peepholes=True), forget_bias=3.0)
    assert model.rnn.gate_order == "fgo"
    torch.testing.assert_close(model.rnn.bias_ih_l0[:H], torch.full((H,), 3.0))
    torch.testing.assert_close(model.rnn.bias_hh_l0[:H], torch.zeros(H))
    with pytest.raises(ConfigError, match="forget_bias"):
        initialize(LSTM(IN, 1, hidden_size=H, variant="cifg"), forget_bias=1.0)


def test_variant_removes_the_parameters_it_does_not_use():
    def names(**kw):
        return {n.split(".", 2)[-1] for n, _ in LSTM(IN, 1, hidden_size=H, **kw).named_parameters()}

    assert {"peephole_i", "peephole_f", "peephole_o"} <= names(peepholes=True)
    assert "peephole_i" not in names(peepholes=True, variant="nig")
    assert "peephole_f" not in names(peepholes=True, variant="nfg")
    assert "peephole_f" not in names(peepholes=True, variant="cifg")
    assert "peephole_o" not in names(peepholes=True, variant="nog")
    fgr = LSTM(IN, 1, hidden_size=H, variant="fgr", num_layers=2, bidirectional=True)
    assert [p.shape for n, p in fgr.named_parameters() if "gate_recurrence" in n] == [(3 * H, 3 * H)] * 4


def test_no_forget_gate_is_the_1997_lstm():
    """forget_gate: false gives c_t = c_{t-1} + i_t * g_t (Hochreiter & Schmidhuber 1997), i.e. variant nfg."""
    torch.manual_seed(3)
    model = LSTM(IN, 2, hidden_size=H, forget_gate=False)
    assert not model.use_fused and model.variant == "nfg"
    x, state = torch.randn(5, 2, IN), random_state(5)
    _, (h_n, c_n) = model(x, state=state)
    _, h, c, _ = two_hand_steps(model, x, state, "nfg")
    torch.testing.assert_close((h_n[0], c_n[0]), (h, c), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(variant="lstm2"), "variant"),
        (dict(variant="cifg", forget_gate=False), "forget_gate"),
        (dict(peepholes=True, implementation="fused"), "implementation"),
        (dict(variant="fgr", implementation="fused"), "implementation"),
        (dict(forget_gate=False, implementation="fused"), "implementation"),
    ],
)
def test_bad_lstm_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        LSTM(IN, 1, hidden_size=H, **kwargs)
    assert error.value.key == key


def test_auto_runs_fused_only_where_nn_lstm_is_the_same_function():
    assert LSTM(IN, 1).use_fused and LSTM(IN, 1, variant="np").use_fused
    for kwargs in (dict(peepholes=True), dict(variant="cifg"), dict(forget_gate=False), dict(residual=True)):
        assert not LSTM(IN, 1, **kwargs).use_fused


def fused_and_cell(cls, **kwargs):
    fused = cls(IN, 2, hidden_size=H, implementation="fused", **kwargs)
    cell = cls(IN, 2, hidden_size=H, implementation="cell", **kwargs)
    cell.load_state_dict(fused.state_dict())
    return fused, cell


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_fused_and_cell_agree_with_lengths_bidirectional_two_layers(cls):
    torch.manual_seed(4)
    fused, cell = fused_and_cell(cls, num_layers=2, bidirectional=True)
    x = torch.randn(3, 8, IN)
    shape = (4, 3, H)
    initial = (torch.randn(shape), torch.randn(shape)) if cls is LSTM else torch.randn(shape)
    for lengths, state in ((None, None), (LENGTHS, None), (LENGTHS, initial)):
        out_f, state_f = fused(x, lengths, state)
        out_c, state_c = cell(x, lengths, state)
        torch.testing.assert_close(out_c, out_f, rtol=0, atol=1e-5)
        for a, b in zip(state_c if cls is LSTM else (state_c,), state_f if cls is LSTM else (state_f,)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    out_f.square().sum().backward()
    out_c.square().sum().backward()
    for (name, p_f), p_c in zip(fused.named_parameters(), cell.parameters()):
        torch.testing.assert_close(p_c.grad, p_f.grad, rtol=0, atol=1e-5, msg=name)


def test_gru_one_step_by_hand():
    """Survey eqs. 47-50 with nn.GRU's weights (gate order r, z, n; reset applied to the projected state)."""
    torch.manual_seed(5)
    model = GRU(IN, 2, hidden_size=H, implementation="cell")
    x, h0 = torch.randn(5, 1, IN), torch.randn(1, 5, H)
    w_ih, w_hh, b_ih, b_hh = (getattr(model.rnn, n + "_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def rows(w, k):
        return w[k * H : (k + 1) * H]

    xt, h = x[:, 0], h0[0]
    r = sigmoid(xt @ rows(w_ih, 0).T + rows(b_ih, 0) + h @ rows(w_hh, 0).T + rows(b_hh, 0))
    z = sigmoid(xt @ rows(w_ih, 1).T + rows(b_ih, 1) + h @ rows(w_hh, 1).T + rows(b_hh, 1))
    n = torch.tanh(xt @ rows(w_ih, 2).T + rows(b_ih, 2) + r * (h @ rows(w_hh, 2).T + rows(b_hh, 2)))
    expected = (1 - z) * n + z * h
    for implementation in ("cell", "fused"):
        model.use_fused = implementation == "fused"
        outputs, h_n = model(x, state=h0)
        torch.testing.assert_close(h_n[0], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(outputs[:, 0], model.readout(expected), rtol=0, atol=1e-5)


INTERFACE_CASES = [
    (LSTM, {}),
    (LSTM, dict(implementation="cell", num_layers=2, residual=True)),
    (LSTM, dict(peepholes=True, num_layers=2)),
    (LSTM, dict(variant="fgr", peepholes=True)),
    (LSTM, dict(variant="cifg", bidirectional=True)),
    (GRU, {}),
    (GRU, dict(implementation="cell", bidirectional=True, num_layers=2)),
]


@pytest.mark.parametrize("cls,kwargs", INTERFACE_CASES)
def test_interface_shapes_padding_and_carried_state(cls, kwargs):
    torch.manual_seed(6)
    model = cls(IN, 2, hidden_size=H, **kwargs)
    check_interface(model, IN, 2, carried=not kwargs.get("bidirectional", False))


ADDING = ("data=adding", "data.seq_len=10", "data.train_size=2000")


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [("model=lstm",), ("model=gru",), ("model=lstm", "model.variant=cifg")])
def test_learns_the_adding_problem(tmp_path, overrides):
    record = train_in_process(tmp_path, *overrides, *ADDING, "trainer.max_epochs=10")
    assert record["status"] == "completed"
    assert record["metrics"]["test/mse"] < 0.167
