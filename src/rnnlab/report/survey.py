"""The survey's Tables II, III and IV as data: rows, the configs that measure them, and the claims data can judge.

Salehinejad, Sankar, Barfett, Colak and Valaee, "Recent Advances in Recurrent Neural Networks" (arXiv:1801.01078):
Table II compares learning methods, Table III the LSTM variants, Table IV the architectures with their advantages and
disadvantages. The qualitative cells below paraphrase the survey (and, for costs, the analyses it cites: Williams &
Zipser 1995 for BPTT/RTRL, Schmidhuber 1992 for the hybrid; Greff et al. 2017 for the LSTM variants); they are short
paraphrases, not quotations. Each row names the model configs (conf/model/<name>.yaml), learning rules
(``config.training.rule``) or optimizers (conf/optimizer) whose runs measure it; a name with no config matches no run.
How claims are judged: rnnlab.report.verdicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rnnlab.report.collect import config_value, training_rule


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
        keys += ["training.rule", "training"] if self.rules else []
        keys += ["optimizer"] if self.optimizers else []
        return keys + [key for key, _ in self.where]

    def describe(self) -> str:
        names = " ".join(["/".join(self.models), *(f"training.rule={r}" for r in self.rules),
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
    table: str  # "II", "III" or "IV"
    name: str
    selector: Selector
    survey: dict[str, str] = field(hash=False, compare=False)
    exponent: float | None = None  # Table II: the claimed time exponent per data point in N


def _row(table: str, name: str, selector: Selector, exponent: float | None = None, **survey: str) -> SurveyRow:
    return SurveyRow(table, name, selector, survey, exponent)


BPTT, TBPTT, RTRL, HYBRID = (Selector(rules=(r,)) for r in ("bptt", "tbptt", "rtrl", "hybrid"))
ELMAN = Selector(models=("elman",))
LSTM = Selector(models=("lstm",), where=(("model.variant", ("vanilla", None)),))
GRU = Selector(models=("gru",))
URNN = Selector(models=("urnn", "eurnn"))
EKF = Selector(optimizers=("ekf", "dekf"))
HESSIAN_FREE = Selector(optimizers=("hessian_free",))
FIRST_ORDER = Selector(optimizers=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"))
GREFF = {v: Selector(models=("lstm",), where=(("model.variant", (v,)),))
         for v in ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")}

TABLE_II = [
    _row("II", "BPTT", BPTT, 2.0,
         method="unfold the network in time and back-propagate the error through every step",
         complexity="O(N²) per time step; storage grows with the sequence length",
         advantages="exact gradient at the lowest cost per step",
         disadvantages="not online; stores the whole sequence; gradients vanish or explode over long spans"),
    _row("II", "Truncated BPTT", TBPTT, 2.0,
         method="BPTT over a window of the last h steps",
         complexity="O(N²) per time step for a fixed window h",
         advantages="online, with storage bounded by h",
         disadvantages="no credit assignment beyond h steps"),
    _row("II", "RTRL", RTRL, 4.0,
         method="carry the sensitivity of every state to every weight forward in time",
         complexity="O(N⁴) per time step; O(N³) storage",
         advantages="online exact gradient; storage independent of the sequence length",
         disadvantages="too costly for large networks"),
    _row("II", "Hybrid BPTT/RTRL", HYBRID, 3.0,
         method="RTRL every h steps, BPTT within each block (Schmidhuber 1992)",
         complexity="O(N³) per time step on average",
         advantages="online with fixed storage, cheaper than RTRL",
         disadvantages="more involved bookkeeping"),
    _row("II", "Extended Kalman filter", EKF,
         method="treat the weights as the state of a dynamical system estimated by an EKF",
         complexity="a covariance over all W weights: O(W²) per step (global EKF)",
         advantages="fast convergence in few passes",
         disadvantages="cost and memory quadratic in the number of weights"),
    _row("II", "Hessian-free optimization", HESSIAN_FREE,
         method="conjugate gradient on Gauss-Newton curvature-vector products (Martens & Sutskever 2011)",
         complexity="tens of forward/backward passes per update",
         advantages="copes with pathological curvature; long-term dependencies without gating",
         disadvantages="costly updates; damping to tune"),
    _row("II", "Evolutionary / global search", Selector(optimizers=("genetic", "cmaes")),
         method="population-based search over the weights (genetic algorithms and kin)",
         complexity="one forward pass per candidate per generation",
         advantages="needs no gradient; can escape local minima",
         disadvantages="scales poorly with the number of weights"),
]

TABLE_III = [
    _row("III", "LSTM, original (no forget gate)", Selector(models=("lstm",), where=(("model.forget_gate", (False,)),)),
         idea="memory cell with input and output gates (Hochreiter & Schmidhuber 1997)",
         note="constant error carousel; the cell cannot reset itself"),
    _row("III", "LSTM with forget gate", LSTM,
         idea="a forget gate resets the cell (Gers et al. 2000); survey eqs. 32-38",
         note="the standard LSTM the survey reviews"),
    _row("III", "NIG: no input gate", GREFF["nig"], idea="i_t = 1", note="Greff et al.: hurts performance"),
    _row("III", "NFG: no forget gate", GREFF["nfg"], idea="f_t = 1",
         note="Greff et al.: among the most harmful changes"),
    _row("III", "NOG: no output gate", GREFF["nog"], idea="o_t = 1", note="Greff et al.: hurts performance"),
    _row("III", "NIAF: no input activation", GREFF["niaf"], idea="g_t without tanh",
         note="Greff et al.: hurts performance"),
    _row("III", "NOAF: no output activation", GREFF["noaf"], idea="h_t = o_t * c_t",
         note="Greff et al.: among the most harmful changes"),
    _row("III", "NP: no peepholes", GREFF["np"], idea="gates do not read the cell",
         note="Greff et al.: no significant loss, fewer parameters"),
    _row("III", "CIFG: coupled input and forget gate", GREFF["cifg"], idea="f_t = 1 - i_t (GRU-like)",
         note="Greff et al.: no significant loss, fewer parameters"),
    _row("III", "FGR: full gate recurrence", GREFF["fgr"], idea="gates read all gates of the previous step",
         note="Greff et al.: no gain for many more parameters"),
    _row("III", "Stacked LSTM", Selector(models=("lstm",), where=(("model.num_layers", AtLeast(2)),)),
         idea="LSTM layers on top of each other", note="deeper representations; more to train"),
    _row("III", "Bidirectional LSTM", Selector(models=("blstm",)),
         idea="forward and backward LSTMs over the sequence", note="uses future context; not online"),
    _row("III", "S-LSTM (tree-structured)", Selector(models=("tree_lstm",)),
         idea="LSTM cells over a tree's children", note="hierarchical composition (e.g. parse trees)"),
    _row("III", "Multidimensional LSTM", Selector(models=("mdlstm",)),
         idea="one recurrence per data dimension", note="images and video; cost grows with the dimensions"),
    _row("III", "Grid LSTM", Selector(models=("grid_lstm",)),
         idea="LSTM cells along depth as well as time", note="gated paths in every dimension"),
    _row("III", "Differential RNN (dRNN)", Selector(models=("drnn",)),
         idea="gates driven by the derivative of the state (DoS)", note="salient spatio-temporal changes (actions)"),
    _row("III", "Local-global LSTM", Selector(), idea="local and global context combined in the cell",
         note="no config in this project"),
    _row("III", "Matching LSTM", Selector(), idea="LSTM over attention-matched sentence pairs (inference)",
         note="no config in this project"),
    _row("III", "Frequency-time LSTM", Selector(models=("ft_lstm",)),
         idea="an F-LSTM across frequency bands feeds a T-LSTM over time", note="speech recognition"),
]

TABLE_IV = [
    _row("IV", "Simple RNN (Elman)", ELMAN,
         advantages="simple; fewest parameters", disadvantages="vanishing and exploding gradients; short memory"),
    _row("IV", "Deep RNN", Selector(models=("deep_rnn", "dt_rnn", "dts_rnn", "do_rnn")),
         advantages="deep input-to-hidden, hidden-to-hidden and hidden-to-output transitions",
         disadvantages="longer gradient paths; harder to train"),
    _row("IV", "Bidirectional RNN", Selector(models=("brnn", "blstm", "bgru")),
         advantages="uses past and future context", disadvantages="needs the whole sequence; twice the computation"),
    _row("IV", "Recurrent CNN", Selector(models=("rcnn", "convlstm", "lrcn")),
         advantages="spatial features with temporal context", disadvantages="costly on large inputs"),
    _row("IV", "Multidimensional RNN", Selector(models=("mdrnn", "mdlstm")),
         advantages="recurrence over several dimensions (images, video)",
         disadvantages="cost grows with the number of dimensions"),
    _row("IV", "LSTM", LSTM,
         advantages="gated memory cell keeps the error flow; learns long-term dependencies",
         disadvantages="more parameters and computation than a simple RNN"),
    _row("IV", "GRU", GRU,
         advantages="fewer gates: fewer parameters and less memory than LSTM, comparable performance",
         disadvantages="no separate memory cell or output gate"),
    _row("IV", "Memory networks", Selector(models=("memn2n", "rmn")),
         advantages="explicit long-term memory for reasoning (question answering)",
         disadvantages="large memory; the original needs supervised memory access"),
    _row("IV", "Structurally constrained RNN (SCRN)", Selector(models=("scrn",)),
         advantages="slow context units give longer memory with few extra parameters",
         disadvantages="fixed-decay context"),
    _row("IV", "Unitary RNN", URNN,
         advantages="unitary recurrent matrix preserves the gradient norm: no vanishing or exploding",
         disadvantages="restricted parameterization; complex-valued arithmetic"),
    _row("IV", "Gated orthogonal recurrent unit (GORU)", Selector(models=("goru",)),
         advantages="orthogonal transitions with gates: long memory and forgetting",
         disadvantages="more computation than a uRNN"),
    _row("IV", "Hierarchical subsampling RNN", Selector(models=("hsrnn",)),
         advantages="subsampling shortens long sequences", disadvantages="fixed subsampling rates"),
]

ROWS = TABLE_II + TABLE_III + TABLE_IV
TABLES = {"II": ("Table II: learning methods", TABLE_II), "III": ("Table III: LSTM variants", TABLE_III),
          "IV": ("Table IV: architectures", TABLE_IV)}


@dataclass(frozen=True)
class Claim:
    """A survey claim that runs can judge: ``a`` vs ``b`` on ``quantity`` in the direction ``relation``.

    quantity: ``params`` | ``step_ms`` | ``peak_memory_mb`` | ``primary`` (the study's primary metric) |
              ``grad_ratio`` (log10 gradient ratio at the largest common lag) | ``reach`` | ``time_exponent``
    relation: ``less`` | ``greater`` (a than b) | ``worse`` | ``not_worse`` | ``similar`` (primary metric) |
              ``exponent`` (fitted exponent within ``tolerance`` of ``exponent``)
    """

    table: str
    subject: str
    text: str
    quantity: str
    relation: str
    a: Selector
    b: Selector | None = None
    exponent: float | None = None


CLAIMS = [
    *(Claim("II", row.name, f"{row.name} costs {row.survey['complexity'].split(';')[0]}",
            "time_exponent", "exponent", row.selector, exponent=row.exponent)
      for row in TABLE_II if row.exponent is not None),
    Claim("II", "RTRL", "RTRL costs more time per step than BPTT", "step_ms", "greater", RTRL, BPTT),
    Claim("II", "Hessian-free optimization", "a Hessian-free update costs more time than a first-order step",
          "step_ms", "greater", HESSIAN_FREE, FIRST_ORDER),
    Claim("II", "Extended Kalman filter", "an EKF update costs more time than a first-order step",
          "step_ms", "greater", EKF, FIRST_ORDER),
    Claim("III", "NFG: no forget gate", "removing the forget gate hurts performance", "primary", "worse",
          GREFF["nfg"], GREFF["vanilla"]),
    Claim("III", "NOAF: no output activation", "removing the output activation hurts performance", "primary",
          "worse", GREFF["noaf"], GREFF["vanilla"]),
    Claim("III", "CIFG: coupled input and forget gate", "coupling input and forget gates does not hurt performance",
          "primary", "not_worse", GREFF["cifg"], GREFF["vanilla"]),
    Claim("III", "CIFG: coupled input and forget gate", "CIFG has fewer parameters than the LSTM", "params", "less",
          GREFF["cifg"], GREFF["vanilla"]),
    Claim("III", "NP: no peepholes", "removing peepholes does not hurt performance", "primary", "not_worse",
          GREFF["np"], GREFF["vanilla"]),
    Claim("IV", "LSTM", "LSTM is more robust to vanishing gradients than a simple RNN", "grad_ratio", "greater",
          LSTM, ELMAN),
    Claim("IV", "LSTM", "LSTM learns longer-term dependencies than a simple RNN", "reach", "greater", LSTM, ELMAN),
    Claim("IV", "LSTM", "LSTM has more parameters than a simple RNN", "params", "greater", LSTM, ELMAN),
    Claim("IV", "LSTM", "LSTM costs more computation per step than a simple RNN", "step_ms", "greater", LSTM, ELMAN),
    Claim("IV", "GRU", "GRU has fewer parameters than LSTM", "params", "less", GRU, LSTM),
    Claim("IV", "GRU", "GRU uses less memory than LSTM", "peak_memory_mb", "less", GRU, LSTM),
    Claim("IV", "GRU", "GRU costs less computation per step than LSTM", "step_ms", "less", GRU, LSTM),
    Claim("IV", "GRU", "GRU performs comparably to LSTM", "primary", "similar", GRU, LSTM),
    Claim("IV", "GRU", "GRU is more robust to vanishing gradients than a simple RNN", "grad_ratio", "greater",
          GRU, ELMAN),
    Claim("IV", "Bidirectional RNN", "a bidirectional RNN costs more computation per step than a unidirectional one",
          "step_ms", "greater", Selector(models=("brnn",)), ELMAN),
    Claim("IV", "Unitary RNN", "a unitary RNN is more robust to vanishing gradients than a simple RNN", "grad_ratio",
          "greater", URNN, ELMAN),
    Claim("IV", "Unitary RNN", "a unitary RNN learns longer-term dependencies than a simple RNN", "reach", "greater",
          URNN, ELMAN),
    Claim("IV", "Structurally constrained RNN (SCRN)", "SCRN learns longer-term dependencies than a simple RNN",
          "reach", "greater", Selector(models=("scrn",)), ELMAN),
    Claim("IV", "Gated orthogonal recurrent unit (GORU)", "GORU learns longer-term dependencies than a simple RNN",
          "reach", "greater", Selector(models=("goru",)), ELMAN),
]
