"""Shared by the generated reasoning tasks: the example type, the padding and collation of structure fields, the
label-prior baseline and :class:`GeneratedDataModule` (its ``disjoint`` splits and the structure fields are described
in the package docstring, ``rnnlab.data.reasoning``)."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from rnnlab.data.synthetic import SyntheticDataModule
from rnnlab.errors import ConfigError


@dataclass(frozen=True, eq=False)
class TokenExample:
    """One generated sequence: ``tokens`` [T] symbol ids over ``vocab_size`` symbols and its ``targets``."""

    tokens: torch.Tensor
    targets: torch.Tensor
    vocab_size: int

    @property
    def inputs(self) -> torch.Tensor:
        """One-hot float [T, vocab_size]."""
        return torch.nn.functional.one_hot(self.tokens, self.vocab_size).float()

    def __iter__(self):
        return iter((self.inputs, self.targets))


STRUCTURE_PAD = -1  # padding of the structure fields: no node / no word / no sentence


def pad_structure(tensors: Sequence[torch.Tensor], shape: Sequence[int] | None = None) -> torch.Tensor:
    """Stack long tensors of equal rank into [len(tensors), *shape], each padded at the end of every dimension with
    ``STRUCTURE_PAD``; ``shape`` defaults to the largest size of each dimension."""
    if shape is None:
        shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    out = torch.full((len(tensors), *shape), STRUCTURE_PAD, dtype=torch.long)
    for row, tensor in enumerate(tensors):
        out[(row, *(slice(0, size) for size in tensor.shape))] = tensor
    return out


class StructureCollate:
    """The flat batch of ``collate(examples)`` plus the fields ``structure(examples)`` returns (picklable)."""

    def __init__(self, collate: Callable, structure: Callable[[list], dict[str, torch.Tensor]]):
        self.collate = collate
        self.structure = structure

    def __call__(self, examples: list) -> dict[str, torch.Tensor]:
        return {**self.collate(examples), **self.structure(examples)}


def entropy_baseline(train_labels: list[int], test_labels: list[int]) -> float:
    """Test cross-entropy (nats) of the training label prior, a predictor that ignores the input (add-one smoothed
    over the labels that occur in either split)."""
    counts = Counter(train_labels)
    total = len(train_labels) + len(set(train_labels) | set(test_labels))
    return -sum(math.log((counts[label] + 1) / total) for label in test_labels) / len(test_labels)


class GeneratedDataModule(SyntheticDataModule):
    """Examples drawn one at a time by ``sample(rng)``; ``disjoint`` keeps val/test examples out of earlier splits.

    Batches: inputs [B, T, V] one-hot, lengths [B], targets as the subclass documents. Datasets are lists of
    examples (``self.splits[name][i]``), so the extra fields stay reachable.
    """

    MAX_DRAWS_PER_EXAMPLE = 50

    def __init__(self, disjoint: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.disjoint = bool(disjoint)

    def sample(self, rng: random.Random) -> tuple[tuple[int, ...], Callable[[], TokenExample]]:
        """One draw: its token ids (the key ``disjoint`` compares) and a function that builds the example."""
        raise NotImplementedError

    def build_splits(self) -> dict[str, list[TokenExample]]:
        rng = random.Random(self.seed)
        seen: set[tuple[int, ...]] = set()
        splits = {}
        for name, size in self.sizes.items():
            examples, keys, draws = [], set(), 0
            while len(examples) < size:
                draws += 1
                if draws > self.MAX_DRAWS_PER_EXAMPLE * size:
                    raise ConfigError(
                        "disjoint", f"found only {len(examples)} of {size} {name} examples unseen in earlier splits "
                        f"in {draws - 1} draws; generate a larger space, lower the split sizes or set disjoint=false"
                    )
                key, make = self.sample(rng)
                if self.disjoint and key in seen:
                    continue
                examples.append(make())
                keys.add(key)
            seen |= keys
            splits[name] = examples
        self.after_build(splits)
        return splits

    def after_build(self, splits: dict[str, list[TokenExample]]) -> None:
        """Set data-dependent parts of ``task`` (its baseline)."""

    def batch_structure(self) -> Callable[[list], dict[str, torch.Tensor]] | None:
        """The function giving a batch's structure fields (see the module docstring), or None for the flat batch."""
        return None

    def _loader(self, split: str, shuffle: bool):
        loader = super()._loader(split, shuffle)
        structure = self.batch_structure()
        if structure is not None:  # DataLoader allows replacing collate_fn after construction
            loader.collate_fn = StructureCollate(loader.collate_fn, structure)
        return loader

    def describe(self) -> str:
        lengths = [len(example.tokens) for split in self.splits.values() for example in split]
        return (
            f"{super().describe()}; lengths min {min(lengths)}, mean {sum(lengths) / len(lengths):.1f}, "
            f"max {max(lengths)}; disjoint splits {self.disjoint}; baseline loss {self.task.baseline:.3f}"
        )
