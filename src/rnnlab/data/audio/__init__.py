"""Audio datamodules: spoken digits (FSDD, FSDD-CTC), YESNO, Speech Commands and polyphonic piano rolls.

Waveforms are read with ``soundfile`` and turned into one feature vector per step by :class:`AudioFeatures` (framed
raw samples, log mel spectrogram or MFCC from ``torchaudio.transforms``). Features are standardised per dimension
with the training split's mean and standard deviation (``normalize``). The features of every split are cached under
``cache_dir`` (``rnnlab.data.cache.cached``), keyed by the settings, the seed and the source files.

Batches: inputs [B, T, F] float with per-utterance lengths; targets [B] class ids (``fsdd``, ``speech_commands``),
padded label sequences [B, S] with ``target_lengths`` [B] (CTC: ``fsdd_ctc``, ``yesno``; blank = class 0), or
[B, T, 88] multi-hot key vectors (``polyphonic``).
"""

from rnnlab.data.audio.base import AudioDataModule, read_wav
from rnnlab.data.audio.features import AudioFeatures
from rnnlab.data.audio.polyphonic import PolyphonicDataModule, marginal_nll
from rnnlab.data.audio.speech_commands import SpeechCommandsDataModule
from rnnlab.data.audio.spoken import FSDDCTCDataModule, FSDDDataModule, YesNoDataModule

__all__ = [
    "AudioDataModule",
    "AudioFeatures",
    "FSDDCTCDataModule",
    "FSDDDataModule",
    "PolyphonicDataModule",
    "SpeechCommandsDataModule",
    "YesNoDataModule",
    "marginal_nll",
    "read_wav",
]
