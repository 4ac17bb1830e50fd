"""What the task decides before the model exists, in one place the app calls (CONTRIBUTING.md, 'One path for every
run'): the model's input and output sizes, and the arguments the task needs beside the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.tasks.heads import HEADS, head_options


@dataclass(frozen=True)
class Wiring:
    input_size: int  # features per step the model reads
    output_size: int  # features per step the model writes
    task_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the task beside model, spec and optimizer


def task_wiring(task_cfg: Mapping, datamodule) -> Wiring:
    """The model's sizes for this task on this data.

    Input: token ids (``spec.input_vocab``) are embedded by the task first, so the model reads ``embedding_dim``
    features; otherwise the data's ``input_size``. Output (``task.head``): ``full`` reads the data's output_size;
    other heads read ``head_options.input`` (default ``embedding_dim``) features and get the ``unigram_counts`` of
    the training split (``datamodule.unigram_counts()``).
    """
    input_size = task_cfg.get("embedding_dim") if datamodule.task.input_vocab else datamodule.input_size
    name = task_cfg.get("head", "full")
    require_choice("head", name, HEADS)
    if name == "full":
        return Wiring(input_size, datamodule.output_size)
    features = head_options(task_cfg.get("head_options"))["input"]
    features = task_cfg.get("embedding_dim") if features is None else features
    require_positive(**{"head_options.input": features})
    if not hasattr(datamodule, "unigram_counts"):
        raise ConfigError(
            "head", f"{name} needs the training split's unigram counts; {type(datamodule).__name__} has no "
            "unigram_counts() (language-modelling data has: ptb_word, ptb_char, tinyshakespeare)"
        )
    return Wiring(input_size, features, {"unigram_counts": datamodule.unigram_counts()})
