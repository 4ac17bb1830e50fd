"""Regularizers (rnnlab.training.regularizers): what each does at train time, checked against hand computation, and
that it is off at eval time; their config group, composition and early stopping end to end."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch.nn.utils import parametrize

from conftest import compose_config, train_in_process
from rnnlab.conf_dir import CONF_DIR, group_options
from rnnlab.config_check import check_command_line
from rnnlab.errors import ConfigError
from rnnlab.models.base import RecurrentCell, RecurrentNetwork
from rnnlab.models.elman import Elman, Jordan
from rnnlab.models.gated import GRU, LSTM
from rnnlab.models.hierarchical import HSRNN
from rnnlab.training.regularizers import (
    L1,
    L2,
    Dropout,
    NormStabilizer,
    Regularization,
    Regularizer,
    RNNDrop,
    Variational,
    WeightDrop,
    Zoneout,
)
from rnnlab.wiring import build_model

FAMILIES = {"elman": Elman, "lstm": LSTM, "gru": GRU}
SHAPES = [(1, False), (2, True)]  # (num_layers, bidirectional)
SHAPE_IDS = ["single", "stacked-bidirectional"]
INPUT, HIDDEN = 3, 6
LENGTHS = torch.tensor([7, 5, 3, 1])


def build(family: str, layers: int = 1, bidirectional: bool = False, hidden: int = HIDDEN, **kwargs):
    torch.manual_seed(0)
    return FAMILIES[family](INPUT, 2, hidden_size=hidden, num_layers=layers, bidirectional=bidirectional, **kwargs)


def regularized(model, name: str, regularizer: Regularizer):
    """(an unregularised copy with the same weights, the regularization attached to ``model``)."""
    plain = copy.deepcopy(model)
    return plain, Regularization(model, {name: regularizer})


def weights(model, layer: int = 0, suffix: str = ""):
    """(W_ih, b_ih, W_hh, b_hh) of one layer and direction of a fused-family model."""
    return tuple(getattr(model.rnn, f"{n}_l{layer}{suffix}") for n in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))


def hand_elman(x, w, recurrent_input=lambda h, t: h, after=lambda h, h_prev: h):
    """h_t = after(tanh(W_ih x_t + b_ih + W_hh r(h_{t-1}) + b_hh), h_{t-1}), h_0 = 0 (survey eqs. 1-2): [B, T, H]."""
    w_ih, b_ih, w_hh, b_hh = w
    h = x.new_zeros(x.shape[0], w_hh.shape[0])
    out = []
    for t in range(x.shape[1]):
        update = torch.tanh(x[:, t] @ w_ih.T + b_ih + recurrent_input(h, t) @ w_hh.T + b_hh)
        h = after(update, h)
        out.append(h)
    return torch.stack(out, 1)


def lstm_gates(x_t, h_product, w):
    """The LSTM's i, f, g, o (survey eqs. 32-35, no peepholes) given W_hh h as ``h_product`` input."""
    w_ih, b_ih, w_hh, b_hh = w
    i, f, g, o = (x_t @ w_ih.T + b_ih + h_product @ w_hh.T + b_hh).chunk(4, -1)
    return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)


