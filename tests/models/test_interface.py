"""The model interface (CONTRIBUTING.md, 'The model interface'), checked for every conf/model/*.yaml (new families
are picked up).

Models that read [batch, time, features] get every check. A model that reads another layout (images, video,
trees, stories) declares ``input_layout`` and ``example_inputs``: it gets the shape and gradient check on its own
example batch, and its family's tests check padding and state.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import compose_config
from rnnlab.conf_dir import CONF_DIR, group_options
from rnnlab.models.base import reverse_padded
from rnnlab.wiring import build_model

MODELS = group_options("model")
INPUT, OUTPUT, BATCH, STEPS = 3, 2, 4, 9
LENGTHS = torch.tensor([9, 4, 6, 1])
PER_MODEL = {"convlstm": ["model.readout=pool"]}  # its default readout predicts whole frames, not OUTPUT classes


SEQUENCE_MODELS = [
    name for name in MODELS
    if not hasattr(get_class(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")._target_), "input_layout")
]


def build(tmp_path, name, *overrides):
    """The model at hidden size 8; overrides of keys the model's config lacks (rmn has no ``bidirectional``) are
    left out."""
    keys = compose_config(tmp_path, [f"model={name}"]).model
    kept = [o for o in overrides if o.split("=")[0].removeprefix("model.") in keys]
    cfg = compose_config(tmp_path, [f"model={name}", "model.hidden_size=8", *PER_MODEL.get(name, []), *kept])
    torch.manual_seed(0)
    return build_model(cfg.model, INPUT, OUTPUT).eval()


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("name", sorted(set(MODELS) - set(SEQUENCE_MODELS)))
def test_models_of_another_layout_run_forward_and_backward_on_their_example(tmp_path, name):
    model = build(tmp_path, name).train()
    inputs = type(model).example_inputs(BATCH, INPUT)
    outputs, _ = model(**inputs)
    assert outputs.dim() == 3 and outputs.shape[0] == BATCH and outputs.shape[-1] == OUTPUT == model.output_size
    assert torch.isfinite(outputs).all()
    outputs.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_forward_backward_shapes(tmp_path, name, with_lengths):
    model = build(tmp_path, name).train()
    x = torch.randn(BATCH, STEPS, INPUT, requires_grad=True)
    outputs, state = model(x, LENGTHS if with_lengths else None)
    assert outputs.shape == (BATCH, STEPS, OUTPUT) and model.output_size == OUTPUT
    outputs.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_padding_does_not_leak_into_valid_steps(tmp_path, name):
    model = build(tmp_path, name, "model.bidirectional=true", "model.num_layers=2")
    x = torch.randn(BATCH, STEPS, INPUT)
    noisy = x.clone()
    for row, length in enumerate(LENGTHS):
        noisy[row, length:] = 100 * torch.randn(STEPS - length, INPUT)
    valid = torch.arange(STEPS)[None, :] < LENGTHS[:, None]
    with torch.no_grad():
        clean_out, clean_state = model(x, LENGTHS)
        noisy_out, noisy_state = model(noisy, LENGTHS)
    torch.testing.assert_close(clean_out[valid], noisy_out[valid], atol=1e-5, rtol=1e-5)
    for a, b in zip(as_tuple(clean_state), as_tuple(noisy_state)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_each_sequence_alone_equals_its_row_in_a_padded_batch(tmp_path, name):
    model = build(tmp_path, name, "model.bidirectional=true")
    x = torch.randn(BATCH, STEPS, INPUT)
    with torch.no_grad():
        batched, _ = model(x, LENGTHS)
        for row, length in enumerate(LENGTHS.tolist()):
            alone, _ = model(x[row : row + 1, :length])
            torch.testing.assert_close(batched[row, :length], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_carried_state_continues_the_sequence(tmp_path, name):
    model = build(tmp_path, name, "model.num_layers=2")
    if getattr(model, "num_directions", 1) > 1:
        pytest.skip("a bidirectional model reads the future: a prefix's state cannot continue the sequence")
    if not getattr(model, "continues_sequences", True):
        pytest.skip("its outputs depend on the whole input (an encoder-decoder reads the source first)")
    x = torch.randn(BATCH, STEPS, INPUT)
    with torch.no_grad():
        whole, _ = model(x)
        first, state = model(x[:, :4])  # 4 steps: whole windows for subsampling models (hsrnn: 2 levels x 2)
        second, _ = model(x[:, 4:], state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=1e-5)


def test_reverse_padded_reverses_within_each_length():
    x = torch.arange(12.0).view(2, 6, 1)
    reversed_ = reverse_padded(x, torch.tensor([6, 3]))
    assert reversed_[0, :, 0].tolist() == [5, 4, 3, 2, 1, 0]
    assert reversed_[1, :, 0].tolist() == [8, 7, 6, 9, 10, 11]  # padding stays where it was


@pytest.mark.parametrize("name", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_and_hand_written_paths_agree(tmp_path, name, bidirectional):
    model = build(tmp_path, name, "model.num_layers=2", f"model.bidirectional={str(bidirectional).lower()}")
    x = torch.randn(BATCH, STEPS, INPUT)
    with torch.no_grad():
        for lengths in (None, LENGTHS):
            model.use_fused = True
            fused, fused_state = model(x, lengths)
            model.use_fused = False
            cell, cell_state = model(x, lengths)
            torch.testing.assert_close(cell, fused, atol=1e-5, rtol=0)
            for a, b in zip(as_tuple(cell_state), as_tuple(fused_state)):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_sigmoid_elman_runs_the_hand_written_cell_and_matches_equation_1(tmp_path):
    model = build(tmp_path, "elman", "model.activation=sigmoid")
    assert not model.use_fused
    x = torch.randn(1, 1, INPUT)
    rnn = model.rnn
    expected_h = torch.sigmoid(x[0, 0] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + rnn.bias_hh_l0)
    with torch.no_grad():
        outputs, h = model(x)
    torch.testing.assert_close(h[0, 0], expected_h)
    torch.testing.assert_close(outputs[0, 0], model.readout(expected_h))


def test_param_budget_matches_within_five_percent(tmp_path):
    for name in ("elman", "lstm", "gru"):
        cfg = compose_config(tmp_path, [f"model={name}", "model.param_budget=30000", "model.num_layers=2"])
        count = sum(p.numel() for p in build_model(cfg.model, INPUT, OUTPUT).parameters())
        assert abs(count - 30000) <= 0.05 * 30000, (name, count)
