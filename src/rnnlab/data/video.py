"""Video datamodules: generated Moving-MNIST-style clips and class-per-folder video collections.

Frames are scaled to [0, 1]. With ``flatten: true`` (default) a clip is a sequence of flattened frames, inputs
[B, T, C*H*W] with ``input_size`` = C*H*W, which any recurrent model reads. With ``flatten: false`` inputs keep the
video layout (CONTRIBUTING.md, 'The model interface') [B, T, C, H, W] and ``input_size`` is the channel count C, for
models that read frames as images (convolutional / multi-dimensional recurrent models); ``frame_shape`` is (C, H, W)
either way.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from rnnlab.data.base import SequenceDataModule, TaskSpec
from rnnlab.data.cache import cached
from rnnlab.data.image import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, PixelMNISTDataModule, read_idx
from rnnlab.errors import ConfigError, require_choice, require_positive

MODES = ("predict", "classify")
LABELS = ("digit", "direction")
COLORS = ("gray", "rgb")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
DIGIT_PAIRS = list(itertools.combinations_with_replacement(range(10), 2))  # 55 unordered pairs, the 2-digit classes


def copy_last_frame_mse(clips: torch.Tensor, context_frames: int) -> float:
    """MSE of predicting every future frame as the last context frame: mean over clips, future steps and pixels.

    ``clips`` [N, T, D]; the future is steps ``context_frames`` .. T-1, predicted by step ``context_frames - 1``.
    """
    future = clips[:, context_frames:]
    last = clips[:, context_frames - 1 : context_frames]
    return float(((future - last) ** 2).mean())


def bounce_trajectories(start: torch.Tensor, velocity: torch.Tensor, steps: int, limit: int) -> torch.Tensor:
    """Top-left positions [..., steps, 2] (long) of points moving at constant speed and reflecting off [0, limit].

    ``start`` [..., 2] in [0, limit], ``velocity`` [..., 2] with |component| < limit (pixels per frame). A step that
    leaves the interval is mirrored back into it and that velocity component flips sign (elastic bounce).
    """
    position, velocity = start.clone().float(), velocity.clone().float()
    positions = [position]
    for _ in range(steps - 1):
        position = position + velocity
        low, high = position < 0, position > limit
        position = torch.where(low, -position, torch.where(high, 2 * limit - position, position))
        velocity = torch.where(low | high, -velocity, velocity)
        positions.append(position)
    return torch.stack(positions, dim=-2).round().long().clamp(0, limit)


class MovingDigitClips(Dataset):
    """Clips rendered on demand from digit images and their trajectories (memory: the trajectories only).

    ``digits`` [P, s, s] float in [0, 1]; ``which`` [N, K] digit indices; ``positions`` [N, K, T, 2] (row, column) of
    each digit's top-left corner. Overlapping digits combine by maximum (Srivastava et al. 2015). Items:
    predict: (inputs [T, D], targets [T, D], target mask [T]), the inputs blank from step ``context_frames`` on;
    classify: (inputs [T, D], label). D = H*W flattened, or inputs [T, 1, H, W] with ``flatten`` false.
    """

    def __init__(
        self,
        digits: torch.Tensor,
        which: torch.Tensor,
        positions: torch.Tensor,
        labels: torch.Tensor | None,
        frame_size: int,
        context_frames: int | None,
        flatten: bool,
    ):
        self.digits = digits
        self.which = which
        self.positions = positions
        self.labels = labels
        self.frame_size = frame_size
        self.context_frames = context_frames
        self.flatten = flatten

    def __len__(self) -> int:
        return len(self.which)

    def frames(self, index: int) -> torch.Tensor:
        """The clip [T, H, W]."""
        steps, size, patch = self.positions.shape[2], self.frame_size, self.digits.shape[-1]
        canvas = torch.zeros(steps, size, size)
        for digit, path in zip(self.which[index], self.positions[index]):
            image = self.digits[digit]
            for t, (row, col) in enumerate(path.tolist()):
                region = canvas[t, row : row + patch, col : col + patch]
                torch.maximum(region, image, out=region)
        return canvas

    def __getitem__(self, index: int):
        frames = self.frames(index)
        steps = frames.shape[0]
        flat = frames.reshape(steps, -1)
        inputs = flat if self.flatten else frames.unsqueeze(1)
        if self.labels is not None:
            return inputs, self.labels[index]
        inputs = inputs.clone()
        inputs[self.context_frames :] = 0.0
        return inputs, flat, torch.arange(steps) >= self.context_frames


class MovingDigitsDataModule(SequenceDataModule):
    """Moving-MNIST-style bouncing digits (Srivastava et al. 2015), generated from ``data.seed``.

    Each clip has ``num_frames`` frames of ``frame_size`` x ``frame_size`` pixels in which ``num_digits`` (1-2) digit
    images of ``digit_size`` pixels move at ``speed`` pixels per frame from a random position and direction,
    bouncing off the edges, never leaving the canvas. Digit images come from scikit-learn's 8x8 digits (default,
    offline; upscaled bilinearly) or, when ``root`` is given, from the MNIST t10k IDX files in it. The digit
    images are split 80/10/10 (seeded) so validation and test clips show digit images never seen in training.

    ``mode: predict`` (frame prediction): a clip is T = ``num_frames`` steps; the model reads the first
    ``context_frames`` frames, then blank (zero) frames, and at every step t outputs frame t; the loss (MSE per
    pixel) counts only the future steps t >= ``context_frames`` (batch key ``target_mask``). So the model sees 10
    frames and must produce the next 10. Batches: inputs [B, T, H*W] (or [B, T, 1, H, W]), targets [B, T, H*W],
    target_mask [B, T]. ``task.baseline`` is the copy-last-frame MSE on the test clips under the same loss; a model
    that predicts blank frames scores ``blank_mse`` (logged), which the copy baseline exceeds once digits move.

    ``mode: classify``: inputs are all T frames, one label per clip. ``label: digit``: which digit (10 classes) for
    one digit, or which unordered pair of digits (55 classes, ``DIGIT_PAIRS`` order) for two; ``label: direction``
    (one digit only): the initial direction of motion, one of 8 compass directions k * 45 degrees (k = class), which
    no single frame reveals. Metric accuracy; ``task.baseline`` is the majority-class test accuracy.
    """

    SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
    frames_with = {"flatten": False}

    def __init__(
        self,
        root: str | None = None,
        mode: str = "predict",
        label: str = "digit",
        num_digits: int = 1,
        frame_size: int = 32,
        digit_size: int = 16,
        num_frames: int = 20,
        context_frames: int = 10,
        speed: float = 2.0,
        flatten: bool = True,
        train_size: int = 2000,
        val_size: int = 200,
        test_size: int = 200,
        **kwargs,
    ):
        super().__init__(**kwargs)
        require_choice("mode", mode, MODES)
        require_choice("label", label, LABELS)
        require_choice("num_digits", num_digits, (1, 2))
        require_positive(
            frame_size=frame_size, digit_size=digit_size, num_frames=num_frames, context_frames=context_frames,
            speed=speed, train_size=train_size, val_size=val_size, test_size=test_size,
        )  # fmt: skip
        if digit_size >= frame_size:
            raise ConfigError("digit_size", f"must be smaller than frame_size={frame_size}, got {digit_size}")
        if speed >= frame_size - digit_size:
            raise ConfigError(
                "speed", f"must be below frame_size - digit_size = {frame_size - digit_size}, got {speed}"
            )
        if mode == "predict" and context_frames >= num_frames:
            raise ConfigError("context_frames", f"must be below num_frames={num_frames} in predict mode")
        if mode == "classify" and label == "direction" and num_digits != 1:
            raise ConfigError("label", "label=direction needs num_digits=1")
        self.root = Path(root) if root else None
        self.mode, self.label, self.num_digits = mode, label, num_digits
        self.frame_size, self.digit_size, self.num_frames = frame_size, digit_size, num_frames
        self.context_frames, self.speed, self.flatten = context_frames, speed, flatten
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.frame_shape = (1, frame_size, frame_size)
        pixels = frame_size * frame_size
        self.input_size = pixels if flatten else 1
        if mode == "predict":
            self.output_size = pixels
            self.task = TaskSpec(kind="regression", per_step=True, metric="mse")
        else:
            self.output_size = 8 if label == "direction" else (10 if num_digits == 1 else len(DIGIT_PAIRS))
            self.task = TaskSpec(kind="classification", per_step=False, metric="acc")
        self.blank_mse: float | None = None

    def digit_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Digit images [P, digit_size, digit_size] in [0, 1] and their labels [P]."""
        if self.root is None:
            try:
                from sklearn.datasets import load_digits
            except ImportError:
                raise ConfigError("root", "sklearn digits need scikit-learn: pip install scikit-learn") from None
            bunch = load_digits()
            images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0
            labels = torch.as_tensor(bunch.target).long()
        else:
            files = PixelMNISTDataModule.FILES
            images = read_idx(self.root / files["test_images"], IDX_IMAGES_MAGIC).float() / 255.0
            labels = read_idx(self.root / files["test_labels"], IDX_LABELS_MAGIC).long()
            if len(images) != len(labels):
                raise ConfigError("root", f"{self.root}: {len(images)} MNIST images but {len(labels)} labels")
        resized = F.interpolate(
            images.unsqueeze(1), size=(self.digit_size, self.digit_size), mode="bilinear", antialias=True
        )
        return resized.squeeze(1).clamp(0.0, 1.0), labels

    def generate(self, digits: torch.Tensor, digit_labels: torch.Tensor, pool: torch.Tensor, count: int, generator):
        limit = self.frame_size - self.digit_size
        which = pool[torch.randint(len(pool), (count, self.num_digits), generator=generator)]
        start = torch.rand(count, self.num_digits, 2, generator=generator) * limit
        if self.mode == "classify" and self.label == "direction":
            compass = torch.randint(8, (count, self.num_digits), generator=generator)
            angle = compass.float() * (math.pi / 4)
        else:
            compass = None
            angle = torch.rand(count, self.num_digits, generator=generator) * (2 * math.pi)
        # (row, column) velocity: direction k * 45 degrees counter-clockwise from "right", rows grow downwards
        velocity = self.speed * torch.stack([-torch.sin(angle), torch.cos(angle)], dim=-1)
        positions = bounce_trajectories(start, velocity, self.num_frames, limit)
        labels = None
        if self.mode == "classify":
            if compass is not None:
                labels = compass[:, 0]
            elif self.num_digits == 1:
                labels = digit_labels[which[:, 0]]
            else:
                pair_index = {pair: i for i, pair in enumerate(DIGIT_PAIRS)}
                sorted_pairs = digit_labels[which].sort(dim=1).values.tolist()
                labels = torch.tensor([pair_index[tuple(pair)] for pair in sorted_pairs])
        context = self.context_frames if self.mode == "predict" else None
        return MovingDigitClips(digits, which, positions, labels, self.frame_size, context, self.flatten)

    def build_splits(self) -> dict[str, MovingDigitClips]:
        generator = torch.Generator().manual_seed(self.seed)
        digits, digit_labels = self.digit_images()
        order = torch.randperm(len(digits), generator=generator)
        n_train = int(len(order) * self.SPLIT_FRACTIONS[0])
        n_val = int(len(order) * self.SPLIT_FRACTIONS[1])
        pools = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        splits = {
            name: self.generate(digits, digit_labels, pools[name], size, generator) for name, size in self.sizes.items()
        }
        test = splits["test"]
        if self.mode == "predict":
            clips = torch.stack([test.frames(i).flatten(1) for i in range(len(test))])
            baseline = copy_last_frame_mse(clips, self.context_frames)
            self.blank_mse = float((clips[:, self.context_frames :] ** 2).mean())
        else:
            majority = Counter(splits["train"].labels.tolist()).most_common(1)[0][0]
            baseline = float((test.labels == majority).float().mean())
        self.task = TaskSpec(self.task.kind, self.task.per_step, self.task.metric, baseline=baseline)
        return splits

    def describe(self) -> str:
        source = f"MNIST t10k digits from {self.root}" if self.root else "scikit-learn 8x8 digits"
        what = (
            f"predict frames {self.context_frames + 1}-{self.num_frames} from frames 1-{self.context_frames}: "
            f"copy-last-frame test MSE {self.task.baseline:.5f}, blank-frame test MSE {self.blank_mse:.5f}"
            if self.mode == "predict"
            else f"classify by {self.label} into {self.output_size} classes, "
            f"majority test accuracy {self.task.baseline:.3f}"
        )
        return (
            f"{super().describe()}; {self.num_frames} frames of {self.frame_size}x{self.frame_size} with "
            f"{self.num_digits} bouncing {self.digit_size}px digit(s) ({source}); {what}"
        )


