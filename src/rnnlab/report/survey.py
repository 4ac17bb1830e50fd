"""The survey's Tables II, III and IV as data: rows, the configs that measure them, and the claims data can judge.

Salehinejad, Sankar, Barfett, Colak and Valaee, "Recent Advances in Recurrent Neural Networks" (arXiv:1801.01078):
Table II compares learning methods (the exact-gradient rules BPTT, RTRL, FFP, GF and BU with their time complexity per
time step, for a network of N units), Table III the LSTM variants and Table IV the architectures, each with advantages
and disadvantages. The cells below are short paraphrases, not quotations. Every row, cell and claim names its source:
``"survey"`` for the survey's own tables and text; rows and claims that rnnlab measures but the survey does not make
(the LSTM variants of Greff et al. 2017, truncated BPTT, the original LSTM without forget gate) carry their own
citation and are never attributed to the survey. Each row names the model configs (conf/model/<name>.yaml), learning
rules (the ``training`` group) or optimizers (conf/optimizer) whose runs measure it; a name with no config matches
no run. How claims are judged: rnnlab.report.verdicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rnnlab.report.collect import config_value, training_rule

SURVEY = "survey"  # the source of a row, cell or claim taken from Salehinejad et al.'s tables or text


@dataclass(frozen=True)
class AtLeast:
    """A ``where`` test: the setting is a number >= ``value``."""

    value: float

    def __contains__(self, item: Any) -> bool:
        return isinstance(item, (int, float)) and not isinstance(item, bool) and item >= self.value

    def __str__(self) -> str:
        return f">={self.value:g}"


@dataclass(frozen=True)
class Selector:
    """Which runs stand for a survey row: model config names and/or training rules, and config settings.

    ``where`` pairs a dotted config key with its allowed values; ``None`` among them admits records without the key.
    """

    models: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    optimizers: tuple[str, ...] = ()
    where: tuple[tuple[str, Any], ...] = ()

    def matches(self, record: dict) -> bool:
        if not (self.models or self.rules or self.optimizers):
            return False  # a row with no config in this project
        if self.models and record.get("model") not in self.models:
            return False
        if self.rules and training_rule(record) not in self.rules:
            return False
        if self.optimizers and record.get("optimizer") not in self.optimizers:
            return False
        return all(config_value(record, key) in allowed for key, allowed in self.where)

    @property
    def config_keys(self) -> list[str]:
        """The config keys this selector tells runs apart by (what a compared pair may differ in)."""
        keys = ["model"] if self.models else []
        keys += ["training", "training.rule"] if self.rules else []  # training.rule: older records
        keys += ["optimizer"] if self.optimizers else []
        return keys + [key for key, _ in self.where]

    def describe(self) -> str:
        names = " ".join(["/".join(self.models), *(f"training={r}" for r in self.rules),
                          *(f"optimizer={o}" for o in self.optimizers)]).strip()
        if not names:
            return "no config"
        where = ", ".join(describe_where(key, allowed) for key, allowed in self.where)
        return f"{names} ({where})" if where else names


def describe_where(key: str, allowed: Any) -> str:
    return f"{key}={'|'.join(map(_show, allowed)) if isinstance(allowed, tuple) else allowed}"


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value) if not isinstance(value, str) else value


@dataclass(frozen=True)
class SurveyRow:
    """One row of a survey table: its qualitative cells (``survey``: column -> text) and the runs that measure it.

    ``source`` is where the row comes from (``"survey"``, or a citation for rows the survey lacks); ``sources`` names
    the source of single cells taken from elsewhere (column -> citation). ``exponent``: Table II's claimed time per
    data point (per time step) as a power of the network size N.
    """

    table: str  # "II", "III" or "IV"
    name: str
    selector: Selector
    survey: dict[str, str] = field(hash=False, compare=False)
    exponent: float | None = None
    source: str = SURVEY
    sources: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def cell_source(self, column: str) -> str:
        return self.sources.get(column, self.source)

    def cell(self, column: str) -> str:
        """The cell's text, with its source in brackets when that differs from the row's."""
        text, source = self.survey[column], self.cell_source(column)
        return text if source == self.source or text in ("", "-") else f"{text} [{source}]"


def _row(table: str, name: str, selector: Selector, exponent: float | None = None, *, source: str = SURVEY,
         sources: dict[str, str] | None = None, **survey: str) -> SurveyRow:
    return SurveyRow(table, name, selector, survey, exponent, source, dict(sources or {}))


BPTT, TBPTT, RTRL, BU, FFP, GF = (Selector(rules=(r,)) for r in ("bptt", "tbptt", "rtrl", "bu", "ffp", "gf"))
ELMAN = Selector(models=("elman",))
LSTM = Selector(models=("lstm",), where=(("model.variant", ("vanilla", None)),))
GRU = Selector(models=("gru",))
URNN = Selector(models=("urnn", "eurnn"))
SCRN = Selector(models=("scrn",))
GORU = Selector(models=("goru",))
HSRNN = Selector(models=("hsrnn",))
BLSTM = Selector(models=("blstm",))
# LSTM and simple RNN sized by hidden_size, not matched to a parameter budget: "the same hidden size"
LSTM_SIZED = Selector(models=("lstm",), where=(("model.variant", ("vanilla", None)), ("model.param_budget", (None,))))
ELMAN_SIZED = Selector(models=("elman",), where=(("model.param_budget", (None,)),))
EKF = Selector(optimizers=("ekf", "dekf"))
HESSIAN_FREE = Selector(optimizers=("hessian_free",))
FIRST_ORDER = Selector(optimizers=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"))
GREFF = {v: Selector(models=("lstm",), where=(("model.variant", (v,)),))
         for v in ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")}
GREFF_2017 = "Greff et al. 2017"

TABLE_II = [
    _row("II", "BPTT", BPTT, 2.0,
         method="unfold the network in time and back-propagate the error through the unfolded network",
         complexity="O(N²) per time step; storage grows with the sequence length",
         advantages="exact gradient at the lowest cost per time step",
         disadvantages="offline: the whole sequence is stored before the backward pass"),
    _row("II", "Truncated BPTT", TBPTT, 2.0, source="Williams & Peng 1990",  # rnnlab's addition to Table II
         method="BPTT over a window of the last h steps, repeated every few steps",
         complexity="O(N²) per time step for a fixed window h",
         advantages="online, with storage bounded by the window",
         disadvantages="no credit assignment beyond the window"),
    _row("II", "RTRL", RTRL, 4.0,
         method="carry the sensitivity of every unit to every weight forward in time (Williams & Zipser 1989)",
         complexity="O(N⁴) per time step; O(N³) storage",
         advantages="online exact gradient; storage independent of the sequence length",
         disadvantages="computation grows as N⁴: too costly for large networks"),
    _row("II", "FFP: fast forward propagation", FFP,  # no training file: its recursion was not available to us
         method="adjoint sensitivity equations integrated forward in time, online (Toomarian & Barhen 1991, 1992)",
         complexity="not checked here: the equations and the cost analysis were not available to this project",
         advantages="online exact gradient", disadvantages="not checked here"),
    _row("II", "GF: Green's function", GF, 3.0,
         method="solve forward in time for the Green's function of the sensitivity equation instead of the full "
                "sensitivity matrix (Sun, Chen & Lee 1992)",
         complexity="O(N³) per time step",
         advantages="online, one order of N cheaper than RTRL",
         disadvantages="still an order of N costlier per step than BPTT"),
    _row("II", "BU: block update", BU, 3.0,
         method="BPTT within blocks of h steps, RTRL-style sensitivities carried across the blocks "
                "(Schmidhuber 1992's BPTT/RTRL hybrid)",
         complexity="O(N³) per time step on average; O(N³) storage",
         advantages="online exact gradient with fixed-size storage, cheaper than RTRL",
         disadvantages="costlier per step than BPTT"),
    _row("II", "Extended Kalman filter", EKF,
         method="treat the weights as the state of a dynamical system estimated by an extended Kalman filter",
         complexity="a covariance over all W weights: O(W²) per step (global EKF)",
         advantages="fast convergence in few passes",
         disadvantages="cost and memory quadratic in the number of weights"),
    _row("II", "Hessian-free optimization", HESSIAN_FREE,
         method="conjugate gradient on Gauss-Newton curvature-vector products (Martens & Sutskever 2011)",
         complexity="tens of forward/backward passes per update",
         advantages="copes with pathological curvature; long-term dependencies without gating",
         disadvantages="costly updates"),
    _row("II", "Evolutionary / global search", Selector(optimizers=("genetic", "cmaes")),
         method="population-based search over the weights (genetic algorithms and kin)",
         complexity="one forward pass per candidate per generation",
         advantages="needs no gradient",
         disadvantages="may get stuck in local minima"),
]

TABLE_III = [
    _row("III", "LSTM, original (no forget gate)", Selector(models=("lstm",), where=(("model.forget_gate", (False,)),)),
         source="Hochreiter & Schmidhuber 1997; Gers et al. 2000",  # rnnlab's addition to Table III
         advantages="constant error carousel: error flows unchanged through the memory cell over long lags",
         disadvantages="the cell cannot reset itself, so its state can grow on long continual input"),
    _row("III", "LSTM", LSTM,
         advantages="gated memory cell (input, forget and output gates) learns long-term dependencies and eases "
                    "vanishing gradients",
         disadvantages="more parameters, memory and computation than a simple RNN"),
    _row("III", "NIG: no input gate", GREFF["nig"], source=GREFF_2017,
         advantages="fewer parameters (i_t = 1)", disadvantages="significantly worse performance"),
    _row("III", "NFG: no forget gate", GREFF["nfg"], source=GREFF_2017,
         advantages="fewer parameters (f_t = 1)", disadvantages="one of the two most harmful changes"),
    _row("III", "NOG: no output gate", GREFF["nog"], source=GREFF_2017,
         advantages="fewer parameters (o_t = 1)", disadvantages="significantly worse performance"),
    _row("III", "NIAF: no input activation", GREFF["niaf"], source=GREFF_2017,
         advantages="simpler block input (no tanh)", disadvantages="significantly worse performance"),
    _row("III", "NOAF: no output activation", GREFF["noaf"], source=GREFF_2017,
         advantages="simpler output (h_t = o_t * c_t)",
         disadvantages="one of the two most harmful changes: the unbounded cell state reaches the output"),
    _row("III", "NP: no peepholes", GREFF["np"], source=GREFF_2017,
         advantages="fewer parameters with no significant loss", disadvantages="none significant"),
    _row("III", "CIFG: coupled input and forget gate", GREFF["cifg"], source=GREFF_2017,
         advantages="f_t = 1 - i_t: fewer parameters and less computation with no significant loss",
         disadvantages="none significant"),
    _row("III", "FGR: full gate recurrence", GREFF["fgr"], source=GREFF_2017,
         advantages="gates read all gates of the previous step",
         disadvantages="many more parameters for no significant gain"),
    _row("III", "S-LSTM (tree-structured)", Selector(models=("tree_lstm",)),
         advantages="composes a tree's children: hierarchical structure such as parse trees",
         disadvantages="needs the tree structure of every input; more complex than a chain LSTM"),
    _row("III", "Stacked LSTM", Selector(models=("lstm",), where=(("model.num_layers", AtLeast(2)),)),
         advantages="LSTM layers on top of each other learn deeper, hierarchical temporal representations",
         disadvantages="more parameters and computation; harder to train"),
    _row("III", "Bidirectional LSTM", BLSTM,
         advantages="uses past and future context at every step",
         disadvantages="needs the whole sequence (not online); about twice the computation"),
    _row("III", "Multidimensional LSTM", Selector(models=("mdlstm",)),
         advantages="one recurrence per data dimension: images, video and other multidimensional data",
         disadvantages="becomes unstable as the grid size and the depth grow"),
    _row("III", "Grid LSTM", Selector(models=("grid_lstm",)),
         advantages="LSTM cells along depth as well as time: gated paths in every dimension, stable in depth",
         disadvantages="more computation and memory per step"),
    _row("III", "Differential RNN (dRNN)", Selector(models=("drnn",)),
         advantages="gates driven by the derivative of the states (DoS) pick out salient spatio-temporal changes "
                    "(human actions)",
         disadvantages="extra computation for the state derivatives; tailored to action recognition"),
    _row("III", "Local-global LSTM", Selector(),
         advantages="local and global context combined in the cell (semantic object parsing)",
         disadvantages="no config in this project"),
    _row("III", "Matching LSTM", Selector(),
         advantages="word-by-word matching of a sentence pair (natural language inference)",
         disadvantages="no config in this project"),
    _row("III", "Frequency-time LSTM", Selector(models=("ft_lstm",)),
         advantages="an F-LSTM across frequency bands feeds a T-LSTM over time (speech recognition)",
         disadvantages="more computation than an LSTM over time alone"),
]

TABLE_IV = [
    _row("IV", "Simple RNN (Elman)", ELMAN,  # the survey's section II; the baseline of Table IV's comparisons
         advantages="simple; fewest parameters", disadvantages="vanishing and exploding gradients; short memory"),
    _row("IV", "Deep RNN", Selector(models=("deep_rnn", "dt_rnn", "dts_rnn", "do_rnn")),
         advantages="deep input-to-hidden, hidden-to-hidden and hidden-to-output functions learn more abstract "
                    "representations",
         disadvantages="longer gradient paths: harder to train; more computation"),
    _row("IV", "Bidirectional RNN", Selector(models=("brnn", "blstm", "bgru")),
         advantages="uses past and future context", disadvantages="needs the whole sequence; twice the computation"),
    _row("IV", "Recurrent CNN", Selector(models=("rcnn", "convlstm", "lrcn")),
         advantages="recurrent convolutions give spatial features with context (images, video)",
         disadvantages="costly on large inputs"),
    _row("IV", "Multidimensional RNN", Selector(models=("mdrnn", "mdlstm")),
         advantages="recurrence along every dimension of the data (images, video)",
         disadvantages="cost grows with the number of dimensions"),
    _row("IV", "LSTM", LSTM,
         advantages="gated memory cell keeps the error flow: learns long-term dependencies",
         disadvantages="about four times the parameters of a simple RNN; more memory and computation"),
    _row("IV", "GRU", GRU,
         advantages="fewer gates: fewer parameters and less memory than LSTM, comparable performance",
         disadvantages="no separate memory cell and no output gate"),
    _row("IV", "Memory networks", Selector(models=("memn2n", "rmn")),
         advantages="explicit long-term memory for reasoning (question answering)",
         disadvantages="large memory; the original needs supervision of the memory access"),
    _row("IV", "Structurally constrained RNN (SCRN)", SCRN,
         advantages="slowly changing context units: longer memory, less vanishing gradient, few extra parameters",
         disadvantages="fixed decay of the context units"),
    _row("IV", "Unitary RNN", URNN,
         advantages="unitary recurrent matrix keeps the gradient norm: no vanishing or exploding gradients",
         disadvantages="restricted parameterization of the recurrent matrix; complex-valued arithmetic"),
    _row("IV", "Gated orthogonal recurrent unit (GORU)", GORU,
         advantages="orthogonal transitions with gates: remembers over long spans and can forget; less vanishing "
                    "gradient",
         disadvantages="more computation than a uRNN"),
    _row("IV", "Hierarchical subsampling RNN", HSRNN,
         advantages="subsampling shortens long sequences, so gradients cross fewer steps",
         disadvantages="fixed subsampling rates"),
]

ROWS = TABLE_II + TABLE_III + TABLE_IV
TABLES = {"II": ("Table II: learning methods", TABLE_II), "III": ("Table III: LSTM variants", TABLE_III),
          "IV": ("Table IV: architectures", TABLE_IV)}


@dataclass(frozen=True)
class Claim:
    """A claim that runs can judge: ``a`` vs ``b`` on ``quantity`` in the direction ``relation``.

    quantity: ``params`` (trainable parameter count) | ``model_memory_mb`` (the allocator's peak for the model's own
              training step; every memory claim) | ``flops_per_step`` (FLOPs of one training step counted by
              torch.utils.flop_counter; "computation per step" claims) | ``cpu_ms_per_step`` (CPU time per step at 1
              thread; "time per step/update" claims) | ``primary`` (the study's primary metric) | ``grad_ratio``
              (log10 gradient ratio at the largest common lag) | ``reach`` (longest task length solved) |
              ``time_exponent`` (fitted exponent of time per data point against N)
    relation: ``less`` | ``greater`` (a than b) | ``worse`` | ``not_worse`` | ``similar`` (primary metric) |
              ``exponent`` (fitted exponent within the tolerance of ``exponent``) |
              ``ratio`` (a / b within ``factor`` * (1 ± ``tolerance``), paired arms)
    source:   ``"survey"`` for the survey's claims; another paper's citation for claims the survey does not make.
    """

    table: str
    subject: str
    text: str
    quantity: str
    relation: str
    a: Selector
    b: Selector | None = None
    exponent: float | None = None
    source: str = SURVEY
    factor: float | None = None
    tolerance: float | None = None


def _complexity_claim(row: SurveyRow) -> Claim:
    return Claim("II", row.name, f"{row.name} costs {row.survey['complexity'].split(';')[0]}", "time_exponent",
                 "exponent", row.selector, exponent=row.exponent, source=row.source)


CLAIMS = [
    *(_complexity_claim(row) for row in TABLE_II if row.exponent is not None),
    Claim("II", "RTRL", "RTRL costs more time per step than BPTT", "cpu_ms_per_step", "greater", RTRL, BPTT),
    *(Claim("II", name, f"{short} costs less time per step than RTRL", "cpu_ms_per_step", "less", rule, RTRL)
      for name, short, rule in (("GF: Green's function", "GF", GF),
                                ("BU: block update", "BU", BU))),
    Claim("II", "Hessian-free optimization", "a Hessian-free update costs more time than a first-order step",
          "cpu_ms_per_step", "greater", HESSIAN_FREE, FIRST_ORDER),
    Claim("II", "Extended Kalman filter", "an EKF update costs more time than a first-order step",
          "cpu_ms_per_step", "greater", EKF, FIRST_ORDER),
    Claim("III", "NFG: no forget gate", "removing the forget gate hurts performance", "primary", "worse",
          GREFF["nfg"], GREFF["vanilla"], source=GREFF_2017),
    Claim("III", "NOAF: no output activation", "removing the output activation hurts performance", "primary",
          "worse", GREFF["noaf"], GREFF["vanilla"], source=GREFF_2017),
    Claim("III", "CIFG: coupled input and forget gate", "coupling input and forget gates does not hurt performance",
          "primary", "not_worse", GREFF["cifg"], GREFF["vanilla"], source=GREFF_2017),
    Claim("III", "CIFG: coupled input and forget gate", "CIFG has fewer parameters than the LSTM", "params", "less",
          GREFF["cifg"], GREFF["vanilla"], source=GREFF_2017),
    Claim("III", "NP: no peepholes", "removing peepholes does not hurt performance", "primary", "not_worse",
          GREFF["np"], GREFF["vanilla"], source=GREFF_2017),
    Claim("III", "Bidirectional LSTM", "a bidirectional LSTM costs more computation per step than an LSTM",
          "flops_per_step", "greater", BLSTM, LSTM),
    Claim("IV", "LSTM", "LSTM is more robust to vanishing gradients than a simple RNN", "grad_ratio", "greater",
          LSTM, ELMAN),
    Claim("IV", "LSTM", "LSTM learns longer-term dependencies than a simple RNN", "reach", "greater", LSTM, ELMAN),
    Claim("IV", "LSTM", "LSTM has more parameters than a simple RNN", "params", "greater", LSTM, ELMAN),
    Claim("IV", "LSTM", "a typical LSTM has about four times the parameters of a simple RNN of the same hidden size",
          "params", "ratio", LSTM_SIZED, ELMAN_SIZED, factor=4.0, tolerance=0.15),
    Claim("IV", "LSTM", "LSTM uses more memory than a simple RNN", "model_memory_mb", "greater", LSTM, ELMAN),
    Claim("IV", "LSTM", "LSTM costs more computation per step than a simple RNN", "flops_per_step", "greater", LSTM,
          ELMAN),
    Claim("IV", "GRU", "GRU has fewer parameters than LSTM", "params", "less", GRU, LSTM),
    Claim("IV", "GRU", "GRU uses less memory than LSTM", "model_memory_mb", "less", GRU, LSTM),
    Claim("IV", "GRU", "GRU performs comparably to LSTM", "primary", "similar", GRU, LSTM),
    Claim("IV", "GRU", "GRU is more robust to vanishing gradients than a simple RNN", "grad_ratio", "greater",
          GRU, ELMAN),
    Claim("IV", "Bidirectional RNN", "a bidirectional RNN costs more computation per step than a unidirectional one",
          "flops_per_step", "greater", Selector(models=("brnn",)), ELMAN),
    Claim("IV", "Unitary RNN", "a unitary RNN is more robust to vanishing gradients than a simple RNN", "grad_ratio",
          "greater", URNN, ELMAN),
    Claim("IV", "Unitary RNN", "a unitary RNN learns longer-term dependencies than a simple RNN", "reach", "greater",
          URNN, ELMAN),
    Claim("IV", "Structurally constrained RNN (SCRN)", "SCRN is more robust to vanishing gradients than a simple RNN",
          "grad_ratio", "greater", SCRN, ELMAN),
    Claim("IV", "Structurally constrained RNN (SCRN)", "SCRN learns longer-term dependencies than a simple RNN",
          "reach", "greater", SCRN, ELMAN),
    Claim("IV", "Gated orthogonal recurrent unit (GORU)",
          "GORU is more robust to vanishing gradients than a simple RNN", "grad_ratio", "greater", GORU, ELMAN),
    Claim("IV", "Gated orthogonal recurrent unit (GORU)", "GORU learns longer-term dependencies than a simple RNN",
          "reach", "greater", GORU, ELMAN),
    Claim("IV", "Hierarchical subsampling RNN",
          "a hierarchical subsampling RNN is more robust to vanishing gradients than a simple RNN", "grad_ratio",
          "greater", HSRNN, ELMAN),
]
