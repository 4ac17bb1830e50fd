"""Feature extraction for the audio datamodules: a waveform [N] -> one feature vector per step [T, F]
(framed raw samples, log mel spectrogram or MFCC from ``torchaudio.transforms``)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torchaudio

from rnnlab.errors import ConfigError, require_choice, require_positive

FEATURES = ("raw", "mel", "mfcc")
LOG_EPS = 1e-6  # log mel spectrogram: log(M + LOG_EPS), so silence stays finite


class AudioFeatures:
    """Waveform [N] at ``sample_rate`` -> features [T, F].

    raw:  non-overlapping frames of ``frame_size`` samples, the last zero-padded: T = ceil(N / frame_size),
          F = frame_size (the sequence stays short while every sample reaches the model)
    mel:  log mel power spectrogram log(M + 1e-6), window ``n_fft``, hop ``hop_length``, ``n_mels`` bands:
          T = N // hop_length + 1 (centred frames), F = n_mels
    mfcc: torchaudio's MFCC (DCT-II of the mel spectrogram in dB, 80 dB floor), ``n_mfcc`` of the ``n_mels``
          coefficients: T = N // hop_length + 1, F = n_mfcc
    """

    def __init__(
        self,
        features: str,
        sample_rate: int,
        frame_size: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        n_mfcc: int,
    ):
        require_choice("features", features, FEATURES)
        require_positive(frame_size=frame_size, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, n_mfcc=n_mfcc)
        if features == "mfcc" and n_mfcc > n_mels:
            raise ConfigError("n_mfcc", f"must be <= n_mels={n_mels}, got {n_mfcc}")
        self.features = features
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        melkwargs = dict(n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        if features == "mel":
            self.transform = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, **melkwargs)
        elif features == "mfcc":
            self.transform = torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=n_mfcc, melkwargs=melkwargs)

    @property
    def size(self) -> int:
        return {"raw": self.frame_size, "mel": self.n_mels, "mfcc": self.n_mfcc}[self.features]

    @property
    def step_seconds(self) -> float:
        return (self.frame_size if self.features == "raw" else self.hop_length) / self.sample_rate

    def settings(self) -> dict:
        if self.features == "raw":
            return {"features": "raw", "sample_rate": self.sample_rate, "frame_size": self.frame_size}
        settings = {"features": self.features, "sample_rate": self.sample_rate, "n_fft": self.n_fft}
        settings.update(hop_length=self.hop_length, n_mels=self.n_mels)
        return settings | ({"n_mfcc": self.n_mfcc} if self.features == "mfcc" else {})

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.features == "raw":
            padded = torch.nn.functional.pad(waveform, (0, -len(waveform) % self.frame_size))
            return padded.view(-1, self.frame_size)
        with torch.no_grad():
            spectrum = self.transform(waveform)  # [F, T]
        if self.features == "mel":
            spectrum = torch.log(spectrum + LOG_EPS)
        return spectrum.T.contiguous()

    def describe(self) -> str:
        if self.features == "raw":
            return f"raw frames of {self.frame_size} samples ({1000 * self.step_seconds:.1f} ms per step)"
        size = self.n_mels if self.features == "mel" else self.n_mfcc
        return (
            f"{self.features} ({size} per step, window {self.n_fft}, hop {self.hop_length} = "
            f"{1000 * self.step_seconds:.1f} ms per step)"
        )


@contextmanager
def single_thread():
    """Run small FFTs on one thread: per-utterance transforms are many times slower with several competing threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
