"""Video datamodules: bouncing-digit clips and their copy-last-frame baseline, class-per-folder videos."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from conftest import train_in_process
from rnnlab.data.base import pad_collate
from rnnlab.data.video import (
    DIGIT_PAIRS,
    MovingDigitsDataModule,
    VideoFolderDataModule,
    bounce_trajectories,
    copy_last_frame_mse,
)
from rnnlab.errors import ConfigError
from rnnlab.tasks.sequence import SequenceTask

SMALL = dict(frame_size=16, digit_size=8, train_size=40, val_size=10, test_size=10, batch_size=8)


def test_bounce_reflects_off_the_walls_by_hand():
    path = bounce_trajectories(torch.tensor([0.0, 5.0]), torch.tensor([3.0, -2.0]), steps=6, limit=5)
    # rows: 0, 3, 6->4 (turns), 1, -2->2 (turns), 5; columns: 5, 3, 1, -1->1 (turns), 3, 5
    assert path.tolist() == [[0, 5], [3, 3], [4, 1], [1, 1], [2, 3], [5, 5]]


def test_moving_digits_stay_inside_the_canvas():
    module = MovingDigitsDataModule(num_digits=1, speed=3.0, **SMALL)
    module.setup()
    for split in module.splits.values():
        positions = split.positions
        assert positions.min() >= 0 and positions.max() <= 16 - 8
        for index in range(len(split)):
            frames = split.frames(index)
            digit_mass = split.digits[split.which[index, 0]].sum()
            # the whole digit is drawn in every frame: nothing is cut off at an edge
            torch.testing.assert_close(frames.sum((1, 2)), digit_mass.expand(frames.shape[0]))
            assert frames.max() <= 1 and frames.min() >= 0


def test_copy_last_frame_baseline_by_hand():
    clips = torch.tensor(
        [
            [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
            [[0.5, 0.5], [0.5, 0.5], [0.0, 0.5]],
        ]
    )
    # context 2: clip 1 errors (0, 1) -> 1; clip 2 errors (0.5, 0) -> 0.25; mean over 4 values 1.25 / 4
    assert copy_last_frame_mse(clips, 2) == pytest.approx(1.25 / 4)
    # context 1: clip 1 future (1,0),(1,1) vs (0,0) -> 3; clip 2 (0,0),(0.5,0) vs (0.5,0.5) -> 0.25; 8 values
    assert copy_last_frame_mse(clips, 1) == pytest.approx(3.25 / 8)


def test_predict_batches_and_baseline_under_the_tasks_own_loss():
    module = MovingDigitsDataModule(mode="predict", num_frames=6, context_frames=4, **SMALL)
    module.setup()
    test = module.splits["test"]
    inputs, targets, mask = test[0]
    frames = test.frames(0).flatten(1)
    assert inputs.shape == targets.shape == (6, 256) and mask.tolist() == [False] * 4 + [True] * 2
    assert torch.equal(targets, frames) and torch.equal(inputs[:4], frames[:4]) and not inputs[4:].any()
    clips = torch.stack([test.frames(i).flatten(1) for i in range(len(test))])
    assert module.task.baseline == pytest.approx(copy_last_frame_mse(clips, 4))
    # a model that repeats the last frame it saw scores the baseline through the task's masked loss
    task = SequenceTask(torch.nn.Identity(), module.task, optimizer=None)
    total, count = 0.0, 0
    for batch in module.test_dataloader():
        guess = batch["targets"].clone()
        guess[:, 4:] = batch["targets"][:, 3:4]
        loss, n = task.loss_and_count(guess, batch["targets"], batch["lengths"], batch["target_mask"])
        total, count = total + float(loss) * n, count + n
    assert total / count == pytest.approx(module.task.baseline, rel=1e-5)
    assert module.blank_mse < module.task.baseline  # moving digits: even blank frames beat copying


def test_unflattened_frames_and_seeded_generation():
    module = MovingDigitsDataModule(flatten=False, **SMALL)
    module.setup()
    batch = next(iter(module.train_dataloader()))
    assert batch["inputs"].shape == (8, 20, 1, 16, 16) and batch["targets"].shape == (8, 20, 256)
    assert batch["target_mask"].shape == (8, 20) and module.input_size == 1 and module.output_size == 256
    again = MovingDigitsDataModule(flatten=False, **SMALL)
    other = MovingDigitsDataModule(flatten=False, seed=1, **SMALL)
    again.setup(), other.setup()
    assert torch.equal(again.splits["train"].frames(0), module.splits["train"].frames(0))
    assert not torch.equal(other.splits["train"].frames(0), module.splits["train"].frames(0))
    # validation and test clips show digit images that training never shows
    used = {name: set(split.which.flatten().tolist()) for name, split in module.splits.items()}
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]


def test_classify_labels():
    direction = MovingDigitsDataModule(mode="classify", label="direction", **SMALL)
    direction.setup()
    labels = direction.splits["train"].labels
    assert direction.output_size == 8 and labels.min() >= 0 and labels.max() < 8
    # the first move goes along the labelled compass direction (k * 45 degrees, rows grow downwards)
    split = direction.splits["train"]
    start, step = split.positions[:, 0, 0].float(), (split.positions[:, 0, 1] - split.positions[:, 0, 0]).float()
    angle = labels.float() * torch.pi / 4
    expected = torch.stack([-torch.sin(angle), torch.cos(angle)], -1)  # (row, col) unit vectors
    free = start + direction.speed * expected  # no wall within reach, whatever the rounding of the start
    unbounced = ((free >= 0.5) & (free <= 8 - 0.5)).all(1)
    cosine = torch.nn.functional.cosine_similarity(step[unbounced], expected[unbounced], dim=-1)
    assert unbounced.sum() > 10 and (cosine > 0.9).all()
    pairs = MovingDigitsDataModule(mode="classify", num_digits=2, **SMALL)
    pairs.setup()
    split = pairs.splits["train"]
    assert pairs.output_size == 55
    digit_labels = torch.as_tensor(load_digits().target)  # the label of every digit image in the pool
    for index in range(len(split)):
        shown = sorted(digit_labels[split.which[index]].tolist())
        assert DIGIT_PAIRS[int(split.labels[index])] == tuple(shown)
    with pytest.raises(ConfigError, match="num_digits=1"):
        MovingDigitsDataModule(mode="classify", label="direction", num_digits=2)


def test_bad_moving_digit_options_name_their_key():
    for kwargs, key in [({"digit_size": 32}, "digit_size"), ({"num_digits": 3}, "num_digits"),
                        ({"context_frames": 20}, "context_frames"), ({"speed": 20.0}, "speed")]:  # fmt: skip
        with pytest.raises(ConfigError) as error:
            MovingDigitsDataModule(**kwargs)
        assert error.value.key == key


@pytest.mark.slow
def test_lstm_predicts_moving_digits_better_than_copying_the_last_frame(tmp_path):
    record = train_in_process(
        tmp_path, "data=moving_digits", "data.frame_size=16", "data.digit_size=8", "data.speed=1.5",
        "data.train_size=500", "data.val_size=100", "data.test_size=100", "model=lstm", "trainer.max_epochs=3",
    )  # fmt: skip
    assert record["status"] == "completed", record["error"]
    module = MovingDigitsDataModule(frame_size=16, digit_size=8, speed=1.5, train_size=500, val_size=100, test_size=100)
    module.setup()  # the same clips as the run's (same data.seed): its copy-last-frame test MSE
    assert record["metrics"]["test/mse"] < 0.8 * module.task.baseline, (record["metrics"], module.task.baseline)


def make_video_folder(root, clips_per_class=5):
    """Two classes of PNG frame folders, 20x24 RGB, lengths 3-7: 'up' brightens over time, 'down' darkens."""
    for label, name in enumerate(["down", "up"]):
        for clip in range(clips_per_class):
            folder = root / name / f"clip{clip}"
            folder.mkdir(parents=True)
            frames = 3 + (clip % 5)
            for t in range(frames):
                level = 20 * t if label == 1 else 200 - 20 * t
                array = np.full((20, 24, 3), level, dtype=np.uint8)
                Image.fromarray(array).save(folder / f"frame_{t + 1}.png")
    return root


def test_video_folder_shapes_lengths_and_disjoint_splits(tmp_path):
    root = make_video_folder(tmp_path / "videos")
    module = VideoFolderDataModule(
        root=str(root), frame_size=8, val_fraction=0.2, test_fraction=0.2, batch_size=4, cache_dir=str(tmp_path / "c")
    )
    module.setup()
    assert module.classes == ["down", "up"] and module.output_size == 2 and module.input_size == 64
    assert {name: len(split) for name, split in module.splits.items()} == {"train": 6, "val": 2, "test": 2}
    paths = {name: set(p) for name, p in module.paths.items()}
    assert not paths["train"] & paths["val"] and not paths["train"] & paths["test"] and not paths["val"] & paths["test"]
    assert len(set().union(*paths.values())) == 10
    for name in ("val", "test"):  # stratified: one clip of each class
        assert sorted(module.splits[name].labels.tolist()) == [0, 1]
    batch = next(iter(module.train_dataloader()))
    assert batch["inputs"].shape[0] == 4 and batch["inputs"].shape[2] == 64 and batch["targets"].shape == (4,)
    for row, length in enumerate(batch["lengths"].tolist()):
        clip = batch["inputs"][row]
        assert not clip[length:].any()  # padding at the end
        brightness = clip[:length].mean(1)
        # frames come in natural order (frame_2 before frame_10): brightness moves monotonically with the label
        direction = 1 if int(batch["targets"][row]) == 1 else -1
        assert (direction * brightness.diff() > 0).all()
    assert list((tmp_path / "c").glob("*.pt")) and not list((tmp_path / "c").glob("*.partial"))
    cached = VideoFolderDataModule(
        root=str(root), frame_size=8, val_fraction=0.2, test_fraction=0.2, cache_dir=str(tmp_path / "c")
    )
    cached.setup()
    assert torch.equal(cached.splits["test"].clips[0], module.splits["test"].clips[0])


def test_video_folder_rgb_unflattened(tmp_path):
    root = make_video_folder(tmp_path / "videos")
    with pytest.raises(ConfigError) as error:  # 10% of 5 clips per class rounds to none
        VideoFolderDataModule(root=str(root)).setup()
    assert error.value.key == "val_fraction"
    module = VideoFolderDataModule(
        root=str(root),
        frame_size=[6, 10],
        color="rgb",
        flatten=False,
        max_frames=4,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    module.setup()
    inputs, label = module.splits["train"][0]
    assert inputs.shape[1:] == (3, 6, 10) and 3 <= inputs.shape[0] <= 4 and module.input_size == 3
    assert module.frame_shape == (3, 6, 10)


def test_video_folder_unreadable_frame_names_the_file(tmp_path):
    root = make_video_folder(tmp_path / "videos")
    broken = root / "up" / "clip2" / "frame_2.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ConfigError, match="frame_2.png is not a readable image"):
        VideoFolderDataModule(root=str(root), val_fraction=0.2, test_fraction=0.2).setup()


@pytest.mark.skipif(importlib.util.find_spec("torchcodec") is not None, reason="torchcodec installed")
def test_video_file_without_torchcodec_names_the_file_and_the_fix(tmp_path):
    root = make_video_folder(tmp_path / "videos")
    (root / "up" / "walk.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match="walk.mp4.*pip install torchcodec"):
        VideoFolderDataModule(root=str(root), val_fraction=0.2, test_fraction=0.2).setup()


def test_pad_collate_batches_target_masks_false_on_padding():
    items = [(torch.ones(3, 2), torch.ones(3, 2), torch.tensor([False, True, True])),
             (torch.ones(2, 2), torch.ones(2, 2), torch.tensor([True, True]))]  # fmt: skip
    batch = pad_collate(items, per_step=True)
    assert batch["target_mask"].tolist() == [[False, True, True], [True, True, False]]
    assert batch["inputs"].shape == (2, 3, 2) and batch["lengths"].tolist() == [3, 2]
