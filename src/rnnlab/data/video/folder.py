"""Class-per-folder video classification: clips stored as folders of frame images or video files, decoded,
converted and resized into uint8 frames."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from rnnlab.data.base import SequenceDataModule, TaskSpec
from rnnlab.data.cache import cached
from rnnlab.errors import ConfigError, require_choice, require_positive

COLORS = ("gray", "rgb")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


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
