"""The embedded Reber grammar: next-symbol prediction with the per-step legal successors."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from rnnlab.data.base import TaskSpec
from rnnlab.data.reasoning.base import GeneratedDataModule, TokenExample


@dataclass(frozen=True, eq=False)
class ReberExample(TokenExample):
    """``legal`` [T, 7] bool: row t marks every symbol the grammar allows as ``targets[t]`` (the classic target)."""

    legal: torch.Tensor


class ReberDataModule(GeneratedDataModule):
    """Embedded Reber grammar, next-symbol prediction (Hochreiter & Schmidhuber 1997, section 5 experiment 1).

    A string is B, T or P, a Reber string (B, a walk of the graph below with 50/50 choices, E), the same T or P, E:

        0 -T-> 1, 0 -P-> 2;  1 -S-> 1, 1 -X-> 3;  2 -T-> 2, 2 -V-> 4;  3 -X-> 2, 3 -S-> 5;  4 -P-> 3, 4 -V-> 5;  5 -E->

    Symbols B T P S X V E (ids 0-6, one-hot inputs [B, T, 7]). Inputs are the string less its last symbol and the
    per-step targets [B, T] the next symbol (ids), metric accuracy. Strings have 9 or more symbols (mean about 12).

    Most steps offer two legal successors, so no predictor scores accuracy 1: the classic criterion (all of a
    string's predictions legal, Hochreiter & Schmidhuber) reads the per-step multi-hot ``legal`` field of each
    example instead. ``optimal_loss`` / ``optimal_accuracy`` are the test scores of the Bayes-optimal predictor;
    ``task.baseline`` is the loss of a predictor that knows the grammar but forgets the second symbol, which costs
    ln 2 at the step after the inner E: only a model with memory over the whole string gets below it.
    ``disjoint`` defaults to false here (the classic i.i.d. protocol): true keeps only strings unseen in training
    for val/test, which are then mostly the longer ones.
    """

    SYMBOLS = "BTPSXVE"
    GRAPH = {
        0: (("T", 1), ("P", 2)),
        1: (("S", 1), ("X", 3)),
        2: (("T", 2), ("V", 4)),
        3: (("X", 2), ("S", 5)),
        4: (("P", 3), ("V", 5)),
        5: (("E", None),),
    }

    def __init__(self, disjoint: bool = False, **kwargs):
        super().__init__(disjoint=disjoint, **kwargs)
        self.input_size = self.output_size = len(self.SYMBOLS)
        self.task = TaskSpec(kind="classification", per_step=True, metric="acc")
        self.optimal_loss = self.optimal_accuracy = math.nan

    def sample(self, rng: random.Random):
        embedded = rng.choice("TP")
        symbols, choices = ["B", embedded, "B"], [("B",), ("T", "P"), ("B",)]  # choices[i]: legal symbols[i]
        node = 0
        while node is not None:
            edges = self.GRAPH[node]
            symbol, node = rng.choice(edges)
            symbols.append(symbol)
            choices.append(tuple(edge[0] for edge in edges))
        symbols += [embedded, "E"]
        choices += [(embedded,), ("E",)]
        ids = tuple(self.SYMBOLS.index(s) for s in symbols)

        def make() -> ReberExample:
            legal = [[symbol in options for symbol in self.SYMBOLS] for options in choices[1:]]
            return ReberExample(
                tokens=torch.tensor(ids[:-1]),
                targets=torch.tensor(ids[1:]),
                vocab_size=len(self.SYMBOLS),
                legal=torch.tensor(legal),
            )

        return ids[:-1], make

    def after_build(self, splits: dict[str, list[ReberExample]]) -> None:
        legal_counts = torch.cat([example.legal.sum(1) for example in splits["test"]]).double()
        self.optimal_loss = float(legal_counts.log().mean())
        self.optimal_accuracy = float((1 / legal_counts).mean())
        forgetting = math.log(2) * len(splits["test"]) / len(legal_counts)
        baseline = self.optimal_loss + forgetting
        self.task = TaskSpec(kind="classification", per_step=True, metric="acc", baseline=baseline)

    def describe(self) -> str:
        return (
            f"{super().describe()}; symbols {' '.join(self.SYMBOLS)}; Bayes-optimal test loss "
            f"{self.optimal_loss:.3f}, accuracy {self.optimal_accuracy:.3f}"
        )
