"""Audio datamodules: spoken digits (FSDD, FSDD-CTC), YESNO, Speech Commands and polyphonic piano rolls.

Waveforms are read with ``soundfile`` and turned into one feature vector per step by :class:`AudioFeatures` (framed
raw samples, log mel spectrogram or MFCC from ``torchaudio.transforms``). Features are standardised per dimension
with the training split's mean and standard deviation (``normalize``). The features of every split are cached under
``cache_dir`` (``rnnlab.data.cache.cached``), keyed by the settings, the seed and the source files.

Batches: inputs [B, T, F] float with per-utterance lengths; targets [B] class ids (``fsdd``, ``speech_commands``),
padded label sequences [B, S] with ``target_lengths`` [B] (CTC: ``fsdd_ctc``, ``yesno``; blank = class 0), or
[B, T, 88] multi-hot key vectors (``polyphonic``).
"""

from __future__ import annotations

import math
import re
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from rnnlab.data.base import SequenceDataModule, SequenceDataset, TaskSpec
from rnnlab.data.cache import cached, download, extract_tar, sha256_of
from rnnlab.errors import ConfigError, require_choice, require_positive

FEATURES = ("raw", "mel", "mfcc")
LOG_EPS = 1e-6  # log mel spectrogram: log(M + LOG_EPS), so silence stays finite

Split = tuple[list[torch.Tensor], list[torch.Tensor]]  # (inputs [T_i, F], targets) of one split


class AudioFeatures:
    """Waveform [N] at ``sample_rate`` -> features [T, F].

    raw:  non-overlapping frames of ``frame_size`` samples, the last zero-padded: T = ceil(N / frame_size),
          F = frame_size (the sequence stays short while every sample reaches the model)
    mel:  log mel power spectrogram log(M + 1e-6), window ``n_fft``, hop ``hop_length``, ``n_mels`` bands:
          T = N // hop_length + 1 (centred frames), F = n_mels
    mfcc: torchaudio's MFCC (DCT-II of the mel spectrogram in dB, 80 dB floor), ``n_mfcc`` of the ``n_mels``
          coefficients: T = N // hop_length + 1, F = n_mfcc
    """

    def __init__(
        self,
        features: str,
        sample_rate: int,
        frame_size: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        n_mfcc: int,
    ):
        require_choice("features", features, FEATURES)
        require_positive(frame_size=frame_size, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, n_mfcc=n_mfcc)
        if features == "mfcc" and n_mfcc > n_mels:
            raise ConfigError("n_mfcc", f"must be <= n_mels={n_mels}, got {n_mfcc}")
        self.features = features
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        melkwargs = dict(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        if features == "mel":
            self.transform = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, **melkwargs)
        elif features == "mfcc":
            self.transform = torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=n_mfcc, melkwargs=melkwargs)

    @property
    def size(self) -> int:
        return {"raw": self.frame_size, "mel": self.n_mels, "mfcc": self.n_mfcc}[self.features]

    @property
    def step_seconds(self) -> float:
        return (self.frame_size if self.features == "raw" else self.hop_length) / self.sample_rate

    def settings(self) -> dict:
        if self.features == "raw":
            return {"features": "raw", "sample_rate": self.sample_rate, "frame_size": self.frame_size}
        settings = {"features": self.features, "sample_rate": self.sample_rate, "n_fft": self.n_fft}
        settings.update(hop_length=self.hop_length, n_mels=self.n_mels)
        return settings | ({"n_mfcc": self.n_mfcc} if self.features == "mfcc" else {})

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.features == "raw":
            padded = torch.nn.functional.pad(waveform, (0, -len(waveform) % self.frame_size))
            return padded.view(-1, self.frame_size)
        with torch.no_grad():
            spectrum = self.transform(waveform)  # [F, T]
        if self.features == "mel":
            spectrum = torch.log(spectrum + LOG_EPS)
        return spectrum.T.contiguous()

    def describe(self) -> str:
        if self.features == "raw":
            return f"raw frames of {self.frame_size} samples ({1000 * self.step_seconds:.1f} ms per step)"
        size = self.n_mels if self.features == "mel" else self.n_mfcc
        return (
            f"{self.features} ({size} per step, window {self.n_fft}, hop {self.hop_length} = "
            f"{1000 * self.step_seconds:.1f} ms per step)"
        )


