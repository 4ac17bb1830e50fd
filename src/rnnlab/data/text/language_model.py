"""Next-token language modelling: the shared :class:`LanguageModelDataModule` and its corpora, Tiny Shakespeare and
Penn Treebank (character and word level)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset

from rnnlab.data.base import SequenceDataModule, TaskSpec
from rnnlab.data.cache import cached
from rnnlab.data.text.tokens import PREPROCESSING_VERSION, TokenStreams, TokenWindows, read_text, unigram_cross_entropy
from rnnlab.errors import ConfigError, require_positive


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
