"""Shared by the waveform datamodules: reading and checking WAV files, seeded subsets, standardisation, the CTC
length check and their base class :class:`AudioDataModule`."""

from __future__ import annotations

import re
from pathlib import Path

import soundfile
import torch

from rnnlab.data.audio.features import AudioFeatures, single_thread
from rnnlab.data.base import SequenceDataModule, SequenceDataset
from rnnlab.data.cache import cached, sha256_of
from rnnlab.errors import ConfigError, require_positive

Split = tuple[list[torch.Tensor], list[torch.Tensor]]  # (inputs [T_i, F], targets) of one split


def read_wav(path: Path, sample_rate: int) -> torch.Tensor:
    """Mono float waveform [N] in [-1, 1]; an unreadable file or another sample rate is a ConfigError naming it."""
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, OSError) as error:
        raise ConfigError("root", f"{path} is not a readable WAV file ({error}); restore it from the source") from None
    if rate != sample_rate:
        raise ConfigError("root", f"{path} has sample rate {rate} Hz, expected {sample_rate}; restore it")
    if samples.shape[0] == 0:
        raise ConfigError("root", f"{path} holds no samples; restore it from the source")
    return torch.from_numpy(samples.mean(axis=1))


def verify_sha256sums(root: Path, paths: list[Path]) -> None:
    """Check ``paths`` against ``root/SHA256SUMS`` (``sha256sum -c`` format) where the dataset ships one.

    Every WAV the list names must exist; a file whose checksum differs is named. Without the list, nothing is checked.
    """
    listing = root / "SHA256SUMS"
    if not listing.is_file():
        return
    expected = {}
    for line in listing.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if name:
            expected[name.lstrip("*")] = digest
    for name in expected:
        if name.endswith(".wav") and not (root / name).is_file():
            raise ConfigError("root", f"{root / name} is missing (listed in {listing}); restore the dataset")
    for path in paths:
        digest = expected.get(path.relative_to(root).as_posix())
        if digest is not None and sha256_of(path) != digest:
            raise ConfigError("root", f"{path} does not match its checksum in {listing}; restore it from the source")


def seeded_subset(items: list, count: int | None, generator: torch.Generator) -> list:
    """At most ``count`` of ``items``, drawn with ``generator``, kept in their original order."""
    if count is None or count >= len(items):
        return list(items)
    keep = sorted(torch.randperm(len(items), generator=generator)[:count].tolist())
    return [items[i] for i in keep]


def named_wavs(folder: Path, pattern: re.Pattern, naming: str, what: str) -> list[Path]:
    """The sorted WAVs in ``folder``; ConfigError naming the folder or file if it is missing, empty or misnamed."""
    if not folder.is_dir():
        raise ConfigError("root", f"{folder} not found; point data.root at the folder holding {what}")
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise ConfigError("root", f"no .wav files in {folder}; restore {what} there")
    for path in files:
        if not pattern.match(path.name):
            raise ConfigError("root", f"{path} is not named like {naming}; remove or rename it")
    return files


def standardize(splits: dict[str, Split]) -> None:
    """Scale every split's features in place to zero mean, unit variance per dimension of the training frames."""
    frames = torch.cat(splits["train"][0])
    mean, std = frames.mean(0), frames.std(0).clamp_min(1e-5)
    for inputs, _ in splits.values():
        inputs[:] = [(x - mean) / std for x in inputs]


def check_ctc_lengths(splits: dict[str, Split], key: str) -> None:
    """CTC needs T >= S + (repeated neighbours in the labels) steps; fail at setup (naming the setting ``key`` that
    sets the step length) instead of an infinite loss."""
    for name, (inputs, targets) in splits.items():
        for x, y in zip(inputs, targets):
            needed = len(y) + int((y[1:] == y[:-1]).sum())
            if x.shape[0] < needed:
                raise ConfigError(
                    key, f"a {name} utterance has {x.shape[0]} steps but CTC needs {needed} for its {len(y)} labels; "
                    f"use a smaller {key}"
                )


class AudioDataModule(SequenceDataModule):
    """Shared by the waveform datasets: file listing, feature extraction, the cache, standardisation, ``describe``.

    Subclasses set ``SAMPLE_RATE``, ``input_size``/``output_size``/``task`` and implement ``list_files`` (the WAVs
    read, which key the cache), ``split_files(files) -> {"train"|"val"|"test": [paths]}`` and
    ``load(files) -> {"train"|"val"|"test": (inputs, targets)}`` (unscaled features).
    ``max_files`` keeps a seeded subset of the files (for quick tests).
    """

    SAMPLE_RATE = 8000

    def __init__(
        self,
        root: str,
        cache_dir: str | None = None,
        features: str = "mfcc",
        frame_size: int = 80,
        n_fft: int = 256,
        hop_length: int = 80,
        n_mels: int = 40,
        n_mfcc: int = 13,
        normalize: bool = True,
        max_files: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if max_files is not None:
            require_positive(max_files=max_files)
        self.root = Path(root)
        self.cache_dir = cache_dir
        self.featurizer = AudioFeatures(features, self.SAMPLE_RATE, frame_size, n_fft, hop_length, n_mels, n_mfcc)
        self.input_size = self.featurizer.size
        self.normalize = normalize
        self.max_files = max_files

    def list_files(self) -> list[Path]:
        raise NotImplementedError

    def split_files(self, files: list[Path]) -> dict[str, list[Path]]:
        raise NotImplementedError

    def load(self, files: list[Path]) -> dict[str, Split]:
        raise NotImplementedError

    def settings(self) -> dict:
        """Everything besides the source files that determines ``load``'s result (the cache key)."""
        return {**self.featurizer.settings(), "seed": self.seed, "max_files": self.max_files}

    def build_splits(self) -> dict[str, SequenceDataset]:
        files = self.list_files()
        name = type(self).__name__
        if self.cache_dir is None:
            splits = self.load(files)
        else:
            splits = cached(self.cache_dir, name, self.settings(), files, lambda: self.load(files))
        for split, (inputs, _) in splits.items():
            if not inputs:
                key = "root" if self.max_files is None else "max_files"
                raise ConfigError(key, f"leaves the {split} split of {name} empty; use more files")
        if self.normalize:
            standardize(splits)
        return {split: SequenceDataset(inputs, targets) for split, (inputs, targets) in splits.items()}

    def featurize(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        with single_thread():
            return [self.featurizer(w) for w in waveforms]

    def check_ctc_lengths(self, splits: dict[str, Split]) -> None:
        check_ctc_lengths(splits, "frame_size" if self.featurizer.features == "raw" else "hop_length")

    def label_description(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        steps = []
        for split, dataset in self.splits.items():
            lengths = torch.tensor([x.shape[0] for x in dataset.inputs], dtype=torch.float)
            steps.append(f"{split} {int(lengths.min())}/{lengths.mean():.0f}/{int(lengths.max())}")
        return (
            f"{super().describe()}; features {self.featurizer.describe()}"
            f"{', standardised with train statistics' if self.normalize else ''}; steps min/mean/max "
            f"{', '.join(steps)}; {self.label_description()}"
        )
