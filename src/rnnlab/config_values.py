"""Judge the composed config of a job before any data is read (:func:`check_values`, run by
:mod:`rnnlab.config_check` for every job of a command line).

Checked: non-finite numbers, the keys each ``_target_``'s constructor takes, the value rules of :data:`VALUE_RULES`,
the model's input layout against the data's, monitored metric names, and what cheap constructors refuse (the
datamodule, the regularizers, the learning rule on a model built for dummy sizes). What needs the data or the model's
real sizes (a negative ``model.hidden_size``) is checked when the run builds its objects, and recorded.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from hydra._internal.utils import _locate
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from rnnlab.conf_dir import CONF_DIR, group_options
from rnnlab.data.base import FRAMES_LAYOUT, SEQUENCE_LAYOUT
from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.budget import BUDGET_KEY

# ------------------------------------------------------------------ values of the composed config (before any data)


def check_values(config: DictConfig, typed: set[str] = frozenset(), gpu_here: bool = True) -> None:
    """Raise ConfigError for the first value of the composed ``config`` that the run would refuse only after reading
    its data, or never (and train on). ``typed``: the keys given on the command line; ``gpu_here``: the jobs run on
    this machine (a cluster launcher's do not), so ``trainer.accelerator=gpu`` needs a GPU here."""
    check_finite(config)
    for key, rule in VALUE_RULES.items():
        node = _raw_node(config, key)
        value = OmegaConf.select(config, key, throw_on_resolution_failure=False)
        if node is not None and not (node._is_interpolation() and value is None):  # None: resolved only in the run
            rule(key, value)
    check_budget(config)
    accelerator = OmegaConf.select(config, "trainer.accelerator")
    if gpu_here and accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", "needs a CUDA GPU, and torch finds none here; use cpu (or auto)")
    check_constructor_keys(config)
    check_model_reads_data(config)
    check_monitors(config)
    check_built(config, typed)


def _raw_node(config: DictConfig, key: str):
    """The node at ``key`` without resolving interpolations, or None if absent."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(config, parent_key) if parent_key else config
    if not isinstance(parent, DictConfig) or leaf not in parent:
        return None
    return parent._get_node(leaf)


def check_finite(node: DictConfig | ListConfig, path: str = "") -> None:
    """No NaN or infinity anywhere (interpolations are judged where they point), and no required value (``???``)
    left unset."""
    for key in range(len(node)) if isinstance(node, ListConfig) else node.keys():
        child = node._get_node(key)
        name = f"{path}.{key}" if path else str(key)
        if child._is_missing() and not isinstance(child, (DictConfig, ListConfig)):
            raise ConfigError(name, f"is required: give it on the command line ({name}=...)")
        if isinstance(child, (DictConfig, ListConfig)):
            if not (child._is_interpolation() or child._is_missing() or child._is_none()):
                check_finite(child, name)
        elif isinstance(child._value(), float) and not math.isfinite(child._value()):
            raise ConfigError(name, f"must be a finite number, got {child._value()}")


def _yaml(value: Any) -> str:
    """``value`` as YAML writes it (true, null)."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def at_least(low: float, integer: bool = False, also: tuple = ()) -> Callable[[str, Any], None]:
    """A value rule: a number (an integer) >= ``low``, or one of ``also``."""
    kind = "an integer" if integer else "a number"
    alternatives = "".join(f" or {_yaml(v)}" for v in also)

    def rule(key: str, value: Any) -> None:
        if any(value is v or (v is not None and value == v) for v in also):
            return
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not value >= low:
            raise ConfigError(key, f"must be {kind} >= {low}{alternatives}, got {value!r}")

    return rule


def positive(key: str, value: Any) -> None:
    require_positive(**{key: value})


def one_of(*allowed: str) -> Callable[[str, Any], None]:
    return lambda key, value: require_choice(key, value, allowed)


def devices(key: str, value: Any) -> None:
    """Lightning's ``devices``: a count >= 1, -1 (all), ``auto``, or device indices (a list, or "0,1")."""
    if isinstance(value, str) and value.strip() != "auto":
        parts = [part.strip() for part in value.strip().strip(",").split(",")]
        single = len(parts) == 1 and "," not in value and parts[0].lstrip("-").isdigit()
        value = int(parts[0]) if single else parts
    if isinstance(value, (list, ListConfig)):
        good = len(value) > 0 and all(str(v).isdigit() for v in value)
    else:
        count = isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or value == -1)
        good = value == "auto" or count
    if not good:
        raise ConfigError(key, f"must be a count >= 1, -1 (all), auto, or a list of device indices; got {value!r}")


