"""Building a run from its composed config: datamodule, model, task, loggers, callbacks and trainer, in that order
(CONTRIBUTING.md, 'One path for every run'). ``rnnlab-train`` and ``rnnlab-bench`` build through here."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

import hydra
import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ProgressBar

from rnnlab.errors import ConfigError
from rnnlab.models.budget import BUDGET_KEY, hidden_size_for_budget
from rnnlab.models.compile import compile_cells
from rnnlab.tasks.wiring import refuse_what_the_task_cannot_take, takes_argument, task_wiring


@contextmanager
def config_errors(group: str):
    """Re-raise a ConfigError from building ``group`` with the key's full name (``model.hidden_size``)."""
    try:
        yield
    except ConfigError as error:
        raise error.with_prefix(group) from None
    except hydra.errors.InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__.with_prefix(group) from None
        raise


def make(cfg: DictConfig, group: str, **kwargs):
    with config_errors(group):
        return instantiate(OmegaConf.select(cfg, group), **kwargs)


def build_model(
    model_cfg: DictConfig, input_size: int, output_size: int, init: Callable | None = None, compile: bool = False
):
    """The model for the data's dims; ``param_budget`` (when set) picks its hidden_size, ``init`` (the ``init``
    group's ``initialize``; None keeps the family's own) its weights, and ``compile`` compiles its hand-written cells'
    steps (``rnnlab.models.compile``)."""
    model_cfg = model_cfg.copy()
    with open_dict(model_cfg):
        budget = model_cfg.pop(BUDGET_KEY, None)
    factory = partial(instantiate(model_cfg), input_size=input_size, output_size=output_size)
    if budget is not None:
        factory = partial(factory, hidden_size=hidden_size_for_budget(factory, budget))
    model = factory()
    if init is not None:
        with config_errors("init"):
            init(model)
    if compile:
        compile_cells(model)
    return model


def build(cfg: DictConfig, stats: pl.Callback):
    """Instantiate datamodule, model, task module, loggers and trainer (``stats`` among its callbacks)."""
    task_class = get_class(cfg.task._target_)
    arguments = training_arguments(cfg, task_class)  # before any data is read: a bad setting fails first
    datamodule = make(cfg, "data")
    with config_errors("data"):
        datamodule.prepare_data()
        datamodule.setup("fit")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    make_head = (lambda counts: make(cfg, "head", counts=counts)) if cfg.get("head") else None
    wiring = task_wiring(cfg.task, datamodule, make_head)
    init = make(cfg, "init")
    with config_errors("model"):
        model = build_model(cfg.model, wiring.input_size, wiring.output_size, init, compile=cfg.compile)
    if wiring.head is not None:
        arguments["head"] = wiring.head
    scheduler = make(cfg, "scheduler") if cfg.get("scheduler") else None
    optimizer = make(cfg, "optimizer")
    with config_errors("task"):
        module = instantiate(cfg.task)(
            model=model, spec=datamodule.task, optimizer=optimizer, scheduler=scheduler, **arguments
        )
    loggers = [make(cfg, "logger." + name) for name, node in (cfg.get("logger") or {}).items() if node]
    callbacks = [make(cfg, "callbacks." + name) for name, node in (cfg.get("callbacks") or {}).items() if node]
    bar = {} if any(isinstance(c, ProgressBar) for c in callbacks) or "enable_progress_bar" in cfg.trainer else {
        "enable_progress_bar": False  # the callbacks group chose none (callbacks=minimal): not Lightning's default
    }
    trainer = make(cfg, "trainer", logger=loggers or False, callbacks=[*callbacks, stats], **bar)
    return datamodule, module, loggers, trainer


def training_arguments(cfg: DictConfig, task_class: type) -> dict:
    """The ``training`` group's settings and the ``regularizer`` group's regularizers, as arguments of a task whose
    constructor takes them. A task that trains its own way (esn fits its readout in closed form) takes neither and
    refuses a learning rule other than bptt, and any regularizer."""
    training = make(cfg, "training") if cfg.get("training") else None
    regularizers = {name: make(cfg, f"regularizer.{name}") for name in cfg.get("regularizer") or {}}
    refuse_what_the_task_cannot_take(task_class, training.rule if training else "bptt", regularizers)
    arguments = {"training": training, "regularizers": regularizers}
    return {name: value for name, value in arguments.items() if takes_argument(task_class, name)}