def natural_key(path: Path) -> list:
    """Sort key that orders frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def to_frames(frames: torch.Tensor, size: tuple[int, int], color: str) -> torch.Tensor:
    """uint8 [T, C_in, H_in, W_in] (C_in 1, 3 or 4) -> uint8 [T, C, H, W]: ITU-R 601 luma for gray, bilinear resize."""
    frames = frames.float()
    if frames.shape[1] == 4:
        frames = frames[:, :3]
    if color == "gray" and frames.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        frames = (frames * weights).sum(1, keepdim=True)
    elif color == "rgb" and frames.shape[1] == 1:
        frames = frames.expand(-1, 3, -1, -1)
    if tuple(frames.shape[-2:]) != size:
        frames = F.interpolate(frames, size=size, mode="bilinear", antialias=True)
    return frames.round().clamp(0, 255).to(torch.uint8)


def read_frame_folder(folder: Path, size: tuple[int, int], color: str, stride: int, max_frames: int | None):
    """A folder of frame images (sorted naturally by name) as uint8 [T, C, H, W]."""
    from PIL import Image, UnidentifiedImageError

    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    files = files[::stride][:max_frames]
    if not files:
        raise ConfigError("root", f"{folder} holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
    frames = []
    for file in files:
        try:
            with Image.open(file) as image:
                resized = image.convert("L" if color == "gray" else "RGB").resize(size[::-1], Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as error:
            raise ConfigError("root", f"{file} is not a readable image ({error}); replace or remove it") from None
        array = torch.from_numpy(np.array(resized, dtype=np.uint8))
        frames.append(array.unsqueeze(0) if array.dim() == 2 else array.permute(2, 0, 1))
    return torch.stack(frames)


def read_video_file(path: Path, size: tuple[int, int], color: str, stride: int, max_frames: int | None):
    """A video file decoded with torchcodec (imported only here) as uint8 [T, C, H, W]."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError:
        raise ConfigError(
            "root",
            f"{path}: reading video files needs torchcodec (pip install torchcodec; it uses the system FFmpeg), "
            "or store each clip as a folder of frame images frame_0001.png ...",
        ) from None
    try:
        decoder = VideoDecoder(str(path))
        frames = decoder[0 : len(decoder) : stride][:max_frames]
    except Exception as error:  # torchcodec raises RuntimeError/ValueError subclasses for undecodable files
        raise ConfigError("root", f"{path} could not be decoded ({error}); replace or remove it") from None
    if len(frames) == 0:
        raise ConfigError("root", f"{path} has no video frames")
    return to_frames(frames, size, color)


