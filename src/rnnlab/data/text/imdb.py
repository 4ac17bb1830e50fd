"""IMDB movie-review sentiment classification: checksummed download and extraction, tokenisation, vocabulary."""

from __future__ import annotations

import logging
import math
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import torch

from rnnlab.data.base import SequenceDataModule, SequenceDataset, TaskSpec
from rnnlab.data.cache import cached, download, extract_tar, verify_checksum
from rnnlab.data.text.tokens import PREPROCESSING_VERSION, length_summary, read_text
from rnnlab.errors import ConfigError, require_positive

log = logging.getLogger(__name__)


class IMDBDataModule(SequenceDataModule):
    """IMDB Large Movie Review Dataset (Maas et al. 2011): review sentiment, positive or negative, metric accuracy.

    ``root`` holds ``aclImdb/{train,test}/{pos,neg}/*.txt`` (12,500 reviews per folder), extracted from
    ``aclImdb_v1.tar.gz`` (84 MB). With ``download: true`` a missing folder is fetched from the Stanford URL, its
    sha256 checked (a mismatch is refused and deleted) and extracted; an archive already in ``root`` is checked
    and extracted without network. ``train`` is split seeded into train and ``val_fraction`` validation; the
    test folder is the test split (25,000). ``max_files`` keeps the first files (sorted names) per folder.

    Tokens: lower-cased, ``<br />`` removed, words (with inner apostrophes) and single punctuation marks. The
    vocabulary comes from the training split only: ``<pad>`` 0, ``<unk>`` 1, then the words seen at least
    ``min_freq`` times, most frequent first, ``max_vocab`` entries in all. Reviews keep their first ``max_len``
    tokens. Batches: inputs [B, T] ids (``task.input_vocab``, embedded by the task), lengths [B], targets [B]
    (0 negative, 1 positive). Classes are balanced: chance accuracy 0.5, baseline loss ln 2.
    """

    URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
    SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
    ARCHIVE = "aclImdb_v1.tar.gz"
    FOLDER = "aclImdb"
    CLASSES = ("neg", "pos")
    SPECIAL = ("<pad>", "<unk>")
    TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[^\sa-z0-9]")

    def __init__(
        self,
        root: str,
        download: bool = False,
        url: str = URL,
        sha256: str = SHA256,
        cache_dir: str | None = None,
        max_vocab: int = 20000,
        min_freq: int = 2,
        max_len: int = 400,
        val_fraction: float = 0.1,
        max_files: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        require_positive(max_vocab=max_vocab, min_freq=min_freq, max_len=max_len)
        if max_vocab <= len(self.SPECIAL):
            raise ConfigError("max_vocab", f"must exceed {len(self.SPECIAL)} (<pad>, <unk>), got {max_vocab}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must be in (0, 1), got {val_fraction!r}")
        if max_files is not None:
            require_positive(max_files=max_files)
        self.root = Path(root)
        self.download = bool(download)
        self.url = url
        self.sha256 = sha256
        self.cache_dir = cache_dir
        self.max_vocab = max_vocab
        self.min_freq = min_freq
        self.max_len = max_len
        self.val_fraction = val_fraction
        self.max_files = max_files
        self.output_size = len(self.CLASSES)
        self.vocabulary: list[str] = []

    @property
    def folder(self) -> Path:
        return self.root / self.FOLDER

    def prepare_data(self) -> None:
        """Fetch (``download``) or take the archive in ``root``, check its sha256, extract it; no-op when extracted."""
        archive = self.root / self.ARCHIVE
        if self.folder.is_dir() or not (self.download or archive.is_file()):
            return
        if self.download:
            download(self.url, archive, self.sha256)
        else:
            verify_checksum(archive, self.sha256)
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".extract-") as scratch:
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    extract_tar(tar, scratch)
            except (tarfile.TarError, OSError, EOFError) as error:
                raise ConfigError("root", f"{archive} could not be extracted ({error}); delete it and download again")
            extracted = Path(scratch) / self.FOLDER
            if not extracted.is_dir():
                raise ConfigError("root", f"{archive} holds no {self.FOLDER}/ folder; delete it and download again")
            shutil.move(str(extracted), self.folder)  # the folder appears complete or not at all
        log.info("extracted %s to %s", archive, self.folder)

    def review_files(self) -> dict[tuple[str, str], list[Path]]:
        """(split folder, class) -> sorted review files, checked to exist and be non-empty."""
        if not self.folder.is_dir():
            raise ConfigError(
                "root", f"{self.folder} not found; set data.download=true, or put {self.ARCHIVE} or its extracted "
                f"{self.FOLDER}/ folder in data.root"
            )
        files = {}
        for split in ("train", "test"):
            for label in self.CLASSES:
                directory = self.folder / split / label
                paths = sorted(directory.glob("*.txt")) if directory.is_dir() else []
                if not paths:
                    raise ConfigError("root", f"{directory} holds no reviews (*.txt); extract {self.ARCHIVE} again")
                files[split, label] = paths[: self.max_files]
        return files

    def tokens_of(self, path: Path) -> list[str]:
        text = read_text(path, f"extract {self.ARCHIVE} again").lower().replace("<br />", " ")
        tokens = self.TOKEN.findall(text)
        if not tokens:
            raise ConfigError("root", f"{path} holds no words; extract {self.ARCHIVE} again")
        return tokens[: self.max_len]

    def tokenize(self, files: dict[tuple[str, str], list[Path]]) -> dict:
        """Vocabulary from the training split and each split's (ids, labels)."""
        reviews = {"train": [], "test": []}
        for (split, label), paths in files.items():
            reviews[split] += [(self.tokens_of(path), self.CLASSES.index(label)) for path in paths]
        order = torch.randperm(len(reviews["train"]), generator=torch.Generator().manual_seed(self.seed)).tolist()
        val_count = max(1, round(len(order) * self.val_fraction))
        splits = {
            "train": [reviews["train"][i] for i in order[val_count:]],
            "val": [reviews["train"][i] for i in order[:val_count]],
            "test": reviews["test"],
        }
        counts = Counter(token for tokens, _ in splits["train"] for token in tokens)
        frequent = sorted((w for w, c in counts.items() if c >= self.min_freq), key=lambda w: (-counts[w], w))
        vocabulary = [*self.SPECIAL, *frequent[: self.max_vocab - len(self.SPECIAL)]]
        index = {word: i for i, word in enumerate(vocabulary)}
        unknown = self.SPECIAL.index("<unk>")
        encoded = {
            name: (
                [torch.tensor([index.get(t, unknown) for t in tokens], dtype=torch.long) for tokens, _ in items],
                [torch.tensor(label) for _, label in items],
            )
            for name, items in splits.items()
        }
        return {"vocabulary": vocabulary, "splits": encoded}

    def build_splits(self) -> dict[str, SequenceDataset]:
        files = self.review_files()
        settings = {
            "version": PREPROCESSING_VERSION,
            "max_vocab": self.max_vocab,
            "min_freq": self.min_freq,
            "max_len": self.max_len,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
        }
        sources = [path for paths in files.values() for path in paths]
        if self.cache_dir is None:
            data = self.tokenize(files)
        else:
            data = cached(self.cache_dir, "imdb", settings, sources, lambda: self.tokenize(files))
        self.vocabulary = data["vocabulary"]
        self.input_size = len(self.vocabulary)
        self.task = TaskSpec(
            kind="classification", per_step=False, metric="acc", baseline=math.log(2), input_vocab=self.input_size
        )
        return {name: SequenceDataset(inputs, targets) for name, (inputs, targets) in data["splits"].items()}

    def describe(self) -> str:
        parts = []
        for name, split in self.splits.items():
            positives = sum(int(label) for label in split.targets)
            lengths = [len(ids) for ids in split.inputs]
            parts.append(f"{name}: {positives} pos / {len(split) - positives} neg, {length_summary(lengths)}")
        return f"{super().describe()}; vocabulary {len(self.vocabulary)}; " + "; ".join(parts)