def gru_step(x_t, h, h_product, w):
    """GRU (survey eqs. 47-50, torch's gate order r, z, n) whose matrix products read ``h_product``, the
    interpolation the true h_{t-1}."""
    w_ih, b_ih, w_hh, b_hh = w
    x_r, x_z, x_n = (x_t @ w_ih.T + b_ih).chunk(3, -1)
    h_r, h_z, h_n = (h_product @ w_hh.T + b_hh).chunk(3, -1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    return (1 - z) * torch.tanh(x_n + r * h_n) + z * h


def random_state(model, batch: int):
    shape = (model.num_layers * model.num_directions, batch, model.hidden_size)
    h = torch.randn(shape)
    return (h, torch.randn(shape)) if isinstance(model, LSTM) else h


# ---------------------------------------------------------------- zoneout (Krueger et al. 2017; survey eq. 58)


@pytest.mark.parametrize("layers,bidirectional", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_zoneout_with_p_one_keeps_the_previous_state_exactly(family, layers, bidirectional):
    model = build(family, layers, bidirectional)
    regularized(model, "zoneout", Zoneout(p=1.0))
    model.train()
    x = torch.randn(4, 7, INPUT)
    state = random_state(model, 4)
    hidden, final = model.run_layers(x, LENGTHS, state)
    finals = final if isinstance(final, tuple) else (final,)
    initials = state if isinstance(state, tuple) else (state,)
    for kept, initial in zip(finals, initials):
        assert torch.equal(kept, initial)
    h0 = state[0] if isinstance(state, tuple) else state
    valid = torch.arange(7)[None, :] < LENGTHS[:, None]
    top = (layers - 1) * model.num_directions
    for direction in range(model.num_directions):
        emitted = hidden[..., direction * HIDDEN : (direction + 1) * HIDDEN]
        expected = h0[top + direction][:, None, :].expand_as(emitted)
        assert torch.equal(emitted[valid], expected[valid])


@pytest.mark.parametrize("layers,bidirectional", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_zoneout_with_p_zero_is_the_plain_model(family, layers, bidirectional):
    model = build(family, layers, bidirectional)
    plain, _ = regularized(model, "zoneout", Zoneout(p=0.0))
    x = torch.randn(4, 7, INPUT)
    out, _ = model.train()(x, LENGTHS)
    expected, _ = plain.train()(x, LENGTHS)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)  # hand-written cell vs fused kernel


def test_zoneout_at_train_time_each_unit_keeps_its_previous_value_with_probability_p():
    model = build("elman", hidden=64)
    regularized(model, "zoneout", Zoneout(p=0.3))
    x = torch.randn(8, 12, INPUT)
    with torch.no_grad():
        hidden, _ = model.train().run_layers(x, None, None)
    w_ih, b_ih, w_hh, b_hh = weights(model)
    previous = torch.cat([hidden.new_zeros(8, 1, 64), hidden[:, :-1]], 1)
    update = torch.tanh(x @ w_ih.T + b_ih + previous @ w_hh.T + b_hh)  # the cell's own h~_t from the actual h_{t-1}
    kept = torch.isclose(hidden, previous, rtol=0, atol=1e-6)
    updated = torch.isclose(hidden, update, rtol=0, atol=1e-6)
    assert (kept | updated).all()
    distinct = (previous - update).abs() > 1e-3
    assert abs(kept[distinct].float().mean().item() - 0.3) < 0.04  # ~5000 units: std 0.007


def test_zoneout_at_eval_time_is_the_expectation():
    p, p_cell = 0.3, 0.6
    x = torch.randn(4, 7, INPUT)
    elman = build("elman")
    regularized(elman, "zoneout", Zoneout(p=p))
    with torch.no_grad():
        hidden, _ = elman.eval().run_layers(x, None, None)
        expected = hand_elman(x, weights(elman), after=lambda update, h: p * h + (1 - p) * update)
    torch.testing.assert_close(hidden, expected, rtol=0, atol=1e-6)

    lstm = build("lstm")
    regularized(lstm, "zoneout", Zoneout(p=p, p_cell=p_cell))
    with torch.no_grad():
        hidden, (h_final, c_final) = lstm.eval().run_layers(x, None, None)
        w = weights(lstm)
        h = c = x.new_zeros(4, HIDDEN)
        out = []
        for t in range(7):
            i, f, g, o = lstm_gates(x[:, t], h, w)
            c_update = f * c + i * g
            h_update = o * torch.tanh(c_update)
            h, c = p * h + (1 - p) * h_update, p_cell * c + (1 - p_cell) * c_update
            out.append(h)
    torch.testing.assert_close(hidden, torch.stack(out, 1), rtol=0, atol=1e-6)
    torch.testing.assert_close(c_final[0], c, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- variational (Gal & Ghahramani 2016)


def test_variational_input_masks_are_the_same_at_every_step_and_differ_across_sequences():
    model = build("elman", layers=2, bidirectional=True)
    regularizer = Variational(p_input=0.5, p_hidden=0.0)
    regularized(model, "variational", regularizer)
    seen = []
    layer_input = regularizer.layer_input
    regularizer.layer_input = lambda x, layer: seen.append((x, out := layer_input(x, layer))) or out
    model.train()(torch.ones(6, 5, INPUT), None)
    assert len(seen) == 2  # one per layer
    for before, after in seen:
        ratio = after / before  # the mask, [B, T, F]
        assert torch.equal(ratio, ratio[:, :1].expand_as(ratio))  # the same at every step
        assert set(ratio.unique().tolist()) <= {0.0, 2.0}
        assert not torch.equal(ratio, ratio[:1].expand_as(ratio))  # differs across sequences


@pytest.mark.parametrize("family", FAMILIES)
def test_variational_hidden_mask_is_one_mask_per_sequence_on_the_recurrent_product_only(family):
    """h_{t-1} is masked where it enters W_hh, with the same mask at every step; GRU's z * h_{t-1} and the LSTM's
    c_{t-1} are not masked."""
    model = build(family)
    regularizer = Variational(p_input=0.0, p_hidden=0.5)
    regularized(model, "variational", regularizer)
    x = torch.randn(5, 6, INPUT)
    with torch.no_grad():
        hidden, _ = model.train().run_layers(x, None, None)
    mask = regularizer.masks[0]  # [B, H], drawn at the first step
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    assert not torch.equal(mask, mask[:1].expand_as(mask))
    w = weights(model)
    with torch.no_grad():
        if family == "elman":
            expected = hand_elman(x, w, recurrent_input=lambda h, t: mask * h)
        else:
            h = c = x.new_zeros(5, HIDDEN)
            out = []
            for t in range(6):
                if family == "gru":
                    h = gru_step(x[:, t], h, mask * h, w)
                else:
                    i, f, g, o = lstm_gates(x[:, t], mask * h, w)
                    c = f * c + i * g
                    h = o * torch.tanh(c)
                out.append(h)
            expected = torch.stack(out, 1)
    torch.testing.assert_close(hidden, expected, rtol=0, atol=1e-6)


def test_variational_draws_a_mask_per_layer_and_direction_and_new_masks_per_batch():
    model = build("lstm", layers=2, bidirectional=True)
    regularizer = Variational(p_input=0.5, p_hidden=0.5)
    regularized(model, "variational", regularizer)
    x = torch.randn(3, 4, INPUT)
    model.train()(x, None)
    first = dict(regularizer.masks)
    assert sorted(first) == [0, 1, 2, 3]
    model(x, None)
    assert all(not torch.equal(first[i], regularizer.masks[i]) for i in first)


# ---------------------------------------------------------------- rnndrop (Moon et al. 2015)


def test_rnndrop_masks_the_elman_hidden_state_with_one_mask_per_sequence():
    model = build("elman", hidden=16)
    regularizer = RNNDrop(p=0.5)
    regularized(model, "rnndrop", regularizer)
    x = torch.randn(5, 7, INPUT)
    with torch.no_grad():
        hidden, _ = model.train().run_layers(x, None, None)
    mask = regularizer.masks[0]
    assert set(mask.unique().tolist()) == {0.0, 1.0}  # not rescaled: the same mask at every step would compound it
    dropped = hidden == 0
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # the same units at every step
    assert torch.equal(dropped[:, 0], mask == 0)
    assert not torch.equal(mask, mask[:1].expand_as(mask))  # differs across sequences
    expected = hand_elman(x, weights(model), after=lambda update, h: mask * update)
    torch.testing.assert_close(hidden, expected, rtol=0, atol=1e-6)


def test_rnndrop_masks_the_lstm_cell_state_with_one_mask_per_sequence():
    model = build("lstm")
    regularizer = RNNDrop(p=0.5)
    regularized(model, "rnndrop", regularizer)
    x = torch.randn(5, 7, INPUT)
    with torch.no_grad():
        hidden, (_, c_final) = model.train().run_layers(x, None, None)
        mask = regularizer.masks[0]
        h = c = x.new_zeros(5, HIDDEN)
        out = []
        for t in range(7):
            i, f, g, o = lstm_gates(x[:, t], h, weights(model))
            c_update = f * c + i * g
            h, c = o * torch.tanh(c_update), mask * c_update  # documented: h_t reads the unmasked c_t
            out.append(h)
    torch.testing.assert_close(hidden, torch.stack(out, 1), rtol=0, atol=1e-6)
    torch.testing.assert_close(c_final[0], c, rtol=0, atol=1e-6)
    assert torch.equal(c_final[0] == 0, mask == 0)


def test_rnndrop_on_a_carried_state_does_not_compound_over_long_sequences():
    """GRU's h_t = (1 - z) n + z h_{t-1} stays in [-1, 1]: a rescaled mask would grow kept units as (1 - p)^-t."""
    model = build("gru")
    regularized(model, "rnndrop", RNNDrop(p=0.5))
    with torch.no_grad():
        hidden, _ = model.train().run_layers(torch.randn(4, 60, INPUT), None, None)
    assert hidden.abs().max() <= 1.0


# ---------------------------------------------------------------- weight drop (Wan et al. 2013; Merity et al. 2017)


@pytest.mark.parametrize("implementation", ["auto", "cell"])
def test_weight_drop_zeroes_recurrent_weights_only_with_a_new_mask_per_batch(implementation):
    model = build("lstm", layers=2, bidirectional=True, hidden=32, implementation=implementation)
    plain, _ = regularized(model, "weight_drop", WeightDrop(p=0.5))
    names = [f"weight_hh_l{layer}{suffix}" for layer in (0, 1) for suffix in ("", "_reverse")]
    assert all(parametrize.is_parametrized(model.rnn, name) for name in names)
    assert not any(parametrize.is_parametrized(model.rnn, n) for n, _ in plain.rnn.named_parameters() if n not in names)
    x = torch.randn(4, 5, INPUT)
    out, _ = model.train()(x, LENGTHS.clamp(max=5))
    masks = {}
    for name in names:
        original = model.rnn.parametrizations[name].original
        dropped = getattr(model.rnn, name)  # the matrix this batch used
        masks[name] = dropped / original
        assert set(masks[name].unique().tolist()) <= {0.0, 2.0}
        assert abs((masks[name] == 0).float().mean().item() - 0.5) < 0.05  # 4096 weights
    # the forward ran on exactly those matrices, W_ih and biases untouched
    with torch.no_grad():
        for name in names:
            getattr(plain.rnn, name).copy_(getattr(model.rnn, name))
    expected, _ = plain.train()(x, LENGTHS.clamp(max=5))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    out.sum().backward()
    for name in names:
        assert torch.all(model.rnn.parametrizations[name].original.grad[masks[name] == 0] == 0)
    model(x, None)
    assert all(not torch.equal(getattr(model.rnn, name) / model.rnn.parametrizations[name].original, masks[name])
               for name in names)


def test_weight_drop_reaches_parametrized_recurrent_matrices_and_names_missing_ones():
    model = Jordan(INPUT, 2, hidden_size=HIDDEN)
    with pytest.raises(ConfigError, match="Jordan") as error:
        Regularization(model, {"weight_drop": WeightDrop()})
    assert "weight_drop.weights" in str(error.value)
    Regularization(model, {"weight_drop": WeightDrop(weights=["*feedback.weight"])})
    assert parametrize.is_parametrized(model.cells[0].feedback, "weight")


# ---------------------------------------------------------------- dropout (Zaremba et al. 2014; survey Fig. 14)


@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_drops_layer_inputs_and_the_readout_input_but_never_the_recurrent_path(family):
    model = build(family, hidden=32)
    regularizer = Dropout(p=0.5)
    plain, _ = regularized(model, "dropout", regularizer)
    layer_input = regularizer.layer_input
    dropped_inputs = []
    regularizer.layer_input = lambda x, layer: dropped_inputs.append(out := layer_input(x, layer)) or out
    x = torch.randn(8, 6, INPUT)
    state = random_state(model, 8)
    h0 = (state[0] if isinstance(state, tuple) else state).requires_grad_()
    state = (h0, state[1]) if isinstance(state, tuple) else h0
    hidden, final = model.train().run_layers(x, None, state)
    (dropped,) = dropped_inputs
    assert ((dropped == 0) | torch.isclose(dropped, 2 * x)).all() and (dropped == 0).any()
    zeros = (hidden == 0).float().mean().item()
    assert 0.4 < zeros < 0.6  # the readout's input is dropped
    # the recurrence on the dropped inputs is the plain recurrence: same state and same d h_T / d h_0
    h_final = final[0] if isinstance(final, tuple) else final
    (grad,) = torch.autograd.grad(h_final.sum(), h0)
    h0_plain = h0.detach().clone().requires_grad_()
    plain_state = (h0_plain, state[1]) if isinstance(state, tuple) else h0_plain
    _, plain_final = plain.train().run_layers(dropped.detach(), None, plain_state)
    plain_h = plain_final[0] if isinstance(plain_final, tuple) else plain_final
    (plain_grad,) = torch.autograd.grad(plain_h.sum(), h0_plain)
    torch.testing.assert_close(h_final, plain_h, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, plain_grad, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- penalties (survey eqs. 54-55, 57)


@pytest.mark.parametrize("biases", [False, True])
def test_l1_and_l2_penalties_equal_the_hand_computed_sums(biases):
    model = build("lstm", layers=2, bidirectional=True)
    regularization = Regularization(model, {"l1": L1(weight=0.01, biases=biases), "l2": L2(weight=0.1, biases=biases)})
    chosen = [p for name, p in model.named_parameters() if biases or "bias" not in name]
    assert len(chosen) == (18 if biases else 9)  # 4 layer-directions x (W_ih, W_hh[, b_ih, b_hh]) + readout W[, b]
    l1 = 0.01 * sum(p.detach().abs().sum() for p in chosen)
    l2 = 0.1 * sum(p.detach().square().sum() for p in chosen)
    penalty = regularization.penalty(model)
    torch.testing.assert_close(penalty.detach(), l1 + l2)
    penalty.backward()
    weight = model.rnn.weight_hh_l1_reverse
    torch.testing.assert_close(weight.grad, 0.01 * weight.sign() + 0.2 * weight.detach())


@pytest.mark.parametrize("family,bidirectional", [("elman", False), ("lstm", True)])
def test_norm_stabilizer_equals_the_hand_computed_value(family, bidirectional):
    beta = 2.5
    model = build(family, bidirectional=bidirectional)
    plain, regularization = regularized(model, "norm_stabilizer", NormStabilizer(beta=beta))
    x = torch.randn(4, 7, INPUT)
    hidden, _ = model.train().run_layers(x, LENGTHS, None)
    penalty = regularization.penalty(model)
    assert penalty.requires_grad
    valid = torch.arange(7)[None, :] < LENGTHS[:, None]
    pairs = valid[:, 1:] & valid[:, :-1]
    expected = 0.0
    for direction in range(model.num_directions):
        norms = hidden[..., direction * HIDDEN : (direction + 1) * HIDDEN].detach().norm(dim=-1)
        expected += ((norms[:, 1:] - norms[:, :-1]) ** 2)[pairs].mean()  # a backward pair is the same pair reversed
    torch.testing.assert_close(penalty.detach(), beta * expected)
    assert regularization.penalty(model) is None  # read once
    with torch.no_grad():
        model(x, LENGTHS)
    assert regularization.penalty(model) is None  # nothing recorded without gradients


# ---------------------------------------------------------------- off at eval time


EVAL_OFF = {
    "dropout": lambda: Dropout(p=0.5),
    "rnndrop": lambda: RNNDrop(p=0.5),
    "variational": lambda: Variational(p_input=0.5, p_hidden=0.5),
    "weight_drop": lambda: WeightDrop(p=0.5),
    "norm_stabilizer": lambda: NormStabilizer(beta=1.0),
    "l2": lambda: L2(weight=1.0),
}


@pytest.mark.parametrize("layers,bidirectional", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", EVAL_OFF)
def test_regularizers_are_off_at_eval_time(name, family, layers, bidirectional):
    model = build(family, layers, bidirectional)
    plain, _ = regularized(model, name, EVAL_OFF[name]())
    x = torch.randn(4, 7, INPUT)
    with torch.no_grad():
        model.train()(x, LENGTHS)  # a training forward first: masks drawn then must not linger
        out, state = model.eval()(x, LENGTHS)
        expected, expected_state = plain.eval()(x, LENGTHS)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(state, expected_state, rtol=0, atol=0)


# ---------------------------------------------------------------- what cannot host what


def test_a_fused_only_model_or_a_model_outside_recurrent_network_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"LSTM.*fused.*zoneout"):
        Regularization(build("lstm", implementation="fused"), {"zoneout": Zoneout()})
    Regularization(build("lstm", implementation="fused"), {"weight_drop": WeightDrop()})  # keeps the kernel
    hsrnn = HSRNN(INPUT, 2, hidden_size=HIDDEN)
    with pytest.raises(ConfigError, match=r"HSRNN.*variational"):
        Regularization(hsrnn, {"variational": Variational()})


def test_a_cell_that_bypasses_step_is_refused_by_name_at_its_first_forward():
    class OwnLoopCell(RecurrentCell):
        hidden_size = HIDDEN

        def run(self, x, mask, state):
            return x.new_zeros(*x.shape[:2], HIDDEN), state

    class OwnLoop(RecurrentNetwork):
        def make_cell(self, input_size, layer, direction):
            return OwnLoopCell()

    model = OwnLoop(INPUT, 2, hidden_size=HIDDEN)
    Regularization(model, {"zoneout": Zoneout()})
    with pytest.raises(ConfigError, match=r"OwnLoop.*zoneout"):
        model(torch.randn(2, 3, INPUT))


@pytest.mark.parametrize(
    "make,key",
    [(lambda: Zoneout(p=1.5), "p"), (lambda: Dropout(p=1.0), "p"), (lambda: Variational(p_hidden=-0.1), "p_hidden"),
     (lambda: L2(weight=-1.0), "weight"), (lambda: NormStabilizer(beta=-1), "beta"), (lambda: WeightDrop(p=1), "p")],
)
def test_bad_values_raise_config_errors_naming_the_key(make, key):
    with pytest.raises(ConfigError) as error:
        make()
    assert error.value.key == key


MODELS = group_options("model")
HOOKED = ("dropout", "rnndrop", "variational", "zoneout", "norm_stabilizer")
EVERY = {**EVAL_OFF, "zoneout": lambda: Zoneout(p=0.3), "l1": lambda: L1(weight=1e-3)}


@pytest.mark.parametrize("model_name", MODELS)
def test_every_model_hosts_each_regularizer_or_refuses_it_by_name(tmp_path, model_name):
    """The support table of the module docstring: a RecurrentNetwork hosts every hook regularizer; any model hosts
    l1 and l2; a refusal is a ConfigError naming the model and the regularizer."""
    target = get_class(OmegaConf.load(CONF_DIR / "model" / f"{model_name}.yaml")._target_)
    overrides = ["model.readout=pool"] if model_name == "convlstm" else []  # as tests/models/test_interface.py
    cfg = compose_config(tmp_path, [f"model={model_name}", *overrides]).model
    if "hidden_size" in cfg:
        cfg.hidden_size = 8
    torch.manual_seed(0)
    base = build_model(cfg, INPUT, 2)
    inputs = target.example_inputs(2, INPUT) if hasattr(target, "input_layout") else {
        "x": torch.randn(2, 5, INPUT), "lengths": torch.tensor([5, 3])}
    for name, make in EVERY.items():
        model = copy.deepcopy(base)
        try:
            regularization = Regularization(model, {name: make()})
        except ConfigError as error:
            assert name in str(error) and type(model).__name__ in str(error)
            assert name not in ("l1", "l2") and not (name in HOOKED and isinstance(model, RecurrentNetwork))
            continue
        outputs, _ = model.train()(**inputs)
        loss = outputs.float().square().mean()
        penalty = regularization.penalty(model)
        loss = loss if penalty is None else loss + penalty
        loss.backward()
        assert torch.isfinite(loss)
        with torch.no_grad():
            assert torch.isfinite(model.eval()(**inputs)[0]).all()


# ---------------------------------------------------------------- config group, composition, end to end


def test_regularizer_group_composes_several_options_each_with_its_keys(tmp_path):
    assert OmegaConf.to_container(compose_config(tmp_path, []).regularizer) == {}
    cfg = compose_config(
        tmp_path, ["regularizer=[l2,zoneout]", "regularizer.l2.weight=0.5", "regularizer.zoneout.p=0.2"]
    )
    assert set(cfg.regularizer) == {"l2", "zoneout"}
    assert cfg.regularizer.l2.weight == 0.5 and cfg.regularizer.zoneout.p == 0.2
    assert "regularizers" not in cfg.task  # the task receives them from rnnlab.wiring, not as a copy
    check_command_line(["regularizer=[l2,zoneout]", "regularizer.zoneout.p=0.2"])
    with pytest.raises(ConfigError, match="regularizer"):
        check_command_line(["regularizer=[l2,bogus]"])


def test_every_regularizer_config_builds_its_regularizer(tmp_path):
    names = [name for name in group_options("regularizer") if name != "none"]
    cfg = compose_config(tmp_path, [f"regularizer=[{','.join(names)}]"])
    for name in names:
        assert isinstance(instantiate(cfg.regularizer[name]), Regularizer), name


def test_lstm_with_l2_and_zoneout_trains_end_to_end(tmp_path):
    record = train_in_process(tmp_path, "model=lstm", "model.hidden_size=16", "regularizer=[l2,zoneout]", "debug=fast")
    assert record["status"] == "completed", record["error"]
    assert set(record["config"]["regularizer"]) == {"l2", "zoneout"}
    assert record["metrics"]["train/penalty"] > 0


def test_early_stopping_ends_a_run_on_a_plateau_before_max_epochs(tmp_path):
    """lr 0: val/loss is the same every epoch, so patience 1 stops after the second validation."""
    record = train_in_process(
        tmp_path, "model=elman", "model.hidden_size=8", "debug=fast", "trainer.max_epochs=5",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "optimizer.lr=0.0",
        "callbacks=[minimal,early_stopping]", "callbacks.early_stopping.patience=1",
    )
    assert record["status"] == "completed", record["error"]
    assert record["config"]["callbacks"]["early_stopping"]["monitor"] == "val/loss"
    assert record["epochs"] == 2
