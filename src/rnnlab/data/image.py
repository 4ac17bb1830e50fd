"""Images read as sequences: sequential / permuted MNIST and scikit-learn's 8x8 digits.

Layouts (``layout``), for an image of H x W pixels and B images per batch:
  * ``pixel``: one pixel per step, raster order: inputs [B, H*W, 1] (sequential MNIST, Le et al. 2015);
  * ``row``:   one row per step: inputs [B, H, W];
  * ``image``: the whole image as one step of the image layout (CONTRIBUTING.md, 'The model interface')
    [batch, time, channels, height, width]: inputs [B, 1, 1, H, W], lengths all 1, ``input_size`` = channels = 1. This
    is what multi-dimensional models (which scan the H x W grid themselves) read; a flat model cannot.
Targets are the class [B] (long); one per image, metric accuracy. Pixels are scaled to [0, 1].

``permute: true`` applies one fixed random permutation of the H*W pixels, drawn from ``permute_seed``, to every
image before the layout reshapes it: the permuted MNIST (pMNIST) of Le et al. (2015) / Arjovsky et al. (2016),
which spreads local structure over the whole sequence.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset

from rnnlab.data.base import SequenceDataModule, TaskSpec
from rnnlab.data.cache import download, verify_checksum
from rnnlab.errors import ConfigError, require_choice, require_positive

LAYOUTS = ("pixel", "row", "image")
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)


def read_idx(path: Path, magic: int) -> torch.Tensor:
    """An IDX file (LeCun et al. 1998's MNIST format, gzip-compressed) as a uint8 tensor of the shape its header gives.

    The header is big-endian: a 4-byte magic (0x0000, type 0x08 = unsigned byte, number of dimensions), then one
    4-byte size per dimension. A wrong magic, a truncated gzip stream or a payload whose size disagrees with the
    header raises ConfigError naming the file.
    """
    fix = "download it again (data.download=true) or point data.root at an intact copy"
    if not path.is_file():
        raise ConfigError("root", f"{path} not found; {fix}")
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise ConfigError("root", f"{path} is not a complete gzip file ({error}); {fix}") from None
    if len(data) < 4 or struct.unpack(">I", data[:4])[0] != magic:
        found = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
        raise ConfigError("root", f"{path} has IDX magic {found}, expected {magic}; {fix}")
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(data) < header:
        raise ConfigError("root", f"{path} ends inside its IDX header; {fix}")
    shape = struct.unpack(f">{dims}I", data[4:header])
    expected = header + int(torch.tensor(shape).prod())
    if len(data) != expected:
        raise ConfigError("root", f"{path} holds {len(data)} bytes, its header {shape} needs {expected}; {fix}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*shape)


def pixel_permutation(num_pixels: int, seed: int) -> torch.Tensor:
    """The fixed pMNIST permutation: ``torch.randperm`` of the pixel indices from its own generator."""
    return torch.randperm(num_pixels, generator=torch.Generator().manual_seed(seed))


class ImageSequences(Dataset):
    """uint8 images [N, H, W] and labels [N], each item read as (float sequence in the layout, label).

    Items: ``pixel`` [H*W, 1], ``row`` [H, W], ``image`` [1, 1, H, W] (time, channel, height, width);
    values / max_value.
    """

    batch_by_index = True  # see rnnlab.data.base.IndexBatches

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        layout: str,
        max_value: float,
        permutation: torch.Tensor | None = None,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.layout = layout
        self.max_value = max_value
        self.permutation = permutation

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].float() / self.max_value
        height, width = image.shape
        if self.permutation is not None:
            image = image.reshape(-1)[self.permutation].view(height, width)
        if self.layout == "pixel":
            sequence = image.reshape(-1, 1)
        elif self.layout == "row":
            sequence = image
        else:
            sequence = image.view(1, 1, height, width)
        return sequence, self.labels[index]


class ImageDataModule(SequenceDataModule):
    """Shared part of the image classifiers: layout, optional fixed pixel permutation, dims, describe().

    Subclasses implement ``load_splits`` returning {"train"|"val"|"test": (uint8 images [N, H, W], labels [N])} and
    set ``image_shape`` (H, W), ``max_value`` and ``num_classes`` before ``super().__init__`` finishes.
    """

    image_shape: tuple[int, int]
    max_value: float
    num_classes: int = 10
    frames_with = {"layout": "image"}

    def __init__(self, layout: str = "row", permute: bool = False, permute_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        require_choice("layout", layout, LAYOUTS)
        if isinstance(permute_seed, bool) or not isinstance(permute_seed, int) or permute_seed < 0:
            raise ConfigError("permute_seed", f"must be a non-negative integer, got {permute_seed!r}")
        self.layout = layout
        height, width = self.image_shape
        self.permutation = pixel_permutation(height * width, permute_seed) if permute else None
        self.permute_seed = permute_seed
        self.input_size = {"pixel": 1, "row": width, "image": 1}[layout]
        self.output_size = self.num_classes
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc")
        self.note: str | None = None

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def build_splits(self) -> dict[str, ImageSequences]:
        raw = self.load_splits()
        majority = Counter(raw["train"][1].tolist()).most_common(1)[0][0]
        test_labels = raw["test"][1]
        baseline = float((test_labels == majority).float().mean())
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc", baseline=baseline)
        return {
            name: ImageSequences(images, labels, self.layout, self.max_value, self.permutation)
            for name, (images, labels) in raw.items()
        }

    def describe(self) -> str:
        height, width = self.image_shape
        steps = {"pixel": height * width, "row": height, "image": 1}[self.layout]
        permuted = f", permuted pixels (permute_seed {self.permute_seed})" if self.permutation is not None else ""
        text = (
            f"{super().describe()}; {height}x{width} images, {steps} step(s) each ({self.layout} layout{permuted}), "
            f"{self.num_classes} classes, majority-class test accuracy {self.task.baseline:.3f}"
        )
        return f"{text}. {self.note}" if self.note else text


class PixelMNISTDataModule(ImageDataModule):
    """Sequential (``layout: pixel``, 784 steps) and permuted (``permute: true``) MNIST, or MNIST by rows.

    ``source: full`` reads the canonical IDX files in ``root`` (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
    t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; fetched from ``MIRRORS`` and checked against ``SHA256``
    when ``download: true``): train 55,000 / val 5,000 (a seeded part of the 60,000 training images) / test 10,000.
    ``source: t10k`` needs only the two t10k files (the offline shared data has no training images) and splits those
    10,000 images 8,000 / 1,000 / 1,000 (seeded by ``seed``); ``note`` says so, since its scores are not comparable
    with published MNIST numbers. ``train_size`` keeps the first N training images of the seeded order (for tests).
    """

    SOURCES = ("full", "t10k")
    FILES = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    SHA256 = {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }
    # torchvision's and TensorFlow's copies; yann.lecun.com is often unreachable, so it is not listed.
    MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
    FULL_VAL_SIZE = 5000
    T10K_SPLIT = (8000, 1000, 1000)

    image_shape = (28, 28)
    max_value = 255.0

    def __init__(
        self,
        root: str,
        source: str = "t10k",
        download: bool = False,
        train_size: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        require_choice("source", source, self.SOURCES)
        if train_size is not None:
            require_positive(train_size=train_size)
        self.root = Path(root)
        self.source = source
        self.download = download
        self.train_size = train_size
        if source == "t10k":
            self.note = (
                "MNIST source t10k: only the 10,000 official test images, split 8000/1000/1000 by data.seed "
                "(no official training image is used; scores are not comparable with published MNIST results)"
            )

    def needed_files(self) -> list[str]:
        keys = ["test_images", "test_labels"] + (["train_images", "train_labels"] if self.source == "full" else [])
        return [self.FILES[key] for key in keys]

    def prepare_data(self) -> None:
        if not self.download:
            return
        for name in self.needed_files():
            destination = self.root / name
            if destination.is_file():
                verify_checksum(destination, self.SHA256[name])
                continue
            failures = []
            for mirror in self.MIRRORS:
                try:
                    download(mirror + name, destination, self.SHA256[name])
                    break
                except ConfigError as error:
                    failures.append(error.message)
            else:
                raise ConfigError("download", f"could not fetch {name}: {'; '.join(failures)}")

    def read_pair(self, images_key: str, labels_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.root / self.FILES[images_key], self.root / self.FILES[labels_key]
        if not image_path.is_file() and images_key == "train_images" and not self.download:
            raise ConfigError(
                "root",
                f"{image_path} not found; set data.download=true (needs network) or data.source=t10k "
                "(the offline shared data holds only the test images)",
            )
        images, labels = read_idx(image_path, IDX_IMAGES_MAGIC), read_idx(label_path, IDX_LABELS_MAGIC)
        if len(images) != len(labels) or tuple(images.shape[1:]) != self.image_shape:
            raise ConfigError(
                "root", f"{image_path} holds images {tuple(images.shape)} but {label_path} {len(labels)} labels"
            )
        return images, labels

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        test_images, test_labels = self.read_pair("test_images", "test_labels")
        if self.source == "t10k":
            order = torch.randperm(len(test_images), generator=generator)
            n_train, n_val, _ = self.T10K_SPLIT
            parts = {
                "train": order[:n_train],
                "val": order[n_train : n_train + n_val],
                "test": order[n_train + n_val :],
            }
            splits = {name: (test_images[index], test_labels[index]) for name, index in parts.items()}
        else:
            train_images, train_labels = self.read_pair("train_images", "train_labels")
            order = torch.randperm(len(train_images), generator=generator)
            val, train = order[: self.FULL_VAL_SIZE], order[self.FULL_VAL_SIZE :]
            splits = {
                "train": (train_images[train], train_labels[train]),
                "val": (train_images[val], train_labels[val]),
                "test": (test_images, test_labels),
            }
        if self.train_size is not None:
            images, labels = splits["train"]
            splits["train"] = (images[: self.train_size], labels[: self.train_size])
        return splits


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test part: 1,797 images, 16 grey levels), offline.

    A seeded random split: 1,437 train / 180 val / 180 test. ``layout: row`` gives 8 steps of 8 features, ``pixel``
    64 steps of 1, ``image`` one [1, 8, 8] step. Pixels 0-16 are scaled to [0, 1].
    """

    VAL_SIZE = 180
    TEST_SIZE = 180

    image_shape = (8, 8)
    max_value = 16.0

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ConfigError("_target_", "the digits data needs scikit-learn: pip install scikit-learn") from None
        bunch = load_digits()
        images = torch.as_tensor(bunch.images).to(torch.uint8)
        labels = torch.as_tensor(bunch.target).long()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        held_out = self.TEST_SIZE + self.VAL_SIZE
        parts = {"train": order[held_out:], "val": order[self.TEST_SIZE : held_out], "test": order[: self.TEST_SIZE]}
        return {name: (images[index], labels[index]) for name, index in parts.items()}
