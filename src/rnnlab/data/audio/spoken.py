"""Spoken words in WAV files named by what they say: FSDD digits (classification, and connected digits
transcribed with CTC) and YESNO (CTC)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from rnnlab.data.audio.base import AudioDataModule, Split, named_wavs, read_wav, seeded_subset, verify_sha256sums
from rnnlab.data.base import TaskSpec
from rnnlab.errors import ConfigError, require_positive

FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


class FSDDDataModule(AudioDataModule):
    """Free Spoken Digit Dataset (Jackson et al., github.com/Jakobovski/free-spoken-digit-dataset): which digit?

    ``root`` holds ``recordings/{digit}_{speaker}_{index}.wav`` (3000 files, 8 kHz mono, 0.14-2.28 s; 6 speakers x
    10 digits x 50 repetitions). Official split: repetitions 0-4 are the test set (300 files); of repetitions 5-49,
    a seeded ``val_fraction`` (default 0.1: 270 files, drawn uniformly with ``data.seed``) is the validation set
    and the rest (2430 files) the training set. The split is by recording: the six speakers occur in every split.
    Sequence classification into 10 classes, metric accuracy (chance 10 %; uniform guessing scores cross-entropy
    ln 10, the baseline). With the default mfcc features (hop 80 = 10 ms), utterances have 15-229 steps (mean 44).
    Batches: inputs [B, T, F], targets [B] digits 0-9.
    """

    def __init__(self, root: str, val_fraction: float = 0.1, **kwargs):
        super().__init__(root, **kwargs)
        if not 0 < val_fraction < 1:
            raise ConfigError("val_fraction", f"must be in (0, 1), got {val_fraction!r}")
        self.val_fraction = val_fraction
        self.output_size = 10
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc", baseline=math.log(10))

    def settings(self) -> dict:
        return {**super().settings(), "val_fraction": self.val_fraction}

    def list_files(self) -> list[Path]:
        return fsdd_recordings(self.root, self.max_files, self.seed)

    def split_files(self, files: list[Path]) -> dict[str, list[Path]]:
        """The official split of ``files``: index 0-4 test, a seeded ``val_fraction`` of the rest validation."""
        test = [path for path in files if int(FSDD_NAME.match(path.name)[3]) < 5]
        rest = [path for path in files if int(FSDD_NAME.match(path.name)[3]) >= 5]
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(rest), generator=generator).tolist()
        val_count = round(self.val_fraction * len(rest))
        val = sorted(rest[i] for i in order[:val_count])
        train = sorted(rest[i] for i in order[val_count:])
        return {"train": train, "val": val, "test": test}

    def load(self, files: list[Path]) -> dict[str, Split]:
        verify_sha256sums(self.root, files)
        splits = {}
        for name, paths in self.split_files(files).items():
            inputs = self.featurize([read_wav(path, self.SAMPLE_RATE) for path in paths])
            targets = [torch.tensor(int(path.name[0])) for path in paths]
            splits[name] = (inputs, targets)
        return splits

    def label_description(self) -> str:
        return "classes: digits 0-9"


def fsdd_recordings(root: Path, max_files: int | None, seed: int) -> list[Path]:
    """The FSDD WAVs under ``root/recordings`` (a seeded subset of ``max_files`` when set), checking their names."""
    files = named_wavs(root / "recordings", FSDD_NAME, "{digit}_{speaker}_{index}.wav", "the FSDD recordings")
    return seeded_subset(files, max_files, torch.Generator().manual_seed(seed))


class FSDDCTCDataModule(FSDDDataModule):
    """Connected spoken digits from FSDD: transcribe 2-5 digits separated by silences with CTC (Graves et al. 2006).

    Each sequence concatenates ``min_digits``-``max_digits`` (uniform) recordings drawn with replacement from one
    split of :class:`FSDDDataModule`'s official split (test sequences use only test recordings, repetitions 0-4;
    the six speakers are shared by all splits, as in FSDD's own split), with silences of ``min_gap``-``max_gap``
    seconds (uniform) before, between and after the digits. Everything is drawn from ``data.seed``.
    Default sizes: ``train_size`` 2000, ``val_size`` 200, ``test_size`` 500 sequences (about 2.4 s each: 120 steps at
    the default hop of 160 samples = 20 ms). Labels: blank 0, digit d -> d + 1 (``output_size`` 11). Metric: label
    error rate of greedy CTC decoding (edit distance / reference length; emitting nothing scores 1.0).
    Batches: inputs [B, T, F], targets [B, S] padded with 0, ``target_lengths`` [B].
    """

    def __init__(
        self,
        root: str,
        train_size: int = 2000,
        val_size: int = 200,
        test_size: int = 500,
        min_digits: int = 2,
        max_digits: int = 5,
        min_gap: float = 0.05,
        max_gap: float = 0.3,
        frame_size: int = 160,
        hop_length: int = 160,
        **kwargs,
    ):
        super().__init__(root, frame_size=frame_size, hop_length=hop_length, **kwargs)
        require_positive(train_size=train_size, val_size=val_size, test_size=test_size, min_digits=min_digits)
        if max_digits < min_digits:
            raise ConfigError("max_digits", f"must be >= min_digits={min_digits}, got {max_digits!r}")
        if not 0 <= min_gap <= max_gap:
            raise ConfigError("max_gap", f"need 0 <= min_gap <= max_gap, got {min_gap!r} and {max_gap!r}")
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.digits = (min_digits, max_digits)
        self.gaps = (min_gap, max_gap)
        self.output_size = 11
        self.task = TaskSpec(kind="ctc", per_step=False, metric="ler")

    def settings(self) -> dict:
        return {**super().settings(), "sizes": self.sizes, "digits": self.digits, "gaps": self.gaps}

    def load(self, files: list[Path]) -> dict[str, Split]:
        verify_sha256sums(self.root, files)
        generator = torch.Generator().manual_seed(self.seed)
        splits = {}
        for name, paths in self.split_files(files).items():
            waveforms = [read_wav(path, self.SAMPLE_RATE) for path in paths]
            digits = [int(path.name[0]) for path in paths]
            sequences, targets = [], []
            for _ in range(self.sizes[name]):
                waveform, labels = self.compose(waveforms, digits, generator)
                sequences.append(waveform)
                targets.append(labels)
            splits[name] = (self.featurize(sequences), targets)
        self.check_ctc_lengths(splits)
        return splits

    def compose(self, waveforms: list[torch.Tensor], digits: list[int], generator: torch.Generator):
        """One sequence: silence, digit, silence, ..., digit, silence; returns (waveform [N], labels [S] in 1..10)."""
        count = int(torch.randint(self.digits[0], self.digits[1] + 1, (1,), generator=generator))
        picks = torch.randint(len(waveforms), (count,), generator=generator).tolist()
        gaps = self.gaps[0] + (self.gaps[1] - self.gaps[0]) * torch.rand(count + 1, generator=generator)
        pieces = [torch.zeros(int(gaps[0] * self.SAMPLE_RATE))]
        for pick, gap in zip(picks, gaps[1:]):
            pieces += [waveforms[pick], torch.zeros(int(gap * self.SAMPLE_RATE))]
        return torch.cat(pieces), torch.tensor([digits[pick] + 1 for pick in picks])

    def label_description(self) -> str:
        return "labels: blank 0, digit d -> d + 1"


YESNO_NAME = re.compile(r"^[01](_[01]){7}\.wav$")


class YesNoDataModule(AudioDataModule):
    """YESNO (OpenSLR SLR1; the files of torchaudio.datasets.YESNO): transcribe 8 spoken yes/no words with CTC.

    ``root`` holds ``waves_yesno/*.wav``: 60 recordings of one speaker, 8 kHz, 4.9-7.0 s; the file name is the label
    sequence (``1_0_...``, 1 = yes, 0 = no). Seeded split of the 60 files: ``test_size`` 10, ``val_size`` 10, the
    remaining 40 for training. Labels: blank 0, no 1, yes 2 (``output_size`` 3). Metric: label error rate of greedy
    CTC decoding. With the default hop of 160 (20 ms) an utterance has 245-350 steps. Batches as
    :class:`FSDDCTCDataModule`.
    """

    def __init__(self, root: str, val_size: int = 10, test_size: int = 10, hop_length: int = 160, **kwargs):
        super().__init__(root, hop_length=hop_length, **kwargs)
        require_positive(val_size=val_size, test_size=test_size)
        self.val_size = val_size
        self.test_size = test_size
        self.output_size = 3
        self.task = TaskSpec(kind="ctc", per_step=False, metric="ler")

    def settings(self) -> dict:
        return {**super().settings(), "val_size": self.val_size, "test_size": self.test_size}

    def list_files(self) -> list[Path]:
        files = named_wavs(self.root / "waves_yesno", YESNO_NAME, "0_1_1_0_0_1_0_1.wav", "the YESNO recordings")
        return seeded_subset(files, self.max_files, torch.Generator().manual_seed(self.seed))

    def split_files(self, files: list[Path]) -> dict[str, list[Path]]:
        """A seeded permutation: its first ``test_size`` files test, the next ``val_size`` validation, then train."""
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed)).tolist()
        test_end = self.test_size
        val_end = test_end + self.val_size
        parts = {"train": order[val_end:], "val": order[test_end:val_end], "test": order[:test_end]}
        return {name: [files[i] for i in sorted(indices)] for name, indices in parts.items()}

    def load(self, files: list[Path]) -> dict[str, Split]:
        verify_sha256sums(self.root, files)
        splits = {}
        for name, paths in self.split_files(files).items():
            inputs = self.featurize([read_wav(path, self.SAMPLE_RATE) for path in paths])
            targets = [torch.tensor([int(word) + 1 for word in path.stem.split("_")]) for path in paths]
            splits[name] = (inputs, targets)
        self.check_ctc_lengths(splits)
        return splits

    def label_description(self) -> str:
        return "labels: blank 0, no 1, yes 2"
