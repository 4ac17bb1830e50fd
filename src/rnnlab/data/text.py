"""Text: character- and word-level language modelling (Tiny Shakespeare, Penn Treebank) and IMDB sentiment.

Language models predict the next token at every step (per-step cross-entropy). Character corpora feed one-hot
inputs [B, T, V] and report bits per character (bpc = cross-entropy / ln 2); word-level PTB feeds token ids [B, T]
(``TaskSpec.input_vocab``, embedded by the task) and reports perplexity (ppl = exp of the token-averaged
cross-entropy). Tokenised corpora are cached under ``cache_dir`` (``rnnlab.data.cache.cached``).
"""

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
from torch.utils.data import Dataset

from rnnlab.data.base import SequenceDataModule, SequenceDataset, TaskSpec
from rnnlab.data.cache import cached, download, extract_tar, verify_checksum
from rnnlab.errors import ConfigError, require_positive

log = logging.getLogger(__name__)

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


class LanguageModelDataModule(SequenceDataModule):
    """Next-token prediction over fixed train/val/test token streams; subclasses read and tokenise the corpus.

    Batching (``stateful``):
      * false: each split cut into non-overlapping windows of ``seq_len`` + 1 tokens, windows shuffled (train);
      * true: each split cut into ``batch_size`` contiguous streams read ``seq_len`` steps at a time
        (:class:`TokenStreams`, Zaremba et al. 2014); the task carries the model state from batch to batch
        (``TaskSpec.stateful``) and the loader keeps the order. Val and test use the same number of streams.
    Batches: inputs [B, T, V] one-hot (characters) or [B, T] ids (``token_inputs``), targets [B, T], T <= seq_len.
    ``max_train_tokens`` keeps only the first tokens of the training split (quick runs and tests).
    ``task.baseline`` is the test cross-entropy of the smoothed unigram distribution of the training split.
    ``input_size``, ``output_size``, ``task`` and ``vocabulary`` are set by ``setup()``.
    """

    name: str  # the cache entry's name
    token_inputs: bool = False  # ids [B, T] for the task's embedding instead of one-hot [B, T, V]
    metric: str = "bpc"
    fix: str = "point data.root at the dataset folder"

    def __init__(
        self,
        root: str,
        seq_len: int = 100,
        stateful: bool = False,
        cache_dir: str | None = None,
        max_train_tokens: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        require_positive(seq_len=seq_len)
        if max_train_tokens is not None:
            require_positive(max_train_tokens=max_train_tokens)
        self.root = Path(root)
        self.seq_len = seq_len
        self.stateful = bool(stateful)
        self.cache_dir = cache_dir
        self.max_train_tokens = max_train_tokens
        self.vocabulary: list[str] = []
        self.token_counts: dict[str, int] = {}
        self.train_unigram_counts: torch.Tensor | None = None

    def unigram_counts(self) -> torch.Tensor:
        """How often each token id occurs in the training split (after ``max_train_tokens``): long [V]."""
        if self.train_unigram_counts is None:
            self.setup()
        return self.train_unigram_counts

    def source_files(self) -> list[Path]:
        """The corpus files ``tokenize`` reads."""
        raise NotImplementedError

    def tokenize(self) -> tuple[list[str], dict[str, torch.Tensor]]:
        """The vocabulary and each split's token ids (long [N]); bad files raise ConfigError naming them."""
        raise NotImplementedError

    def cache_settings(self) -> dict:
        return {}

    def check_sources(self) -> None:
        for path in self.source_files():
            if not path.is_file():
                raise ConfigError("root", f"{path} not found; {self.fix}")

    def build_splits(self) -> dict[str, Dataset]:
        self.check_sources()
        settings = {"version": PREPROCESSING_VERSION, **self.cache_settings()}
        if self.cache_dir is None:
            vocabulary, ids = self.tokenize()
        else:
            vocabulary, ids = cached(self.cache_dir, self.name, settings, self.source_files(), self.tokenize)
        if self.max_train_tokens is not None:
            ids = {**ids, "train": ids["train"][: self.max_train_tokens]}
        self.vocabulary = vocabulary
        self.input_size = self.output_size = len(vocabulary)
        self.token_counts = {name: len(split) for name, split in ids.items()}
        self.train_unigram_counts = torch.bincount(ids["train"], minlength=len(vocabulary))
        self.task = TaskSpec(
            kind="classification",
            per_step=True,
            metric=self.metric,
            baseline=unigram_cross_entropy(ids["train"], ids["test"], len(vocabulary)),
            input_vocab=len(vocabulary) if self.token_inputs else None,
            stateful=self.stateful,
        )
        one_hot = None if self.token_inputs else len(vocabulary)
        if self.stateful:
            return {name: TokenStreams(split, self.batch_size, self.seq_len, one_hot) for name, split in ids.items()}
        return {name: TokenWindows(split, self.seq_len, one_hot) for name, split in ids.items()}

    def describe(self) -> str:
        tokens = ", ".join(f"{name} {count}" for name, count in self.token_counts.items())
        shown = " ".join(repr(token) for token in self.vocabulary[:12])
        batching = f"{self.batch_size} stateful streams" if self.stateful else "shuffled windows"
        return (
            f"{super().describe()}; tokens: {tokens}; vocabulary {len(self.vocabulary)} ({shown}"
            f"{' ...' if len(self.vocabulary) > 12 else ''}); seq_len {self.seq_len}, {batching}; "
            f"unigram baseline {self.task.baseline:.3f} nats/token"
        )


class TinyShakespeareDataModule(LanguageModelDataModule):
    """Tiny Shakespeare (Karpathy 2015): next-character prediction, metric bits per character.

    ``root`` holds ``input.txt`` (1,115,394 characters, 65 distinct). The text is split contiguously 90/5/5 into
    train/val/test (1,003,854 / 55,769 / 55,771 characters); the vocabulary is every character of the file.
    Default windows of 100 characters: 10,038 / 557 / 557 train/val/test sequences. Unigram baseline 3.36 nats
    (4.85 bits) per character.
    """

    name = "tinyshakespeare"
    SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
    fix = "point data.root at the folder holding input.txt (karpathy/char-rnn's data/tinyshakespeare)"

    def source_files(self) -> list[Path]:
        return [self.root / "input.txt"]

    def cache_settings(self) -> dict:
        return {"split": self.SPLIT_FRACTIONS}

    def tokenize(self) -> tuple[list[str], dict[str, torch.Tensor]]:
        path = self.source_files()[0]
        text = read_text(path, self.fix)
        if not text:
            raise ConfigError("root", f"{path} is empty; {self.fix}")
        vocabulary = sorted(set(text))
        index = {char: i for i, char in enumerate(vocabulary)}
        ids = torch.tensor([index[char] for char in text], dtype=torch.long)
        train_end = int(len(ids) * self.SPLIT_FRACTIONS[0])
        val_end = train_end + int(len(ids) * self.SPLIT_FRACTIONS[1])
        return vocabulary, {"train": ids[:train_end], "val": ids[train_end:val_end], "test": ids[val_end:]}


class PTBCharDataModule(LanguageModelDataModule):
    """Penn Treebank, character level (Mikolov et al. 2012's ``ptb.char.{train,valid,test}.txt``), metric bpc.

    Each file writes every character followed by one space, ``_`` for a word break and a newline ending each
    sentence (which is a character to predict). Decoded: 5,017,482 / 393,042 / 442,423 characters, vocabulary of
    the 50 training characters (letters, digits, ``N``, punctuation, ``<unk>`` spelled out, ``_``, newline).
    Unigram baseline 3.01 nats (4.35 bits) per character.
    """

    name = "ptb_char"
    SPLITS = {"train": "train", "val": "valid", "test": "test"}
    fix = "point data.root at the folder holding ptb.char.{train,valid,test}.txt (Mikolov's simple-examples data)"

    def source_files(self) -> list[Path]:
        return [self.root / f"ptb.char.{split}.txt" for split in self.SPLITS.values()]

    def tokenize(self) -> tuple[list[str], dict[str, torch.Tensor]]:
        texts = {}
        for name, path in zip(self.SPLITS, self.source_files()):
            raw = read_text(path, self.fix)
            if not raw or raw[1::2].strip(" "):
                raise ConfigError("root", f"{path} is not one character then one space throughout; {self.fix}")
            texts[name] = raw[0::2]
        vocabulary = sorted(set(texts["train"]))
        index = {char: i for i, char in enumerate(vocabulary)}
        ids = {}
        for (name, text), path in zip(texts.items(), self.source_files()):
            unknown = set(text) - index.keys()
            if unknown:
                raise ConfigError("root", f"{path} has characters absent from training: {sorted(unknown)}; {self.fix}")
            ids[name] = torch.tensor([index[char] for char in text], dtype=torch.long)
        return vocabulary, ids


class PTBWordDataModule(LanguageModelDataModule):
    """Penn Treebank, word level (Mikolov's ``ptb.{train,valid,test}.txt``; Zaremba et al. 2014), metric perplexity.

    Each line's words plus ``<eos>``: 929,589 / 73,760 / 82,430 train/val/test tokens over a vocabulary of 10,000
    (the 9,999 training words including ``<unk>``, and ``<eos>``), ordered by training frequency. Inputs are token
    ids (``task.input_vocab`` = 10,000) that the task embeds. Default batching is stateful: 20 streams read 35
    words at a time, as in Zaremba et al. 2014 (val/test also use 20 streams, which skips each stream's first
    prediction). Unigram baseline 6.46 nats per word (perplexity 640).
    """

    name = "ptb_word"
    token_inputs = True
    metric = "ppl"
    SPLITS = {"train": "train", "val": "valid", "test": "test"}
    EOS = "<eos>"
    fix = "point data.root at the folder holding ptb.{train,valid,test}.txt (Mikolov's simple-examples data)"

    def __init__(self, root: str, seq_len: int = 35, stateful: bool = True, batch_size: int = 20, **kwargs):
        super().__init__(root, seq_len=seq_len, stateful=stateful, batch_size=batch_size, **kwargs)

    def source_files(self) -> list[Path]:
        return [self.root / f"ptb.{split}.txt" for split in self.SPLITS.values()]

    def tokenize(self) -> tuple[list[str], dict[str, torch.Tensor]]:
        words = {}
        for name, path in zip(self.SPLITS, self.source_files()):
            lines = read_text(path, self.fix).splitlines()
            words[name] = [word for line in lines for word in [*line.split(), self.EOS]]
            if not words[name]:
                raise ConfigError("root", f"{path} is empty; {self.fix}")
        counts = Counter(words["train"])
        vocabulary = sorted(counts, key=lambda word: (-counts[word], word))
        index = {word: i for i, word in enumerate(vocabulary)}
        ids = {}
        for (name, tokens), path in zip(words.items(), self.source_files()):
            unknown = set(tokens) - index.keys()
            if unknown:
                shown = sorted(unknown)[:5]
                raise ConfigError(
                    "root", f"{path} has {len(unknown)} words absent from training, e.g. {shown}; {self.fix}"
                )
            ids[name] = torch.tensor([index[word] for word in tokens], dtype=torch.long)
        return vocabulary, ids


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
