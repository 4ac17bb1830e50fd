"""Synthetic long-term-dependency tasks generated in memory from ``data.seed``."""

from __future__ import annotations

import math

import torch

from rnnlab.data.base import IGNORE_INDEX, SequenceDataModule, SequenceDataset, TaskSpec
from rnnlab.errors import ConfigError, require_positive


class SyntheticDataModule(SequenceDataModule):
    """Fixed-size train/val/test sets drawn from one seeded generator, split by index (so splits are disjoint)."""

    def __init__(self, train_size: int = 10000, val_size: int = 1000, test_size: int = 1000, **kwargs):
        super().__init__(**kwargs)
        require_positive(train_size=train_size, val_size=val_size, test_size=test_size)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}

    def generate(self, count: int, generator: torch.Generator) -> SequenceDataset:
        raise NotImplementedError

    def build_splits(self) -> dict[str, SequenceDataset]:
        generator = torch.Generator().manual_seed(self.seed)
        return {name: self.generate(size, generator) for name, size in self.sizes.items()}


class AddingDataModule(SyntheticDataModule):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015 form).

    Each step carries two features: a value drawn from U(0, 1) and a marker that is 1 at exactly two steps, one in
    the first half and one in the second half of the sequence. The target is the sum of the two marked values.
    Predicting the constant 1 (the mean of the target) scores MSE = Var(U1 + U2) = 2/12 = 0.167, the trivial
    baseline; beating it needs memory over up to ``seq_len`` steps.

    ``min_seq_len`` < ``seq_len`` draws each sequence's length uniformly from [min_seq_len, seq_len] (markers inside
    it), which exercises the ``lengths`` path of the models. Batches: inputs [B, T, 2], targets [B, 1].
    """

    TRIVIAL_MSE = 2.0 / 12.0

    def __init__(self, seq_len: int = 50, min_seq_len: int | None = None, **kwargs):
        super().__init__(**kwargs)
        require_positive(seq_len=seq_len)
        min_seq_len = seq_len if min_seq_len is None else min_seq_len
        if not 2 <= min_seq_len <= seq_len:
            raise ConfigError("min_seq_len", f"must be in [2, seq_len={seq_len}], got {min_seq_len!r}")
        self.seq_len = seq_len
        self.min_seq_len = min_seq_len
        self.input_size = 2
        self.output_size = 1
        self.task = TaskSpec(kind="regression", per_step=False, metric="mse", baseline=self.TRIVIAL_MSE)

    def generate(self, count: int, generator: torch.Generator) -> SequenceDataset:
        lengths = torch.randint(self.min_seq_len, self.seq_len + 1, (count,), generator=generator)
        values = torch.rand(count, self.seq_len, generator=generator)
        half = lengths // 2
        first = (torch.rand(count, generator=generator) * half).long()
        second = half + (torch.rand(count, generator=generator) * (lengths - half)).long()
        markers = torch.zeros(count, self.seq_len)
        rows = torch.arange(count)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        targets = (values[rows, first] + values[rows, second]).unsqueeze(1)
        sequences = torch.stack([values, markers], dim=-1)
        inputs = [sequences[i, : lengths[i]] for i in range(count)]
        return SequenceDataset(inputs, list(targets))


class CopyDataModule(SyntheticDataModule):
    """The copy memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016 form).

    Symbols: 0 blank, 1-8 data, 9 delimiter. The input is n = ``length`` (default 10) data symbols, then
    ``delay - 1`` blanks, the delimiter, and n blanks (length T = delay + 2n); the target is blank for delay + n
    steps and then the n data symbols. A memoryless model that predicts blank and then uniform guesses scores the
    cross-entropy n ln 8 / (delay + 2n), the baseline. ``answer_only``: only the last n steps have targets (the
    others hold IGNORE_INDEX), so loss and accuracy score the copied symbols alone (baseline ln 8), and an
    encoder-decoder (``task=seq2seq``) emits just those n symbols. Batches: inputs [B, T, 10] one-hot, targets
    [B, T] classes 0-8.
    """

    SYMBOLS = 8
    COPY_LENGTH = 10

    def __init__(self, delay: int = 20, length: int = COPY_LENGTH, answer_only: bool = False, **kwargs):
        super().__init__(**kwargs)
        require_positive(delay=delay, length=length)
        self.delay = delay
        self.length = length
        self.answer_only = answer_only
        self.input_size = self.SYMBOLS + 2
        self.output_size = self.SYMBOLS + 1
        baseline = math.log(self.SYMBOLS) * (1.0 if answer_only else length / (delay + 2 * length))
        self.task = TaskSpec(kind="classification", per_step=True, metric="acc", baseline=baseline)

    def generate(self, count: int, generator: torch.Generator) -> SequenceDataset:
        n, steps = self.length, self.delay + 2 * self.length
        data = torch.randint(1, self.SYMBOLS + 1, (count, n), generator=generator)
        symbols = torch.zeros(count, steps, dtype=torch.long)
        symbols[:, :n] = data
        symbols[:, self.delay + n - 1] = self.SYMBOLS + 1
        targets = torch.full((count, steps), IGNORE_INDEX if self.answer_only else 0, dtype=torch.long)
        targets[:, -n:] = data
        inputs = torch.nn.functional.one_hot(symbols, self.input_size).float()
        return SequenceDataset(inputs, targets)


class ReversalDataModule(SyntheticDataModule):
    """Sequence reversal, the toy task of encoder-decoder and attention models (e.g. Sutskever et al. 2014 reverse
    the source to shorten dependencies; reversing needs the whole input before the first output).

    Symbols: 0 blank, 1..``symbols`` data, ``symbols`` + 1 delimiter. The input is n data symbols drawn uniformly,
    the delimiter, and n blanks (T = 2n + 1); n = ``length``, or drawn uniformly from [``min_length``, ``length``]
    per sequence. The last n steps' targets are the data symbols in reverse order, as classes 0..symbols-1 (symbol s
    is class s - 1); the first n + 1 steps hold IGNORE_INDEX (no target), so loss and accuracy score the answer only,
    and an encoder-decoder (``task=seq2seq``) emits exactly the n reversed symbols. Chance: cross-entropy
    ln(symbols) per answer step (the baseline), token accuracy 1/symbols, whole-sequence accuracy symbols^-n.
    Batches: inputs [B, T, symbols + 2] one-hot, targets [B, T].
    """

    def __init__(self, length: int = 5, min_length: int | None = None, symbols: int = 8, **kwargs):
        super().__init__(**kwargs)
        require_positive(length=length, symbols=symbols)
        min_length = length if min_length is None else min_length
        if isinstance(min_length, bool) or not isinstance(min_length, int) or not 1 <= min_length <= length:
            raise ConfigError("min_length", f"must be an integer in [1, length={length}], got {min_length!r}")
        self.length = length
        self.min_length = min_length
        self.symbols = symbols
        self.input_size = symbols + 2
        self.output_size = symbols
        self.task = TaskSpec(kind="classification", per_step=True, metric="acc", baseline=math.log(symbols))

    def generate(self, count: int, generator: torch.Generator) -> SequenceDataset:
        lengths = torch.randint(self.min_length, self.length + 1, (count,), generator=generator).tolist()
        data = torch.randint(1, self.symbols + 1, (count, self.length), generator=generator)
        inputs, targets = [], []
        for row, n in zip(data, lengths):
            symbols = torch.cat([row[:n], torch.tensor([self.symbols + 1]), torch.zeros(n, dtype=torch.long)])
            inputs.append(torch.nn.functional.one_hot(symbols, self.input_size).float())
            targets.append(torch.cat([torch.full((n + 1,), IGNORE_INDEX), row[:n].flip(0) - 1]))
        return SequenceDataset(inputs, targets)
