"""The ``init`` group's schemes (survey III.A) and ``init.forget_bias``, applied through build_model to every family."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import compose_config
from rnnlab.conf_dir import CONF_DIR, group_options
from rnnlab.errors import ConfigError
from rnnlab.models.initialization import INIT_SCHEMES, initialize, is_recurrent
from rnnlab.wiring import build_model

IN, OUT = 3, 2


def build(tmp_path, name, *overrides):
    cfg = compose_config(tmp_path, [f"model={name}", "model.hidden_size=6", *overrides])
    torch.manual_seed(0)
    return build_model(cfg.model, IN, OUT, init=instantiate(cfg.init))


def recurrent_blocks(model):
    for name, weight in model.named_parameters():
        if weight.dim() == 2 and is_recurrent(name) and "parametrizations" not in name:
            yield from weight.split(weight.shape[1])


def test_the_init_group_offers_every_scheme_and_irnn_selects_identity(tmp_path):
    assert sorted(group_options("init")) == sorted(INIT_SCHEMES)
    for name in INIT_SCHEMES:
        assert OmegaConf.load(CONF_DIR / "init" / f"{name}.yaml").scheme == name
    assert compose_config(tmp_path, ["model=irnn"]).init.scheme == "identity"
    assert compose_config(tmp_path, ["model=irnn", "init=xavier"]).init.scheme == "xavier"  # the command line wins


@pytest.mark.parametrize("name", ["lstm", "gru", "elman", "deep_rnn", "scrn"])
def test_identity_sets_recurrent_blocks_to_i_zero_biases_and_small_inputs(tmp_path, name):
    model = build(tmp_path, name, "init=identity", "init.std=0.001")
    blocks = list(recurrent_blocks(model))
    assert blocks
    for block in blocks:
        torch.testing.assert_close(block, torch.eye(6), rtol=0, atol=0)
    for pname, p in model.named_parameters():
        if pname.split(".")[-1].startswith("bias"):
            assert not p.any(), pname
        elif p.dim() >= 2 and not is_recurrent(pname):
            assert p.std() < 0.003, pname  # N(0, 0.001^2): far below torch's U(-1/sqrt(H), 1/sqrt(H))


@pytest.mark.parametrize("name", ["lstm", "gru", "ctrnn"])
def test_orthogonal_blocks_are_orthogonal(tmp_path, name):
    model = build(tmp_path, name, "init=orthogonal")
    for block in recurrent_blocks(model):
        torch.testing.assert_close(block @ block.T, torch.eye(6), rtol=0, atol=1e-5)


def test_gaussian_std_matches_config_and_xavier_bound(tmp_path):
    model = build(tmp_path, "lstm", "init=gaussian", "init.std=0.01", "model.hidden_size=64")
    weights = torch.cat([p.flatten() for n, p in model.named_parameters() if p.dim() >= 2])
    assert abs(weights.std().item() - 0.01) < 0.0005 and abs(weights.mean().item()) < 0.0005
    model = build(tmp_path, "gru", "init=xavier")
    for block in recurrent_blocks(model):  # Glorot uniform bound sqrt(6 / (fan_in + fan_out)) of a square block
        assert block.abs().max() <= (6 / 12) ** 0.5


def test_forget_bias_sets_only_the_forget_gate(tmp_path):
    model = build(tmp_path, "lstm", "init.forget_bias=1.0", "model.num_layers=2")
    reference = build(tmp_path, "lstm", "model.num_layers=2")
    for (name, p), (_, q) in zip(model.rnn.named_parameters(), reference.rnn.named_parameters()):
        if name.startswith("bias_ih"):
            assert (p.view(4, -1)[1] == 1.0).all()
        if name.startswith("bias_hh"):
            assert not p.view(4, -1)[1].any()
        if name.startswith("bias"):
            keep = [0, 2, 3]
            torch.testing.assert_close(p.view(4, -1)[keep], q.view(4, -1)[keep])
    with pytest.raises(ConfigError, match="LSTM"):
        build(tmp_path, "gru", "init.forget_bias=1.0")


def test_default_is_untouched_and_bad_values_name_their_key(tmp_path):
    torch.manual_seed(0)
    plain = build(tmp_path, "gru")
    explicit = build(tmp_path, "gru", "init=default")
    for p, q in zip(plain.parameters(), explicit.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ConfigError) as error:
        initialize(plain, "uniformish")
    assert error.value.key == "scheme" and "orthogonal" in str(error.value)
    with pytest.raises(ConfigError) as error:
        build(tmp_path, "urnn", "init=orthogonal")  # unitary recurrence is parametrised: nothing to set
    assert error.value.key == "init.scheme"
