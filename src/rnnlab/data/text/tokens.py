"""Shared by the text datamodules: reading corpus files, the unigram baseline and the datasets that cut a token
stream into non-overlapping windows or stateful streams."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.utils.data import Dataset

from rnnlab.errors import ConfigError

PREPROCESSING_VERSION = 1  # bump when tokenisation changes, so old cache entries are not read


def read_text(path: Path, fix: str) -> str:
    """The UTF-8 text of ``path``; a missing or undecodable file raises ConfigError naming it and ``fix``."""
    if not path.is_file():
        raise ConfigError("root", f"{path} not found; {fix}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError("root", f"{path} is not UTF-8 text ({error}); {fix}") from None


def unigram_cross_entropy(train: torch.Tensor, test: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats per token) on ``test`` of the add-one smoothed unigram distribution of ``train``."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    log_probs = counts.log() - counts.sum().log()
    return float(-log_probs[test].mean())


def length_summary(lengths: list[int]) -> str:
    return f"lengths min {min(lengths)}, mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}"


class TokenWindows(Dataset):
    """Non-overlapping windows of a token stream: item i reads ``ids[i*T : (i+1)*T]`` and predicts the next tokens.

    Items: inputs one-hot float [T, V] (``vocab_size`` set) or ids long [T] (``vocab_size`` None), targets long [T].
    """

    def __init__(self, ids: torch.Tensor, seq_len: int, vocab_size: int | None):
        count = (len(ids) - 1) // seq_len
        if count < 1:
            raise ConfigError("seq_len", f"{seq_len} leaves no window in a split of {len(ids)} tokens")
        self.inputs = ids[: count * seq_len].view(count, seq_len)
        self.targets = ids[1 : count * seq_len + 1].view(count, seq_len)
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _encode(self.inputs[index], self.vocab_size), self.targets[index]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (the DataLoader asks for it), equal to ``pad_collate`` of its items."""
        index = torch.as_tensor(indices)
        inputs = _encode(self.inputs[index], self.vocab_size)
        lengths = torch.full((len(index),), self.inputs.shape[1], dtype=torch.long)
        return {"inputs": inputs, "lengths": lengths, "targets": self.targets[index]}


class TokenStreams(Dataset):
    """A token stream cut into ``streams`` contiguous rows read in chunks of ``seq_len`` (Zaremba et al. 2014).

    Row b holds tokens ``ids[b*L : (b+1)*L]`` (L = (N - 1) // streams) and their successors as targets. Item
    ``k * streams + b`` is chunk k of row b, so an unshuffled loader with ``batch_size = streams`` yields batch k =
    chunk k of every row: row b of batch k+1 continues row b of batch k. The last chunk may be shorter than
    ``seq_len``. Items as in :class:`TokenWindows`.
    """

    def __init__(self, ids: torch.Tensor, streams: int, seq_len: int, vocab_size: int | None):
        row = (len(ids) - 1) // streams
        if row < 1:
            raise ConfigError("batch_size", f"{streams} streams do not fit a split of {len(ids)} tokens")
        self.inputs = ids[: streams * row].view(streams, row)
        self.targets = ids[1 : streams * row + 1].view(streams, row)
        self.streams = streams
        self.seq_len = seq_len
        self.chunks = math.ceil(row / seq_len)
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.chunks * self.streams

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk, row = divmod(index, self.streams)
        steps = slice(chunk * self.seq_len, (chunk + 1) * self.seq_len)
        return _encode(self.inputs[row, steps], self.vocab_size), self.targets[row, steps]


def _encode(ids: torch.Tensor, vocab_size: int | None) -> torch.Tensor:
    return ids if vocab_size is None else torch.nn.functional.one_hot(ids, vocab_size).float()
