"""Polyphonic music as 88-key piano rolls (next-step prediction) and its independent-key baseline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rnnlab.data.base import SequenceDataModule, SequenceDataset, TaskSpec
from rnnlab.errors import ConfigError, require_choice, require_positive

POLYPHONIC_FILES = {
    "jsb": "JSB_Chorales.mat",
    "nottingham": "Nottingham.mat",
    "musedata": "MuseData.mat",
    "piano": "Piano_midi.mat",
}
PIANO_KEYS = 88


class PolyphonicDataModule(SequenceDataModule):
    """Polyphonic music as piano rolls (Boulanger-Lewandowski et al. 2012): predict the next step's set of keys.

    ``root`` holds the four corpora as MATLAB files (``traindata``/``validdata``/``testdata`` cell arrays of
    T x 88 binary piano rolls, keys MIDI 21-108), with their official splits, in sequences (steps):
      jsb (JSB Chorales) 229/76/77 (13,807/4,602/4,725)     nottingham 694/173/170 (176,561/45,513/44,463)
      musedata 524/135/124 (245,202/82,755/64,339)          piano (Piano-midi.de) 87/12/25 (75,911/8,540/19,036)
    Step t's input is the frame x_{t-1} (a zero frame before the first) and its target the frame x_t, so every frame
    of a piece is predicted, the first from nothing (the TCN code of Bai et al. 2018 instead drops the first frame).
    Metric: frame-level negative log-likelihood, the sum of the 88 keys' Bernoulli NLLs per step averaged over steps
    (nats), as reported by Boulanger-Lewandowski et al. 2012. The baseline is the NLL on the test set of independent
    keys with their training-set frequencies. ``max_sequences`` keeps the first pieces of every split (quick tests).
    Batches: inputs and targets [B, T, 88] float.
    """

    def __init__(self, root: str, corpus: str = "jsb", max_sequences: int | None = None, **kwargs):
        super().__init__(**kwargs)
        require_choice("corpus", corpus, tuple(POLYPHONIC_FILES))
        if max_sequences is not None:
            require_positive(max_sequences=max_sequences)
        self.path = Path(root) / POLYPHONIC_FILES[corpus]
        if not self.path.is_file():
            raise ConfigError("root", f"{self.path} not found; point data.root at the folder holding the .mat files")
        self.corpus = corpus
        self.max_sequences = max_sequences
        self.input_size = self.output_size = PIANO_KEYS
        self.task = TaskSpec(kind="multilabel", per_step=True, metric="nll")

    def build_splits(self) -> dict[str, SequenceDataset]:
        from scipy.io import loadmat

        try:
            contents = loadmat(self.path)
        except Exception as error:  # scipy raises several types for damaged files
            raise ConfigError("root", f"{self.path} is not a readable .mat file ({error}); restore it") from None
        splits = {}
        for name, key in (("train", "traindata"), ("val", "validdata"), ("test", "testdata")):
            if key not in contents:
                raise ConfigError("root", f"{self.path} has no {key!r}; restore it from the source")
            arrays = list(contents[key].ravel()[: self.max_sequences])
            well_formed = all(a.ndim == 2 and a.shape[1] == PIANO_KEYS for a in arrays)
            if not well_formed or not np.isin(np.concatenate(arrays), (0, 1)).all():
                raise ConfigError("root", f"{self.path}: {key} holds a non-binary or non-88-key roll; restore it")
            rolls = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
            inputs = [torch.cat([roll.new_zeros(1, PIANO_KEYS), roll[:-1]]) for roll in rolls]
            splits[name] = SequenceDataset(inputs, rolls)
        self.task = replace(self.task, baseline=marginal_nll(splits["train"].targets, splits["test"].targets))
        return splits

    def describe(self) -> str:
        steps = ", ".join(f"{name} {sum(len(x) for x in split.inputs)}" for name, split in self.splits.items())
        return (
            f"{super().describe()}; corpus {self.corpus} ({self.path.name}); steps {steps}; "
            f"88 keys (MIDI 21-108); independent-key baseline NLL {self.task.baseline:.2f} nats per step"
        )


def marginal_nll(train: list[torch.Tensor], test: list[torch.Tensor]) -> float:
    """Test NLL per step (nats, summed over keys) of independent keys with add-one-smoothed train frequencies."""
    frames = torch.cat(train)
    p = (frames.sum(0) + 1) / (len(frames) + 2)
    ones = sum(roll.sum(0) for roll in test)  # [88] test frames with each key down
    steps = sum(len(roll) for roll in test)
    return float(-(ones * p.log() + (steps - ones) * (1 - p).log()).sum() / steps)
