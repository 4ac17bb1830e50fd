"""Speech Commands v0.02 keyword classification, with its checksummed download and extraction."""

from __future__ import annotations

import math
import shutil
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from rnnlab.data.audio.base import AudioDataModule, Split, read_wav, seeded_subset
from rnnlab.data.base import TaskSpec
from rnnlab.data.cache import download, extract_tar
from rnnlab.errors import ConfigError

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