devices.judges_type = True  # an int, a string or a list: the generic type check (like the default 1) does not apply

# Keys that torch and Lightning take as they are (rnnlab's own constructors check theirs, run by check_built); a key
# is judged where the composed config has it (optimizer=ekf has no lr).
VALUE_RULES: dict[str, Callable[[str, Any], None]] = {
    "seed": at_least(0, integer=True),
    "optimizer.lr": at_least(0),
    "optimizer.weight_decay": at_least(0),
    "optimizer.momentum": at_least(0),
    "scheduler.step_size": positive,
    "scheduler.gamma": positive,
    "scheduler.factor": positive,
    "scheduler.patience": at_least(0, integer=True),
    "trainer.max_epochs": at_least(1, integer=True, also=(-1, None)),
    "trainer.max_steps": at_least(1, integer=True, also=(-1,)),
    "trainer.gradient_clip_val": at_least(0, also=(None,)),
    "trainer.gradient_clip_algorithm": one_of("norm", "value"),
    "trainer.accelerator": one_of("cpu", "gpu", "cuda", "mps", "tpu", "auto"),
    "trainer.devices": devices,
    "trainer.num_nodes": positive,
    "trainer.log_every_n_steps": positive,
    "trainer.accumulate_grad_batches": positive,
    "trainer.limit_train_batches": positive,
    "trainer.limit_val_batches": at_least(0),
    "trainer.limit_test_batches": positive,
    "trainer.check_val_every_n_epoch": at_least(1, integer=True, also=(None,)),
}


def check_budget(config: DictConfig) -> None:
    """A run trains for some epochs or steps: never zero (an untrained model recorded as completed), never forever."""
    trainer = config.get("trainer")
    if isinstance(trainer, DictConfig) and trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1:
        raise ConfigError("trainer.max_epochs", "is -1 (no limit) with trainer.max_steps=-1: the run would never end; "
                          "set trainer.max_steps >= 1 or trainer.max_epochs >= 1")


# ------------------------------------------------------------------------------------- constructors' own keys


def _target(name: str) -> Any:
    """The class or function a ``_target_`` names (None if it cannot be imported: instantiation reports that)."""
    try:
        return _locate(name)
    except Exception:  # noqa: BLE001 - any import failure is the run's to report
        return None


@cache
def accepted_keys(target: Any) -> tuple[list[str], list[str]] | None:
    """(every keyword ``target`` takes, those with a default), following ``**kwargs`` up the class hierarchy to the
    first ``__init__`` that takes no more; None when any keyword is taken."""
    if inspect.isclass(target):
        functions = [cls.__dict__["__init__"] for cls in target.__mro__ if "__init__" in cls.__dict__]
    else:
        functions = [target]
    names: list[str] = []
    optional: list[str] = []
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        for p in parameters:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self" and p.name not in names:
                names.append(p.name)
                if p.default is not p.empty:
                    optional.append(p.name)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names, optional
    return None