@contextmanager
def single_thread():
    """Run small FFTs on one thread: per-utterance transforms are many times slower with several competing threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SPEECH_COMMANDS_SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"  # torchaudio's checksum
BACKGROUND_FOLDER = "_background_noise_"
HASH_DIVIDER = "_nohash_"


class SpeechCommandsDataModule(AudioDataModule):
    """Speech Commands v0.02 (Warden 2018): which of the words is spoken in a one-second clip?

    ``root`` holds the extracted archive (torchaudio's SPEECHCOMMANDS layout): ``<word>/<speaker>_nohash_<n>.wav``
    (16 kHz mono, up to 1 s), ``validation_list.txt`` and ``testing_list.txt`` (paths relative to ``root``). The
    official split: the files of those two lists are the validation and test sets, all others (outside
    ``_background_noise_``) the training set (v0.02: 84,843 / 9,981 / 11,005 clips of 35 words). Classes: the word
    folders, sorted. With ``download: true`` the archive is fetched from ``url`` into ``root``'s parent, checked
    against ``sha256`` and extracted into ``root``. Metric accuracy; uniform guessing scores ln(words), the
    baseline. Batches: inputs [B, T, F] (T <= 101 at the default hop of 10 ms), targets [B] word ids.
    """

    SAMPLE_RATE = 16000

    def __init__(
        self,
        root: str,
        download: bool = False,
        url: str = SPEECH_COMMANDS_URL,
        sha256: str = SPEECH_COMMANDS_SHA256,
        frame_size: int = 160,
        n_fft: int = 400,
        hop_length: int = 160,
        **kwargs,
    ):
        super().__init__(root, frame_size=frame_size, n_fft=n_fft, hop_length=hop_length, **kwargs)
        self.download = download
        self.url = url
        self.sha256 = sha256
        self.words: list[str] = []
        self.output_size = 0  # the number of word folders, known once prepare_data has the files
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc")
        if not download:
            self.find_words()

    def prepare_data(self) -> None:
        if self.download and not (self.root / "testing_list.txt").is_file():
            archive = download(self.url, self.root.parent / Path(self.url).name, self.sha256)
            extract(archive, self.root)

    def find_words(self) -> None:
        """The classes (word folders) and the output size; a root without the archive's layout is a ConfigError."""
        for name in ("validation_list.txt", "testing_list.txt"):
            if not (self.root / name).is_file():
                raise ConfigError(
                    "root", f"{self.root / name} not found; point data.root at the extracted speech_commands_v0.02 "
                    "folder, or set data.download=true"
                )
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != BACKGROUND_FOLDER)
        self.words = [p.name for p in folders if any(p.glob("*.wav"))]
        if not self.words:
            raise ConfigError("root", f"no <word>/*.wav folders in {self.root}; restore the dataset")
        self.output_size = len(self.words)
        self.task = replace(self.task, baseline=math.log(len(self.words)))

    def list_files(self) -> list[Path]:
        if not self.words:
            self.find_words()
        files = sorted(path for word in self.words for path in (self.root / word).glob("*.wav"))
        for path in files:
            if HASH_DIVIDER not in path.name:
                raise ConfigError("root", f"{path} is not named <speaker>_nohash_<n>.wav; remove or rename it")
        return seeded_subset(files, self.max_files, torch.Generator().manual_seed(self.seed))

    def split_files(self, files: list[Path]) -> dict[str, list[Path]]:
        """The official split: files named in validation_list.txt / testing_list.txt, and all others for training."""
        listed = {}
        for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
            for line in (self.root / name).read_text().splitlines():
                if line.strip():
                    listed[line.strip()] = split
        chosen = {"train": [], "val": [], "test": []}
        for path in files:
            chosen[listed.get(path.relative_to(self.root).as_posix(), "train")].append(path)
        return chosen

    def load(self, files: list[Path]) -> dict[str, Split]:
        word_index = {word: i for i, word in enumerate(self.words)}
        splits = {}
        for name, paths in self.split_files(files).items():
            inputs = self.featurize([read_wav(path, self.SAMPLE_RATE) for path in paths])
            splits[name] = (inputs, [torch.tensor(word_index[path.parent.name]) for path in paths])
        return splits

    def label_description(self) -> str:
        shown = ", ".join(self.words[:12]) + (", ..." if len(self.words) > 12 else "")
        return f"classes: {len(self.words)} words ({shown})"


def extract(archive: Path, destination: Path) -> None:
    """Unpack a .tar.gz into ``destination`` via a temporary folder, so an interrupted extraction leaves nothing."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=destination.name + ".", suffix=".partial", dir=destination.parent))
    try:
        with tarfile.open(archive) as tar:
            extract_tar(tar, staging)
        if destination.exists():
            for item in staging.iterdir():
                item.replace(destination / item.name)
        else:
            staging.replace(destination)
    except (tarfile.TarError, OSError) as error:
        raise ConfigError("root", f"could not extract {archive} ({error}); delete it and download again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
