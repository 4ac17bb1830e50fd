"""Character-level language modelling corpora."""

from __future__ import annotations

from pathlib import Path

import torch

from rnnlab.data.base import SequenceDataModule, SequenceDataset, TaskSpec
from rnnlab.errors import ConfigError, require_positive


class TinyShakespeareDataModule(SequenceDataModule):
    """Tiny Shakespeare (Karpathy 2015): next-character prediction, metric bits per character.

    ``root`` holds ``input.txt`` (1,115,394 characters, 65 distinct). The text is split contiguously 90/5/5 into
    train/val/test and each split cut into non-overlapping windows of ``seq_len`` + 1 characters; a window's first
    ``seq_len`` characters (one-hot) are the inputs and its last ``seq_len`` the per-step targets.
    Batches: inputs [B, seq_len, vocab], targets [B, seq_len].
    """

    SPLIT_FRACTIONS = (0.90, 0.05, 0.05)

    def __init__(self, root: str, seq_len: int = 100, **kwargs):
        super().__init__(**kwargs)
        require_positive(seq_len=seq_len)
        self.path = Path(root) / "input.txt"
        if not self.path.is_file():
            raise ConfigError("root", f"{self.path} not found; point data.root at the folder holding input.txt")
        self.seq_len = seq_len
        self.text = self.path.read_text(encoding="utf-8")
        self.vocabulary = sorted(set(self.text))
        self.input_size = self.output_size = len(self.vocabulary)
        self.task = TaskSpec(kind="classification", per_step=True, metric="bpc")

    def build_splits(self) -> dict[str, SequenceDataset]:
        index = {char: i for i, char in enumerate(self.vocabulary)}
        ids = torch.tensor([index[char] for char in self.text], dtype=torch.long)
        train_end = int(len(ids) * self.SPLIT_FRACTIONS[0])
        val_end = train_end + int(len(ids) * self.SPLIT_FRACTIONS[1])
        bounds = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, len(ids))}
        return {name: self._windows(ids[start:end]) for name, (start, end) in bounds.items()}

    def _windows(self, ids: torch.Tensor) -> SequenceDataset:
        count = (len(ids) - 1) // self.seq_len
        inputs = ids[: count * self.seq_len].view(count, self.seq_len)
        targets = ids[1 : count * self.seq_len + 1].view(count, self.seq_len)
        return SequenceDataset(_LazyOneHot(inputs, self.input_size), targets)


class _LazyOneHot:
    """Token ids [N, T] read as one-hot float [T, vocab] per item, without materialising N*T*vocab floats."""

    def __init__(self, ids: torch.Tensor, vocab_size: int):
        self.ids = ids
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.ids[index], self.vocab_size).float()
