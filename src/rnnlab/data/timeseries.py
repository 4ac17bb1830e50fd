"""Multivariate time-series classification: the UEA/UCR archive's .ts files (Bagnall et al. 2018)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch

from rnnlab.data.base import SequenceDataModule, SequenceDataset, TaskSpec
from rnnlab.errors import ConfigError


def parse_ts(path: Path) -> tuple[list[torch.Tensor], list[str], list[str]]:
    """Read a .ts file: (series [T_i, D] float each, their class-label strings, the header's class labels in order).

    Format (sktime / timeseriesclassification.com): ``#`` comment lines, ``@key value`` header lines up to
    ``@data``, then one case per line: D dimensions separated by ``:``, values by ``,``, the class label last.
    Cases may differ in length (``@equalLength false``); all dimensions of one case must share it. Trailing
    missing values (``?`` or NaN, used to pad unequal lengths) are dropped; a missing value inside a series, time
    stamps and regression targets are not supported. Any violation raises ConfigError naming file and line.
    """
    if not path.is_file():
        raise ConfigError("root", f"{path} not found; data.root must hold <dataset>/<dataset>_TRAIN.ts and _TEST.ts")
    header: dict[str, str] = {}
    series, labels = [], []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{number}"
            if not in_data:
                if not line.startswith("@"):
                    raise ConfigError("root", f"{where}: expected an @header line before @data, got {line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                    if header.get("classlabel", "").split()[:1] != ["true"]:
                        raise ConfigError(
                            "root", f"{path}: no '@classLabel true ...' header (regression sets unsupported)"
                        )
                    if header.get("timestamps", "false").lower() == "true":
                        raise ConfigError("root", f"{path}: '@timeStamps true' is not supported")
                    continue
                header[key] = value.strip()
                continue
            *dims, label = line.split(":")
            if not dims:
                raise ConfigError("root", f"{where}: a case needs at least one dimension before its label")
            try:
                values = [[float(v) if v.strip() != "?" else math.nan for v in dim.split(",")] for dim in dims]
            except ValueError as error:
                raise ConfigError("root", f"{where}: unreadable value ({error})") from None
            length = len(values[0])
            if any(len(dim) != length for dim in values):
                raise ConfigError(
                    "root", f"{where}: dimensions of one case differ in length {[len(d) for d in values]}"
                )
            case = torch.tensor(values, dtype=torch.float32).T  # [T, D]
            valid = ~torch.isnan(case).any(1)
            steps = int(valid.nonzero().max()) + 1 if valid.any() else 0
            if steps == 0 or not valid[:steps].all():
                raise ConfigError("root", f"{where}: missing values inside a series are not supported")
            series.append(case[:steps])
            labels.append(label.strip())
    if not in_data or not series:
        raise ConfigError("root", f"{path}: no @data section with cases (truncated file?)")
    dims = {s.shape[1] for s in series}
    if len(dims) != 1:
        raise ConfigError("root", f"{path}: cases have different numbers of dimensions {sorted(dims)}")
    classes = header["classlabel"].split()[1:]
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ConfigError("root", f"{path}: labels {unknown[:5]} are not in the @classLabel header {classes}")
    return series, labels, classes


class UEADataModule(SequenceDataModule):
    """A UEA/UCR classification set in .ts format: ``root/<dataset>/<dataset>_{TRAIN,TEST}.ts``.

    Shipped offline (shared data ``uea/``): BasicMotions (6 dims x 100 steps, 4 classes, 40 train / 40 test),
    JapaneseVowels (12 dims x 7-29 steps, 9 classes, 270 / 370), GunPoint (1 dim x 150 steps, 2 classes, 50 / 150);
    any other set in the same layout works. Class labels map to 0..C-1 in the order of the ``@classLabel`` header.
    The official test file is the test split; validation is a seeded, per-class stratified ``val_fraction`` of the
    training file (BasicMotions 32 / 8, JapaneseVowels 216 / 54, GunPoint 40 / 10 at the default 0.2). Every
    dimension is z-normalised with the mean and standard deviation over all time steps of the remaining training
    cases. Batches: inputs [B, T, D] padded at the end, lengths [B], targets [B]; metric accuracy, ``task.baseline``
    the majority-class test accuracy.
    """

    def __init__(self, root: str, dataset: str = "BasicMotions", val_fraction: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must be in (0, 1), got {val_fraction!r}")
        folder = Path(root) / dataset
        if not folder.is_dir():
            known = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
            raise ConfigError("dataset", f"{folder} not found; sets under {root}: {known or 'none'}")
        self.dataset = dataset
        self.val_fraction = val_fraction
        self.files = {"train": folder / f"{dataset}_TRAIN.ts", "test": folder / f"{dataset}_TEST.ts"}
        self.train_cases = parse_ts(self.files["train"])  # dims and classes are needed before setup
        train, _, self.classes = self.train_cases
        self.input_size = train[0].shape[1]
        self.output_size = len(self.classes)
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc")
        self.mean = self.std = None
        self.split_indices: dict[str, list[int]] = {}

    def build_splits(self) -> dict[str, SequenceDataset]:
        train, train_labels, classes = self.train_cases
        test, test_labels, test_classes = parse_ts(self.files["test"])
        if test_classes != classes or test[0].shape[1] != self.input_size:
            raise ConfigError("root", f"{self.files['test']} disagrees with {self.files['train']} on classes or dims")
        index = {name: i for i, name in enumerate(classes)}
        y_train = torch.tensor([index[name] for name in train_labels])
        y_test = torch.tensor([index[name] for name in test_labels])
        generator = torch.Generator().manual_seed(self.seed)
        fit, val = [], []
        for label in range(len(classes)):
            members = torch.nonzero(y_train == label).flatten()
            members = members[torch.randperm(len(members), generator=generator)].tolist()
            n_val = min(round(len(members) * self.val_fraction), len(members) - 1)
            val += members[:n_val]
            fit += members[n_val:]
        if not val:
            raise ConfigError("val_fraction", f"leaves no validation case in {self.files['train']}; raise it")
        self.split_indices = {"train": fit, "val": val}  # rows of the TRAIN file
        steps = torch.cat([train[i] for i in fit])
        self.mean = steps.mean(0)
        self.std = steps.std(0).clamp_min(1e-8)

        def normal(cases: list[torch.Tensor]) -> list[torch.Tensor]:
            return [(x - self.mean) / self.std for x in cases]

        majority = Counter(y_train[fit].tolist()).most_common(1)[0][0]
        baseline = float((y_test == majority).float().mean())
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc", baseline=baseline)
        return {
            "train": SequenceDataset(normal([train[i] for i in fit]), list(y_train[fit])),
            "val": SequenceDataset(normal([train[i] for i in val]), list(y_train[val])),
            "test": SequenceDataset(normal(test), list(y_test)),
        }

    def describe(self) -> str:
        lengths = [len(x) for split in self.splits.values() for x in split.inputs]
        return (
            f"{super().describe()}; UEA {self.dataset}: {self.input_size} dims, lengths {min(lengths)}-{max(lengths)}, "
            f"{len(self.classes)} classes ({' '.join(self.classes)}), z-normalised by train statistics, "
            f"majority-class test accuracy {self.task.baseline:.3f}"
        )
