"""Generated Moving-MNIST-style clips: bouncing-digit trajectories, clips rendered on demand, and their datamodule
for frame prediction or clip classification."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from rnnlab.data.base import SequenceDataModule, TaskSpec
from rnnlab.data.image import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, PixelMNISTDataModule, read_idx
from rnnlab.errors import ConfigError, require_choice, require_positive

MODES = ("predict", "classify")
LABELS = ("digit", "direction")
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
