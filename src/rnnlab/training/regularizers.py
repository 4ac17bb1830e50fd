"""Regularizers of recurrent networks, composed from config: ``regularizer=[l2,zoneout]`` selects several options of
the ``regularizer`` group, each with its own keys (``regularizer.l2.weight=1e-4``); the resolved config records them.

Kinds, by how they reach the model (``SequenceTask`` attaches them once, at construction, through
:class:`Regularization`):

* loss penalties, added to the training loss (``train/loss`` stays the data loss; ``train/penalty`` is logged):
  :class:`L1`, :class:`L2` (survey eqs. 54-55), :class:`NormStabilizer` (eq. 57);
* inside the recurrence, through the network's :class:`~rnnlab.models.base.RecurrenceHook`: :class:`Dropout`
  (non-recurrent connections), :class:`RNNDrop`, :class:`Variational`, :class:`Zoneout` (eq. 58) and the hidden states
  that :class:`NormStabilizer` reads. A network with one of these runs its hand-written cells, never a fused
  cuDNN / ``nn.LSTM`` kernel (``implementation: auto`` switches by itself; ``fused`` raises ConfigError);
* on the weights, through ``torch.nn.utils.parametrize``: :class:`WeightDrop` (DropConnect), which keeps the fused
  kernel.

Which models host which (``tests/training/test_regularizers.py`` builds every ``conf/model`` with each):
l1 and l2 work with every model; weight_drop with every model that has parameters matching its ``weights`` patterns
(by default the fused families' ``weight_hh`` and the ``recurrent`` matrices most other families name so; see
:class:`WeightDrop`); dropout, rnndrop, variational, zoneout and norm_stabilizer with every ``RecurrentNetwork``
family (elman, lstm, gru and their presets, stacked and bidirectional, and the rest of the zoo built on it) and
raise ConfigError for models that are not (hsrnn and models with their own loops: multidimensional, convolutional,
tree and memory models). rnndrop, variational and zoneout also need a cell that steps through
``RecurrentCell.step`` (checked at the first forward). Every regularizer except zoneout is off at eval time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatch
from functools import partial

import torch
from torch import nn
from torch.nn.utils import parametrize

from rnnlab.errors import ConfigError
from rnnlab.models.base import (
    FusedRecurrentNetwork,
    RecurrenceHook,
    RecurrentCell,
    RecurrentNetwork,
    State,
    _TorchWeightsCell,
)


def require_probability(key: str, value: float, *, allow_one: bool = False) -> None:
    """Raise ConfigError unless ``value`` is in [0, 1) ([0, 1] with ``allow_one``)."""
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value and upper_ok):
        raise ConfigError(key, f"must be in [0, {'1]' if allow_one else '1)'}, got {value!r}")


def is_memory(state: State, k: int) -> bool:
    """Whether state tensor ``k`` is a real or complex activation (a step counter, e.g. the clockwork clock, is not)."""
    return k < len(state) and (state[k].is_floating_point() or state[k].is_complex())


def keep_mask(like: torch.Tensor, p: float, shape: tuple[int, ...] | None = None, rescale: bool = True) -> torch.Tensor:
    """Bernoulli(1 - p) mask of ``shape`` (default ``like``'s), real, on ``like``'s device; divided by 1 - p
    (inverted dropout) when ``rescale``."""
    dtype = like.real.dtype if like.is_complex() else like.dtype
    mask = torch.empty(shape or like.shape, dtype=dtype, device=like.device).bernoulli_(1.0 - p)
    return mask.div_(1.0 - p) if rescale else mask


class Regularizer:
    """One regularizer. ``attach(model, name)`` adapts the model once, at construction, and raises ConfigError when the
    model cannot host it; ``penalty(module)`` is the term added to the training loss (None when there is none)."""

    def attach(self, model: nn.Module, name: str) -> None:
        self.name = name

    def penalty(self, module: nn.Module) -> torch.Tensor | None:
        return None


class _WeightPenalty(Regularizer):
    """``weight`` * sum over the module's weights of ``term(w)``; biases (any name part starting with ``bias``) only
    with ``biases: true``. Weight decay stays the optimizer's (``optimizer.weight_decay``)."""

    def __init__(self, weight: float = 1e-4, biases: bool = False):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError("weight", f"must be a number >= 0, got {weight!r}")
        self.weight = weight
        self.biases = biases

    def penalized(self, module: nn.Module) -> list[torch.Tensor]:
        return [
            parameter
            for name, parameter in module.named_parameters()
            if parameter.requires_grad and (self.biases or not any(p.startswith("bias") for p in name.split(".")))
        ]

    @staticmethod
    def term(parameter: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, module):
        terms = [self.term(parameter) for parameter in self.penalized(module)]
        return self.weight * torch.stack(terms).sum() if terms else None


class L1(_WeightPenalty):
    """L1 penalty, lambda * sum_w |w| (survey eq. 54), lambda = ``weight``."""

    @staticmethod
    def term(parameter):
        return parameter.abs().sum()


class L2(_WeightPenalty):
    """L2 penalty, lambda * sum_w w^2 (survey eq. 55), lambda = ``weight``."""

    @staticmethod
    def term(parameter):
        return parameter.square().sum()


class _DropConnect(nn.Module):
    """Parametrization W -> W * M in training mode, M = Bernoulli(1 - p) / (1 - p) drawn at the first use after
    :class:`WeightDrop` clears ``mask`` (before every forward of the model); W itself in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.mask: torch.Tensor | None = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return weight
        if self.mask is None:
            self.mask = keep_mask(weight, self.p)
        return weight * self.mask


class WeightDrop(Regularizer):
    """DropConnect on the recurrent weight matrices (Wan et al. 2013; AWD-LSTM, Merity et al. 2017, section 2):
    every element of W_hh is zeroed with probability ``p`` (kept ones scaled by 1 / (1 - p)), one mask per matrix per
    forward pass (per batch), shared by every step and sequence of that batch; W_hh itself at eval time.

    ``weights``: fnmatch patterns on the model's parameter names (``model.named_parameters()``). The defaults cover
    ``weight_hh`` of the fused families (elman, lstm, gru and their presets, which keep their fused kernel) and the
    ``recurrent`` matrices of clockwork, ctrnn, leaky, deep / dt / do RNN, drnn, scrn, mrnn, orthogonal, goru,
    mdrnn, mdlstm and rcnn; other families name theirs (jordan ``*feedback.weight``, rhn ``*highway*weight``).
    Implemented as a ``torch.nn.utils.parametrize`` parametrization (after any the family has, e.g. orthogonal), so
    checkpoints of such a model store ``<module>.parametrizations.<name>.original``.
    """

    def __init__(self, p: float = 0.5, weights: Sequence[str] = ("*weight_hh*", "*recurrent*weight*")):
        require_probability("p", p)
        self.p = p
        self.patterns = list(weights)
        self.drops: list[_DropConnect] = []

    def attach(self, model, name):
        super().attach(model, name)
        targets = []
        for parameter_name, _ in model.named_parameters():
            # an already parametrized tensor (<owner>.parametrizations.<leaf>.original) is dropped as <owner>.<leaf>
            owner_name, _, rest = parameter_name.rpartition("parametrizations.")
            tensor_name = owner_name + rest.removesuffix(".original") if owner_name else parameter_name
            if tensor_name not in targets and any(fnmatch(tensor_name, pattern) for pattern in self.patterns):
                targets.append(tensor_name)
        if not targets:
            raise ConfigError(
                f"regularizer.{name}.weights",
                f"no parameter of model {type(model).__name__} matches {self.patterns}; "
                "list its recurrent matrices (names as in model.named_parameters())",
                full=True,
            )
        for target in targets:
            owner_name, _, leaf = target.rpartition(".")
            owner = model.get_submodule(owner_name)
            drop = _DropConnect(self.p)
            parametrize.register_parametrization(owner, leaf, drop)
            self.drops.append(drop)
        model.register_forward_pre_hook(self.resample)

    def resample(self, model: nn.Module, args) -> None:
        """Forward pre-hook: every dropped matrix draws a new mask at its next use."""
        for drop in self.drops:
            drop.mask = None


class _HookRegularizer(Regularizer, RecurrenceHook):
    """A regularizer acting inside a :class:`RecurrentNetwork` through its hook; off at eval time unless it says.

    ``step_order`` places its ``step`` in a chain of several: lower runs nearer the cell's own step.
    """

    step_order = 0

    def attach(self, model, name):
        super().attach(model, name)
        self.model_name = type(model).__name__
        if not isinstance(model, RecurrentNetwork):
            raise ConfigError(
                f"regularizer.{name}",
                f"model {self.model_name} is not a rnnlab RecurrentNetwork, so {name} cannot reach inside its "
                "recurrence; l1, l2 and weight_drop work with any model",
                full=True,
            )
        if isinstance(model, FusedRecurrentNetwork) and model.implementation == "fused":
            raise ConfigError(
                f"regularizer.{name}",
                f"model {self.model_name} has implementation=fused, whose kernel cannot host {name}; "
                "use implementation=auto or cell (the hand-written cell on the same weights)",
                full=True,
            )

    def active(self, network):
        return network.training

    def begin(self, network, x, lengths):
        self.training = network.training


class Dropout(_HookRegularizer):
    """Dropout on the non-recurrent connections only (Zaremba et al. 2014; survey Fig. 14): a new mask per element
    and step on the input of every layer (layer 0: the data) and on the output to the readout; the recurrent
    connection h_{t-1} -> h_t is never dropped. Adds to the model's own ``dropout`` (between layers) if both are set.
    """

    def __init__(self, p: float = 0.5):
        require_probability("p", p)
        self.p = p

    def layer_input(self, x, layer):
        return nn.functional.dropout(x, self.p, training=True)

    def readout_input(self, hidden):
        return nn.functional.dropout(hidden, self.p, training=True)


class RNNDrop(_HookRegularizer):
    """RNNDrop (Moon et al. 2015): one dropout mask per sequence, the same at every step, on the memory: the cell state
    c_t of a family that carries one (the second state tensor, if real: LSTM, scrn, drnn), else the hidden state h_t.

    m is Bernoulli(1 - p) in {0, 1}, not rescaled: the mask multiplies the carried state at every step, so an inverted
    dropout scale 1 / (1 - p) would compound to (1 - p)^-t; kept units run exactly as in the plain cell and dropped
    ones stay 0 for the whole sequence (Semeniuta et al. 2016, section 3, discuss this scaling). The mask multiplies the
    state the step returns, so the next step reads m * c_t. For an LSTM the h_t emitted at that step,
    o_t * tanh(c_t), is computed inside the step from the unmasked c_t (Moon et al. mask c_t before the output
    nonlinearity; the hook sees only the step's result). A new mask per batch (with stateful data: per segment).
    """

    per_step = True
    step_order = 2

    def __init__(self, p: float = 0.25):
        require_probability("p", p)
        self.p = p
        self.masks: dict[int, torch.Tensor] = {}

    def begin(self, network, x, lengths):
        super().begin(network, x, lengths)
        self.masks = {}

    def step(self, cell, index, step, projected, state, t):
        new = step(projected, state, t)
        k = 1 if is_memory(new, 1) else 0
        if index not in self.masks:
            self.masks[index] = keep_mask(new[k], self.p, rescale=False)
        return (*new[:k], new[k] * self.masks[index], *new[k + 1 :])


class Variational(_HookRegularizer):
    """Variational dropout (Gal & Ghahramani 2016, tied weights): one mask per sequence, the same at every step, on
    each layer's input x_t (``p_input``) and on the recurrent input h_{t-1} (``p_hidden``), per layer and direction.

    The hidden mask reaches h_{t-1} only where it enters the recurrent matrix product: for the fused families (elman,
    lstm, gru and presets) the step's product W_hh (m * h_{t-1}) + b_hh is computed here, so GRU's interpolation
    z_t * h_{t-1} keeps the true h_{t-1}; the LSTM's c_{t-1} is never masked. Other families get m * h_{t-1} as their
    state's first tensor, which is the same wherever h_{t-1} enters the step only through matrix products (LSTM
    variants, jordan, ...); where the step also carries h_{t-1} elementwise (leaky or gated updates), that term is
    masked too. A new mask per batch (with stateful data: per segment).
    """

    step_order = 0

    def __init__(self, p_input: float = 0.25, p_hidden: float = 0.25):
        require_probability("p_input", p_input)
        require_probability("p_hidden", p_hidden)
        self.p_input = p_input
        self.p_hidden = p_hidden
        self.per_step = p_hidden > 0
        self.masks: dict[int, torch.Tensor] = {}
        self.zero_weights: dict[int, torch.Tensor] = {}

    def begin(self, network, x, lengths):
        super().begin(network, x, lengths)
        self.masks, self.zero_weights = {}, {}

    def layer_input(self, x, layer):
        if self.p_input == 0:
            return x
        return x * keep_mask(x, self.p_input, (x.shape[0], 1, *x.shape[2:]))

    def step(self, cell, index, step, projected, state, t):
        h = state[0]
        if index not in self.masks:
            self.masks[index] = keep_mask(h, self.p_hidden)
        masked = h * self.masks[index]
        if getattr(step, "__func__", None) is _TorchWeightsCell.step:
            # cell_step meets h_{t-1} through linear(h, weight_hh, bias_hh) and elementwise terms; a zero weight_hh and
            # the masked product as a per-sequence bias ([B, G*H]) mask the product and nothing else.
            weight_hh = cell.weight("weight_hh")
            recurrent = nn.functional.linear(masked, weight_hh, cell.weight("bias_hh"))
            if index not in self.zero_weights:
                self.zero_weights[index] = torch.zeros_like(weight_hh)
            return cell.network.cell_step(projected, state, self.zero_weights[index], recurrent)
        return step(projected, (masked, *state[1:]), t)


class Zoneout(_HookRegularizer):
    """Zoneout (Krueger et al. 2017; survey eq. 58): each unit keeps its previous value with probability p, per unit
    and step,

        h_t = d_t * h_{t-1} + (1 - d_t) * h~_t,    d_t ~ Bernoulli(p)

    where h~_t is the cell's own update. (Survey eq. 58 prints 1 where h_{t-1} is meant.) At eval time the
    expectation p * h_{t-1} + (1 - p) * h~_t. ``p`` applies to the first state tensor (h_t), ``p_cell`` (default
    ``p``) to the second where the family carries a real one (the LSTM's c_t; Krueger et al. zone c and h at
    separate rates); further state tensors, and counters such as the clockwork clock, follow the cell. p = 0 is the
    plain model; p = 1 never updates the state.
    """

    per_step = True
    step_order = 1

    def __init__(self, p: float = 0.1, p_cell: float | None = None):
        require_probability("p", p, allow_one=True)
        if p_cell is not None:
            require_probability("p_cell", p_cell, allow_one=True)
        self.p = p
        self.p_cell = p if p_cell is None else p_cell

    def active(self, network):
        return True  # eval uses the expectation

    def step(self, cell, index, step, projected, state, t):
        new = step(projected, state, t)
        zoned = []
        for k, (update, previous) in enumerate(zip(new, state)):
            if k > 1 or not is_memory(new, k):
                zoned.append(update)
                continue
            p = self.p if k == 0 else self.p_cell
            if self.training:
                keep = torch.empty(update.shape, device=update.device).bernoulli_(p).bool()
                zoned.append(torch.where(keep, previous, update))
            else:
                zoned.append(p * previous + (1 - p) * update)
        return tuple(zoned)


class NormStabilizer(_HookRegularizer):
    """Norm stabilizer (Krueger & Memisevic 2016; survey eq. 57): beta * mean_t (||h_t||_2 - ||h_{t-1}||_2)^2.

    h_t is what each layer and direction emits at step t (``cell.output``, e.g. the LSTM's h_t); the mean runs over
    the T - 1 consecutive pairs of valid steps of every sequence in the batch (pairs in reading order; the initial
    state is not included), and the terms of all layers and directions are summed. Reads the hidden states of the
    latest training forward (recorded only with gradients on), so the model runs its hand-written cells.
    """

    def __init__(self, beta: float = 1.0):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
            raise ConfigError("beta", f"must be a number >= 0, got {beta!r}")
        self.beta = beta
        self.outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def active(self, network):
        return network.training and torch.is_grad_enabled()

    def begin(self, network, x, lengths):
        super().begin(network, x, lengths)
        self.outputs = []

    def cell_output(self, outputs, index, mask):
        self.outputs.append((outputs, mask))

    def penalty(self, module):
        if not self.outputs:
            return None
        total = 0.0
        for outputs, mask in self.outputs:
            norms = torch.linalg.vector_norm(outputs, dim=-1)  # [B, T]
            pairs = mask[:, 1:] & mask[:, :-1]
            squared = (norms[:, 1:] - norms[:, :-1]).square()
            total = total + torch.where(pairs, squared, 0.0).sum() / pairs.sum().clamp(min=1)
        self.outputs = []
        return self.beta * total


class _HookChain(RecurrenceHook):
    """Several hook regularizers as one network hook: inputs and readout inputs pass through each in turn; the step
    runs through every per-step one, the lowest ``step_order`` nearest the cell's own step."""

    def __init__(self, hooks: list[_HookRegularizer]):
        self.hooks = sorted(hooks, key=lambda hook: hook.step_order)
        self.live: list[_HookRegularizer] = []
        self.stepping: list[_HookRegularizer] = []
        self.stepped: set[int] = set()

    @property
    def per_step(self) -> bool:
        return bool(self.stepping)

    def active(self, network):
        return any(hook.active(network) for hook in self.hooks)

    def begin(self, network, x, lengths):
        self.live = [hook for hook in self.hooks if hook.active(network)]
        self.stepping = [hook for hook in self.live if hook.per_step]
        self.stepped = set()
        for hook in self.live:
            hook.begin(network, x, lengths)

    def layer_input(self, x, layer):
        for hook in self.live:
            x = hook.layer_input(x, layer)
        return x

    def step(self, cell: RecurrentCell, index: int, step, projected: torch.Tensor, state: State, t: int) -> State:
        self.stepped.add(index)
        for hook in self.stepping:
            step = partial(hook.step, cell, index, step)
        return step(projected, state, t)

    def cell_output(self, outputs, index, mask):
        if self.stepping and index not in self.stepped:
            names = ", ".join(hook.name for hook in self.stepping)
            raise ConfigError(
                f"regularizer.{self.stepping[0].name}",
                f"model {self.stepping[0].model_name} runs cell {index} without RecurrentCell.step, so {names} "
                "cannot act at its steps",
                full=True,
            )
        for hook in self.live:
            hook.cell_output(outputs, index, mask)

    def readout_input(self, hidden):
        for hook in self.live:
            hidden = hook.readout_input(hidden)
        return hidden


class Regularization:
    """The regularizers of one run, attached to its model: what ``SequenceTask`` holds.

    ``regularizers``: name -> :class:`Regularizer` (the ``regularizer`` config group, instantiated), or a list; names
    appear in error messages.
    """

    def __init__(
        self, model: nn.Module, regularizers: Mapping[str, Regularizer] | Sequence[Regularizer] | None = None
    ):
        if isinstance(regularizers, Mapping):
            self.regularizers = dict(regularizers.items())
        else:
            self.regularizers = {type(r).__name__.lower(): r for r in regularizers or ()}
        for name, regularizer in self.regularizers.items():
            if not isinstance(regularizer, Regularizer):
                raise ConfigError(f"regularizer.{name}", f"is {regularizer!r}, not a rnnlab Regularizer", full=True)
            regularizer.attach(model, name)
        hooks = [r for r in self.regularizers.values() if isinstance(r, _HookRegularizer)]
        if hooks:
            model.set_hook(_HookChain(hooks))

    def __bool__(self) -> bool:
        return bool(self.regularizers)

    def penalty(self, module: nn.Module) -> torch.Tensor | None:
        """The sum of every penalty for the latest training forward of ``module`` (None when none applies)."""
        terms = [term for r in self.regularizers.values() if (term := r.penalty(module)) is not None]
        return sum(terms[1:], terms[0]) if terms else None
