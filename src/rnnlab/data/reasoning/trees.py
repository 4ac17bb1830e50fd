"""Arithmetic expression trees: generation, evaluation, prefix / infix notation and the tree batch structure."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import torch

from rnnlab.data.base import TaskSpec
from rnnlab.data.reasoning.base import GeneratedDataModule, TokenExample, entropy_baseline, pad_structure
from rnnlab.errors import ConfigError, require_choice, require_positive


@dataclass(frozen=True, eq=False)
class TreeExample(TokenExample):
    """An expression; ``targets`` is its value mod 10 (scalar long).

    nodes:     [N] long symbol ids of the tree's nodes in pre-order (digits are leaves, operators have 2 children)
    parents:   [N] long index (into ``nodes``) of each node's parent, -1 for the root
    positions: [N] long index into ``tokens`` of each node's symbol (the identity for prefix notation)
    value:     the expression's integer value
    """

    nodes: torch.Tensor
    parents: torch.Tensor
    positions: torch.Tensor
    value: int


class TreesDataModule(GeneratedDataModule):
    """Arithmetic expression trees over the digits 0-9 with +, - and * (a tree-structured reasoning task).

    The root is an operator; below it each node is a digit with probability ``leaf_prob``, else an operator with
    two subtrees, and nodes at depth ``max_depth`` are digits (so 1 <= operator depth <= max_depth). The sequence
    is the tree in ``prefix`` notation ("* + 3 4 2") or fully parenthesised ``infix`` ("( 3 + 4 ) * 2").
    Symbols 0-9 + - * ( ) (ids 0-14), inputs one-hot [B, T, 15]. Target: the value mod 10 (Python's floor
    modulo, so 0-9 also for negative values), class [B], metric accuracy; classification rather than regression
    of the raw value, whose range grows as 9^(2^max_depth). ``task.baseline`` is the test loss of the
    training label prior (0 and the even digits are the most frequent, from the products). Each example keeps
    the tree (:class:`TreeExample`: nodes, parents, positions) for tree-structured models; with ``structure: true``
    batches also carry ``parents`` [B, N] (pre-order, -1 for the root) and ``positions`` [B, N] (each node's step in
    ``inputs``), both ``STRUCTURE_PAD`` past a tree's nodes (so a node is real where ``positions >= 0``).
    """

    SYMBOLS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "-", "*", "(", ")")
    OPERATORS = ("+", "-", "*")
    NOTATIONS = ("prefix", "infix")
    structure_keys = ("parents", "positions")  # tree_structure's

    def __init__(
        self, max_depth: int = 3, leaf_prob: float = 0.5, notation: str = "prefix", structure: bool = False, **kwargs
    ):
        super().__init__(**kwargs)
        self.structure = bool(structure)
        require_positive(max_depth=max_depth)
        if not 0.0 <= leaf_prob <= 1.0:
            raise ConfigError("leaf_prob", f"must be in [0, 1], got {leaf_prob!r}")
        require_choice("notation", notation, self.NOTATIONS)
        self.max_depth = max_depth
        self.leaf_prob = leaf_prob
        self.notation = notation
        self.input_size = len(self.SYMBOLS)
        self.output_size = 10
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc")

    def batch_structure(self):
        return tree_structure if self.structure else None

    def sample(self, rng: random.Random):
        nodes: list[str] = []
        parents: list[int] = []

        def grow(depth: int, parent: int) -> None:
            index = len(nodes)
            parents.append(parent)
            if depth == self.max_depth or (depth > 0 and rng.random() < self.leaf_prob):
                nodes.append(str(rng.randrange(10)))
                return
            nodes.append(rng.choice(self.OPERATORS))
            grow(depth + 1, index)
            grow(depth + 1, index)

        grow(0, -1)
        value, _ = evaluate_prefix(nodes, 0)
        tokens, positions = (nodes, list(range(len(nodes)))) if self.notation == "prefix" else to_infix(nodes)
        ids = tuple(self.SYMBOLS.index(s) for s in tokens)

        def make() -> TreeExample:
            return TreeExample(
                tokens=torch.tensor(ids),
                targets=torch.tensor(value % 10),
                vocab_size=len(self.SYMBOLS),
                nodes=torch.tensor([self.SYMBOLS.index(s) for s in nodes]),
                parents=torch.tensor(parents),
                positions=torch.tensor(positions),
                value=value,
            )

        return ids, make

    def after_build(self, splits: dict[str, list[TreeExample]]) -> None:
        labels = {name: [int(example.targets) for example in split] for name, split in splits.items()}
        baseline = entropy_baseline(labels["train"], labels["test"])
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc", baseline=baseline)

    def describe(self) -> str:
        labels = Counter(int(example.targets) for example in self.splits["train"])
        return (
            f"{super().describe()}; {self.notation} notation, max_depth {self.max_depth}; "
            f"train labels {dict(sorted(labels.items()))}"
        )


def tree_structure(examples: list[TreeExample]) -> dict[str, torch.Tensor]:
    """``parents`` and ``positions`` [B, N] of a batch of trees, padded with ``STRUCTURE_PAD``."""
    return {
        "parents": pad_structure([example.parents for example in examples]),
        "positions": pad_structure([example.positions for example in examples]),
    }


def evaluate_prefix(nodes: list[str], index: int) -> tuple[int, int]:
    """The value of the subtree whose pre-order list starts at ``index``, and the index just after it."""
    symbol = nodes[index]
    if symbol.isdigit():
        return int(symbol), index + 1
    left, after = evaluate_prefix(nodes, index + 1)
    right, after = evaluate_prefix(nodes, after)
    value = left + right if symbol == "+" else left - right if symbol == "-" else left * right
    return value, after


def to_infix(nodes: list[str]) -> tuple[list[str], list[int]]:
    """Fully parenthesised infix tokens of a pre-order tree (the root unbracketed) and each node's token index."""
    tokens: list[str] = []
    positions = [0] * len(nodes)

    def write(index: int, bracket: bool) -> int:
        if nodes[index].isdigit():
            positions[index] = len(tokens)
            tokens.append(nodes[index])
            return index + 1
        tokens.extend(["("] if bracket else [])
        after = write(index + 1, True)
        positions[index] = len(tokens)
        tokens.append(nodes[index])
        after = write(after, True)
        tokens.extend([")"] if bracket else [])
        return after

    write(0, False)
    return tokens, positions
