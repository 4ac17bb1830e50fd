"""Weight initialisation schemes, the ``init`` config group (``init=xavier``; survey III.A), applied after a model is
built (``rnnlab.wiring.build_model``).

Schemes, for every model of the zoo:

* ``default``: each family's own initialisation (torch's for the fused kernels), untouched.
* ``gaussian``: every weight matrix drawn from N(0, std^2), biases zero (the survey's 0.001 / 0.01).
* ``xavier``: Glorot & Bengio 2010 uniform for every weight matrix (recurrent matrices one square gate block at a
  time), biases zero.
* ``orthogonal``: each square block of the recurrent matrices orthogonal (Saxe et al. 2014); other weights untouched.
* ``identity``: recurrent blocks the identity, biases zero and the other weights N(0, std^2) (the IRNN of
  Le et al. 2015, which uses std 0.001).

``forget_bias`` (Gers et al. 2000; Jozefowicz et al. 2015 use 1.0) sets the forget-gate bias of every LSTM weight
set (``nn.LSTM`` / ``nn.LSTMCell`` layout, gates i, f, g, o): b_if = forget_bias, b_hf = 0.

A recurrent matrix is a 2-D weight named ``weight_hh*`` (torch's kernels) or held by a module called ``recurrent``
(the hand-written cells); convolution kernels count as other weights. Matrices under a parametrisation (the
orthogonal and unitary families keep theirs on a manifold) are never touched; ``orthogonal`` and ``identity`` refuse
a model that has no recurrent matrix left.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice, require_positive

INIT_SCHEMES = ("default", "gaussian", "xavier", "orthogonal", "identity")


def is_recurrent(name: str) -> bool:
    parts = name.split(".")
    return parts[-1].startswith("weight_hh") or (parts[-1] == "weight" and "recurrent" in parts[:-1])


def square_blocks(weight: torch.Tensor) -> list[torch.Tensor]:
    """A [k*H, H] recurrent matrix as its k square gate blocks (views); any other shape as itself."""
    rows, cols = weight.shape
    if rows % cols == 0:
        return list(weight.split(cols, dim=0))
    return [weight]


@torch.no_grad()
def initialize(model: nn.Module, scheme: str = "default", std: float = 0.01, forget_bias: float | None = None):
    """Re-initialise ``model``'s weights in place by ``scheme`` (module docstring); returns the model."""
    require_choice("scheme", scheme, INIT_SCHEMES)
    require_positive(std=std)
    if scheme != "default":
        matrices = [
            (name, p) for name, p in model.named_parameters() if p.dim() >= 2 and "parametrizations" not in name
        ]
        recurrent = [p for name, p in matrices if is_recurrent(name) and p.dim() == 2]
        if scheme in ("orthogonal", "identity") and not recurrent:
            raise ConfigError(
                "scheme", f"'{scheme}' sets recurrent matrices, and {type(model).__name__} has none it may change "
                "(its recurrence is parametrised, diagonal or absent); use default, gaussian or xavier"
            )
        for name, weight in matrices:
            if is_recurrent(name) and weight.dim() == 2:
                for block in square_blocks(weight):
                    {
                        "gaussian": lambda b: b.normal_(0.0, std),
                        "xavier": nn.init.xavier_uniform_,
                        "orthogonal": nn.init.orthogonal_,
                        "identity": nn.init.eye_,
                    }[scheme](block)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(weight)
            elif scheme in ("gaussian", "identity"):
                weight.normal_(0.0, std)
        if scheme != "orthogonal":
            for name, bias in model.named_parameters():
                if bias.dim() == 1 and name.split(".")[-1].startswith("bias"):
                    bias.zero_()
    if forget_bias is not None:
        set_forget_bias(model, forget_bias)
    return model


def set_forget_bias(model: nn.Module, value: float) -> None:
    """b_if = ``value``, b_hf = 0 in every LSTM weight set: ``nn.LSTM`` / ``nn.LSTMCell`` (gates i, f, g, o), or a
    module naming its stacked gates in ``gate_order`` (a Greff variant's ``GateRows``)."""
    gated = [(m, getattr(m, "gate_order", "ifgo")) for m in model.modules()
             if isinstance(m, (nn.LSTM, nn.LSTMCell)) or hasattr(m, "gate_order")]
    with_forget_gate = [(m, order) for m, order in gated if "f" in order]
    if not with_forget_gate:
        has = "LSTM weights without a forget gate" if gated else "none"
        raise ConfigError(
            "forget_bias", f"applies to LSTM forget gates (nn.LSTM / nn.LSTMCell), and {type(model).__name__} has {has}"
        )
    for lstm, order in with_forget_gate:
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_"):
                forget = bias.view(len(order), -1)[order.index("f")]
                forget.fill_(value if name.startswith("bias_ih") else 0.0)
