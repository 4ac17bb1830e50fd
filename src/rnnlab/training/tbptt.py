"""Truncated BPTT(k2; k1) (Williams & Peng 1990), the learning rule ``training=tbptt``
(:mod:`rnnlab.training.rules`)."""

from __future__ import annotations

import torch

from rnnlab.training.manual import ManualRule, detached, rule_error, window_loss


class TBPTT(ManualRule):
    """Truncated BPTT(k2; k1) (Williams & Peng 1990): an update every k1 steps, backpropagated k2 steps back.

    The update at step e scores steps [e - k1, e) and backpropagates to max(0, e - k2): it re-runs the network from
    the (detached) state at e - k2 with the current weights, so the gradient is exactly that of the truncated graph
    at those weights. With k2 = k1 each step runs forward once (chunked BPTT); with k2 > k1 about k2 / k1 times.
    The last window of a batch may be shorter. Any model whose ``forward(x, lengths, state)`` carries ``state``
    works; sequences that ended before a chunk read one padding step there, which no loss sees.
    """

    name = "tbptt"

    def __init__(self, settings, task):
        super().__init__(settings, task)
        self.k1 = settings.k1
        self.k2 = settings.k2 or settings.k1

    @classmethod
    def check(cls, model, regularizers):
        super().check(model, regularizers)
        if getattr(model, "num_directions", 1) > 1 or getattr(model, "bidirectional", False):
            raise rule_error(f"tbptt runs forward in time; a bidirectional model ({type(model).__name__}) reads the "
                             "future")

    def forward(self, task, batch: dict, start: int, stop: int, state):
        """The model on steps [start, stop) from ``state``: outputs [B, stop - start, C] and the state at ``stop``."""
        inputs = batch["inputs"][:, start:stop]
        if task.embedding is not None:
            inputs = task.embedding(inputs)  # embedded per chunk: each update's graph is its own
        lengths = (batch["lengths"] - start).clamp(1, stop - start)
        return task.model(inputs, lengths, state=state)

    def run(self, task, batch, update):
        steps = batch["inputs"].shape[1]
        stateful = task.spec.stateful
        state = task.carried_state.get("train") if stateful else None  # the state at window start (detached)
        start, scored_from, collected = 0, 0, []
        while scored_from < steps:
            stop = min(scored_from + self.k1, steps)
            # the next window backpropagates from next_start (in [start, stop]): keep the state there
            next_start = max(0, min(stop + self.k1, steps) - self.k2) if stop < steps else stop
            parts, middle = [], state
            if next_start > start:
                outputs, middle = self.forward(task, batch, start, next_start, state)
                parts.append(outputs)
            final = middle
            if stop > next_start:
                outputs, final = self.forward(task, batch, next_start, stop, middle)
                parts.append(outputs)
            window = torch.cat(parts, dim=1)[:, scored_from - start :]
            scored = window_loss(task, window, batch, scored_from)
            if scored is not None and not update(scored[0], scored[0], scored[1]):
                return None
            collected.append(window.detach())
            state, start, scored_from = detached(middle), next_start, stop
        if stateful:
            task.carried_state["train"] = detached(final)
        return torch.cat(collected, dim=1)