class VideoClips(Dataset):
    """uint8 clips [T_i, C, H, W] and labels; items (float [T_i, C*H*W] or [T_i, C, H, W] in [0, 1], label)."""

    def __init__(self, clips: list[torch.Tensor], labels: torch.Tensor, flatten: bool):
        self.clips = clips
        self.labels = labels
        self.flatten = flatten

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        clip = self.clips[index].float() / 255.0
        return (clip.flatten(1) if self.flatten else clip), self.labels[index]


class VideoFolderDataModule(SequenceDataModule):
    """Class-per-folder video classification: ``root/<class>/<clip>`` where a clip is a folder of frame images
    (``frame_0001.png`` ..., any of ``IMAGE_SUFFIXES``, read with PIL) or a video file (``VIDEO_SUFFIXES``, read with
    torchcodec when it is installed).

    Classes are the sorted sub-folder names (label = index). Frames are converted to ``color`` (gray: 1 channel,
    rgb: 3), resized to ``frame_size`` (an int for square frames or [height, width]), every ``frame_stride``-th kept,
    at most ``max_frames``. Clips may differ in length (padded at the end, ``lengths`` per clip). Split per class,
    seeded: ``test_fraction`` and ``val_fraction`` of each class's clips (rounded, at least one clip stays in
    train). Decoded clips are cached under ``cache_dir`` (keyed by these settings and the files' sizes and mtimes).
    Batches: inputs [B, T, C*H*W] (or [B, T, C, H, W]), targets [B]; metric accuracy.
    """

    frames_with = {"flatten": False}

    def __init__(
        self,
        root: str,
        frame_size: int | list[int] = 32,
        color: str = "gray",
        frame_stride: int = 1,
        max_frames: int | None = None,
        flatten: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        cache_dir: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        require_choice("color", color, COLORS)
        require_positive(frame_stride=frame_stride)
        if max_frames is not None:
            require_positive(max_frames=max_frames)
        size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in size):
            raise ConfigError("frame_size", f"must be a positive int or [height, width], got {frame_size!r}")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise ConfigError(key, f"must be in (0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError("val_fraction", "val_fraction + test_fraction must be below 1")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError("root", f"{self.root} is not a folder; expected root/<class>/<clip folder or file>")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(self.classes) < 2:
            raise ConfigError("root", f"{self.root} needs at least two class folders, found {self.classes}")
        self.frame_size, self.color, self.flatten = size, color, flatten
        self.frame_stride, self.max_frames = frame_stride, max_frames
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.cache_dir = cache_dir
        channels = 1 if color == "gray" else 3
        self.frame_shape = (channels, *size)
        self.input_size = channels * size[0] * size[1] if flatten else channels
        self.output_size = len(self.classes)
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc")
        self.paths: dict[str, list[Path]] = {}

    def clip_paths(self) -> list[tuple[Path, int]]:
        found = []
        for label, name in enumerate(self.classes):
            entries = sorted(
                p
                for p in (self.root / name).iterdir()
                if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES)
            )
            if not entries:
                raise ConfigError("root", f"{self.root / name} holds no clip folders or video files")
            found.extend((path, label) for path in entries)
        return found

    def decode(self, clips: list[tuple[Path, int]]) -> list[torch.Tensor]:
        args = (self.frame_size, self.color, self.frame_stride, self.max_frames)
        return [read_frame_folder(p, *args) if p.is_dir() else read_video_file(p, *args) for p, _ in clips]

    def build_splits(self) -> dict[str, VideoClips]:
        clips = self.clip_paths()
        sources = [f for p, _ in clips for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
        settings = dict(
            root=str(self.root.resolve()), frame_size=self.frame_size, color=self.color,
            frame_stride=self.frame_stride, max_frames=self.max_frames,
        )  # fmt: skip
        if self.cache_dir:
            frames = cached(self.cache_dir, "video_folder", settings, sources, lambda: self.decode(clips))
        else:
            frames = self.decode(clips)
        labels = torch.tensor([label for _, label in clips])
        generator = torch.Generator().manual_seed(self.seed)
        parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for label in range(len(self.classes)):
            members = torch.nonzero(labels == label).flatten()
            members = members[torch.randperm(len(members), generator=generator)].tolist()
            n_test = min(round(len(members) * self.test_fraction), len(members) - 1)
            n_val = min(round(len(members) * self.val_fraction), len(members) - 1 - n_test)
            parts["test"] += members[:n_test]
            parts["val"] += members[n_test : n_test + n_val]
            parts["train"] += members[n_test + n_val :]
        for name in ("val", "test"):
            if not parts[name]:
                raise ConfigError(f"{name}_fraction", f"leaves the {name} split empty; add clips or raise it")
        self.paths = {name: [clips[i][0] for i in index] for name, index in parts.items()}
        majority = Counter(labels[parts["train"]].tolist()).most_common(1)[0][0]
        baseline = float((labels[parts["test"]] == majority).float().mean())
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc", baseline=baseline)
        return {
            name: VideoClips([frames[i] for i in index], labels[index], self.flatten) for name, index in parts.items()
        }

    def describe(self) -> str:
        lengths = [len(clip) for split in self.splits.values() for clip in split.clips]
        return (
            f"{super().describe()}; {len(self.classes)} classes ({', '.join(self.classes)}), frames "
            f"{'x'.join(map(str, self.frame_shape))}, clip lengths {min(lengths)}-{max(lengths)}, "
            f"majority-class test accuracy {self.task.baseline:.3f}"
        )
