"""Video datamodules: generated Moving-MNIST-style clips and class-per-folder video collections.

Frames are scaled to [0, 1]. With ``flatten: true`` (default) a clip is a sequence of flattened frames, inputs
[B, T, C*H*W] with ``input_size`` = C*H*W, which any recurrent model reads. With ``flatten: false`` inputs keep the
video layout (CONTRIBUTING.md, 'The model interface') [B, T, C, H, W] and ``input_size`` is the channel count C, for
models that read frames as images (convolutional / multi-dimensional recurrent models); ``frame_shape`` is (C, H, W)
either way.
"""

from rnnlab.data.video.folder import VideoFolderDataModule
from rnnlab.data.video.moving_digits import (
    DIGIT_PAIRS,
    MovingDigitsDataModule,
    bounce_trajectories,
    copy_last_frame_mse,
)

__all__ = [
    "DIGIT_PAIRS",
    "MovingDigitsDataModule",
    "VideoFolderDataModule",
    "bounce_trajectories",
    "copy_last_frame_mse",
]