def check_constructor_keys(node: DictConfig, path: str = "") -> None:
    """Every key of a node with a ``_target_`` is a keyword of that constructor (``+model.bogus=1`` is refused
    before the run, not after reading the data); the model (and a model nested in it) also takes the keys
    ``rnnlab.wiring.build_model`` reads (``param_budget``)."""
    target = None
    if "_target_" in node and not node._get_node("_target_")._is_interpolation():
        target = _target(str(node["_target_"]))
    accepted = accepted_keys(target) if target is not None else None
    if accepted is not None:
        names, optional = accepted
        # a model nested in the model (seq2seq's encoder / decoder) is a whole model config; seq2seq refuses a budget
        extra = (BUDGET_KEY,) if path == "model" or path.startswith("model.") else ()
        for key in map(str, node):
            if not key.startswith("_") and key not in names and key not in extra:
                takes = [f"{path}.{k}" for k in [*names, *extra] if k in optional or k in extra or k in node]
                raise ConfigError(f"{path}.{key}", f"unknown key: {target.__name__} takes {', '.join(takes)}")
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not (child._is_interpolation() or child._is_missing() or child._is_none()):
            check_constructor_keys(child, f"{path}.{key}" if path else str(key))


# ------------------------------------------------------------------------- the model reads what the data gives


def check_model_reads_data(config: DictConfig) -> None:
    """The model's ``input_layout`` (frames [B, T, C, H, W] or sequences [B, T, F]) is the data's under its config,
    and the batch keys it reads (``batch_keys``: trees, stories) are among those the data adds (``structure_keys``)."""
    model, data = (_target(str(OmegaConf.select(config, f"{g}._target_", default=""))) for g in ("model", "data"))
    if model is None or data is None or not hasattr(data, "input_layout"):
        return
    reads, gives = getattr(model, "input_layout", SEQUENCE_LAYOUT), data.input_layout(config.data)
    if reads == FRAMES_LAYOUT and gives != FRAMES_LAYOUT:
        raise ConfigError("model", f"{model.__name__} reads images or video {FRAMES_LAYOUT}, but {data.__name__} gives "
                          f"{gives}; data that gives frames: {', '.join(_frame_data())}")
    if gives == FRAMES_LAYOUT and reads == SEQUENCE_LAYOUT:
        key, value = next(iter(data.frames_with.items()))
        raise ConfigError(f"data.{key}", f"{_yaml(value)} gives frames {FRAMES_LAYOUT}, which {model.__name__} cannot "
                          f"read (it reads {SEQUENCE_LAYOUT}); models that read frames: {', '.join(_frame_models())}")
    needs = set(getattr(model, "batch_keys", ()))
    if needs and not needs <= set(data.structure_keys if config.data.get("structure") else ()):
        keys = ", ".join(model.batch_keys)
        if needs <= set(data.structure_keys):
            raise ConfigError("data.structure", f"must be true: {model.__name__} reads the batch keys {keys}")
        options = [f"data={name} data.structure=true" for name, cls in _group_targets("data")
                   if needs <= set(getattr(cls, "structure_keys", ()))]
        raise ConfigError("model", f"{model.__name__} reads the batch keys {keys}, which {data.__name__} does not "
                          f"give; use {' or '.join(options) or 'data that gives them'}")


def _group_targets(group: str) -> list[tuple[str, Any]]:
    """(config name, the class its ``_target_`` names) of every option of ``group`` (for hints in error messages)."""
    targets = [(name, OmegaConf.load(CONF_DIR / group / f"{name}.yaml").get("_target_"))
               for name in group_options(group)]
    return [(name, cls) for name, target in targets if target and (cls := _target(str(target))) is not None]


def _frame_data() -> list[str]:
    return [f"data={name} " + " ".join(f"data.{k}={_yaml(v)}" for k, v in cls.frames_with.items())
            for name, cls in _group_targets("data") if getattr(cls, "frames_with", None)]


def _frame_models() -> list[str]:
    return [f"model={name}" for name, cls in _group_targets("model")
            if getattr(cls, "input_layout", None) == FRAMES_LAYOUT]


# ------------------------------------------------------------------------------------------ monitored metrics


