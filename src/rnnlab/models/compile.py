"""``compile: true``: the step of every hand-written recurrent cell runs under ``torch.compile``.

The Python loop over time stays (``RecurrentCell.run``); each cell's ``step`` is replaced by a compiled one, so one
step's pointwise work (gates, activations, the state update) becomes fused kernels, forward and backward. Shapes
are dynamic, so a new batch size (a last, smaller batch) does not compile again; no-grad evaluation and a first step
whose state needs no gradient each compile once more. Only :class:`~rnnlab.models.base.RecurrentCell` steps are
compiled; left as they are:

* torch's fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (``implementation: fused``, or ``auto`` where it picks them);
* whole-sequence kernels (one autograd node with a hand-written backward: ``rnnlab.models.kernels`` for the LSTM
  and GRU cells, and the families' own ``*_kernels`` modules): a cell whose ``run`` hands them the sequence calls
  its compiled ``step`` only under autocast or a per-step ``RecurrenceHook``;
* families without a ``RecurrentCell`` (multi-dimensional, grid, tree, memory networks, RCNN): a warning names the
  model, which runs uncompiled.

A cell whose step fails to compile is not an error: a warning names the model and the cell, and that cell runs its
eager step from then on. Only attributes that are not state are replaced, so ``state_dict`` keys (and checkpoints)
are the same with and without ``compile``. Where it pays: the README's section on ``compile``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from rnnlab.models.base import RecurrentCell, State, _TorchWeightsCell

log = logging.getLogger(__name__)


class CompiledStep:
    """A cell's ``step`` under ``torch.compile`` (whole graph, dynamic shapes), or its eager ``step`` once compiling
    has failed.

    ``reads_fused_weights``: the step reads its weights from a fused ``nn.RNNBase`` module, which Dynamo refuses to
    trace unless ``allow_rnn`` is set (only parameters are read, the fused kernel is never called).
    """

    def __init__(self, step: Callable[..., State], name: str, reads_fused_weights: bool):
        self.step = step
        self.name = name
        self.reads_fused_weights = reads_fused_weights
        self.compiled: Callable[..., State] | None = torch.compile(step, fullgraph=True, dynamic=True)

    def __call__(self, projected: torch.Tensor, state: State, t: int) -> State:
        if self.compiled is not None:
            try:
                if self.reads_fused_weights:
                    with torch._dynamo.config.patch(allow_rnn=True):
                        return self.compiled(projected, state, t)
                return self.compiled(projected, state, t)
            except torch._dynamo.exc.TorchDynamoException as error:
                reason = f"{type(error).__name__}: {next(iter(str(error).strip().splitlines()), '')}"
                log.warning("compile: %s failed to compile, runs uncompiled: %s", self.name, reason)
                self.compiled = None
        return self.step(projected, state, t)


def compile_cells(model: nn.Module) -> int:
    """Compile the ``step`` of every :class:`RecurrentCell` in ``model`` (see the module docstring); returns how
    many cells were compiled."""
    model_name = type(model).__name__
    cells = [(name, module) for name, module in model.named_modules() if isinstance(module, RecurrentCell)]
    if not cells:
        log.warning("compile: %s has no hand-written recurrent cell to compile; it runs uncompiled", model_name)
    for name, cell in cells:
        cell.step = CompiledStep(cell.step, f"{model_name}.{name}", isinstance(cell, _TorchWeightsCell))
    return len(cells)
