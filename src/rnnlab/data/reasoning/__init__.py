"""Generated reasoning tasks: the embedded Reber grammar, bAbI-style question answering, arithmetic expression trees.

Every example is generated from ``data.seed`` (Python's ``random.Random``) and read as a sequence of one-hot symbols
[T, V]. Items are :class:`TokenExample` objects: iterating one yields ``(inputs, targets)``, the pair the default
collate (``rnnlab.data.base.pad_collate``) batches, and each kind adds the structure that later models need
(legal next symbols, the story's sentences, the tree's parents). With ``disjoint: true`` a val or test example never
repeats (by its token sequence) an example of an earlier split, so scores measure generalisation, not recall.

``structure: true`` (trees, bAbI) also puts that structure into every batch, padded with ``STRUCTURE_PAD`` (-1):
trees add ``parents`` and ``positions`` [B, N], stories add ``story`` [B, S, L] and ``query`` [B, L_q] word ids.
Models that read them name the keys in ``batch_keys`` (``rnnlab.models.structured``, ``rnnlab.models.memory``).
"""

from rnnlab.data.reasoning.babi import BabiSyntheticDataModule, QAExample
from rnnlab.data.reasoning.base import STRUCTURE_PAD, GeneratedDataModule, TokenExample
from rnnlab.data.reasoning.reber import ReberDataModule, ReberExample
from rnnlab.data.reasoning.trees import TreeExample, TreesDataModule

__all__ = [
    "STRUCTURE_PAD",
    "BabiSyntheticDataModule",
    "GeneratedDataModule",
    "QAExample",
    "ReberDataModule",
    "ReberExample",
    "TokenExample",
    "TreeExample",
    "TreesDataModule",
]
