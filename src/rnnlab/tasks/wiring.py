"""What the task decides before the model exists, in one place the app calls (CONTRIBUTING.md, 'One path for every
run'): the model's input and output sizes, and the output head the task receives beside the model."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from rnnlab.errors import ConfigError
from rnnlab.tasks.heads import OutputHead


@dataclass(frozen=True)
class Wiring:
    input_size: int  # features per step the model reads
    output_size: int  # features per step the model writes
    head: OutputHead | None = None  # the output layer over the vocabulary; None: the model's own readout


def task_wiring(
    task_cfg: Mapping, datamodule, make_head: Callable[[torch.Tensor], OutputHead] | None = None
) -> Wiring:
    """The model's sizes for this task on this data, and its head.

    Input: token ids (``spec.input_vocab``) are embedded by the task first, so the model reads ``embedding_dim``
    features; otherwise the data's ``input_size``. Output: without a head (``head=full``) the data's output_size;
    else ``make_head`` (the ``head`` group, given the training split's unigram counts) builds the head, and the model
    writes the ``features`` it reads.
    """
    input_size = task_cfg.get("embedding_dim") if datamodule.task.input_vocab else datamodule.input_size
    if make_head is None:
        return Wiring(input_size, datamodule.output_size)
    if not hasattr(datamodule, "unigram_counts"):
        raise ConfigError(
            "head", f"a head other than full needs the training split's unigram counts; {type(datamodule).__name__} "
            "has no unigram_counts() (language-modelling data has: ptb_word, ptb_char, tinyshakespeare)", full=True
        )
    head = make_head(datamodule.unigram_counts())
    return Wiring(input_size, head.features, head)


def takes_argument(task_class: type, name: str) -> bool:
    """Whether ``task_class(...)`` accepts ``name``: its ``__init__`` or, through ``**kwargs``, a base class's."""
    for klass in task_class.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        if name in parameters:
            return True
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
            return False
    return False


def refuse_what_the_task_cannot_take(task_class: type, rule: str, regularizers: Mapping) -> None:
    """A task that trains its own way (esn fits its readout in closed form) takes no ``training`` or
    ``regularizers``: refuse a learning rule other than bptt, and any regularizer, naming the group."""
    own_way = f"task {task_class.__name__} trains its own way"
    if rule != "bptt" and not takes_argument(task_class, "training"):
        raise ConfigError("training", f"is {rule}, but {own_way}; use training=bptt", full=True)
    if regularizers and not takes_argument(task_class, "regularizers"):
        raise ConfigError("regularizer", f"{own_way} and takes no regularizers; use regularizer=none", full=True)