def check_monitors(config: DictConfig) -> None:
    """A callback's ``monitor`` is a ``<stage>/<name>`` the task logs while it trains (train, val), and
    ``optimized_metric`` one it logs at all (test too); names are the task class's ``logged_metrics``."""
    names = getattr(_target(str(OmegaConf.select(config, "task._target_", default=""))), "logged_metrics", None)
    if names is None:
        return
    for name, node in (config.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and node.get("monitor") is not None:
            check_metric(f"callbacks.{name}.monitor", node.monitor, ("train", "val"), names)
    if config.get("optimized_metric") is not None:
        check_metric("optimized_metric", config.optimized_metric, ("train", "val", "test"), names)


def check_metric(key: str, metric: Any, stages: tuple[str, ...], names: tuple[str, ...]) -> None:
    stage, _, name = str(metric).partition("/")
    if stage not in stages or name not in names:
        raise ConfigError(key, f"{metric!r} is not a metric of this run; allowed: <stage>/<name> with stage "
                          f"{' | '.join(stages)} and name {' | '.join(names)} (e.g. val/loss)")


# ------------------------------------------------------------------------------ cheap constructors, run at start


@contextmanager
def prefixed(prefix: str):
    """A ConfigError from building ``prefix`` names the key in full (``data.batch_size``); any other failure is left
    to the run, which records it."""
    try:
        yield
    except ConfigError as error:
        raise error.with_prefix(prefix) from None
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__.with_prefix(prefix) from None
    except Exception:  # noqa: BLE001, S110 - the run builds it again and records why it failed
        pass


def check_built(config: DictConfig, typed: set[str]) -> None:
    """Build what is cheap and reads no data: the datamodule (its files only checked when ``data.root`` is typed:
    a default root may exist only where the jobs run), each regularizer, the learning rule's settings; with a rule
    other than bptt or with regularizers, a model for dummy sizes to check that they fit it."""
    from rnnlab.tasks.wiring import refuse_what_the_task_cannot_take, takes_argument
    from rnnlab.training.regularizers import Regularization

    if "_target_" in (config.get("data") or {}):
        with prefixed("data"):
            datamodule = instantiate(config.data)
            if "data.root" in typed and hasattr(datamodule, "check_sources"):
                datamodule.check_sources()
    regularizers = {}
    for name in config.get("regularizer") or {}:
        with prefixed(f"regularizer.{name}"):
            regularizers[name] = instantiate(config.regularizer[name])
    settings = None
    if config.get("training"):
        with prefixed("training"):
            settings = instantiate(config.training)
    task_class = task_class_of(config)
    if len(regularizers) < len(config.get("regularizer") or {}):
        return  # one could not be built: the run reports it
    if task_class is not None:
        refuse_what_the_task_cannot_take(task_class, settings.rule if settings else "bptt", regularizers)
    trains = task_class is not None and takes_argument(task_class, "training")
    rule = settings.rule_class if settings is not None and trains else None
    regularizers = regularizers if task_class is not None and takes_argument(task_class, "regularizers") else {}
    if rule is None and not regularizers:
        return
    model = dummy_model(config.model)
    with prefixed("model"):  # keys are full (regularizer.<name>, training); other failures are the run's
        if model is not None:
            Regularization(model, regularizers)  # attaching refuses a model it cannot reach into
            if rule is not None:
                rule.check(model, regularizers)


def task_class_of(config: DictConfig) -> type | None:
    """The class the ``task`` group builds, or None when it cannot be found (the run reports why)."""
    try:
        return get_class(config.task._target_)
    except Exception:  # noqa: BLE001 - a task that cannot be found is the run's to report, with its record
        return None


def dummy_model(model_config: DictConfig) -> Any:
    """The configured model for input and output size 1, or None when it cannot be built so (the run reports why)."""
    model_config = model_config.copy()
    with open_dict(model_config):
        model_config.pop(BUDGET_KEY, None)
    try:
        return instantiate(model_config)(input_size=1, output_size=1)
    except Exception:  # noqa: BLE001 - a model that cannot be built is the run's to report, with its record
        return None
