"""The audio datamodules on the real shared data (FSDD, YESNO, polyphonic) and a generated Speech Commands folder."""

from __future__ import annotations

import hashlib
import math
import shutil
import tarfile

import numpy as np
import pytest
import soundfile
import torch

from conftest import train_in_process
from rnnlab.data.audio import (
    AudioFeatures,
    FSDDCTCDataModule,
    FSDDDataModule,
    PolyphonicDataModule,
    SpeechCommandsDataModule,
    YesNoDataModule,
    marginal_nll,
)
from rnnlab.data.audio import spoken as audio  # read_wav is patched where the FSDD datamodules look it up
from rnnlab.errors import ConfigError


def setup(module):
    module.setup("fit")
    return module


def no_cache_entries(cache_dir) -> bool:
    return not cache_dir.exists() or not any(cache_dir.iterdir())


# ---------------------------------------------------------------- features


def test_feature_shapes_follow_the_documented_step_counts(shared_data):
    waveform = audio.read_wav(shared_data / "fsdd" / "recordings" / "7_jackson_32.wav", 8000)
    n = len(waveform)
    raw = AudioFeatures("raw", 8000, 80, 256, 80, 40, 13)(waveform)
    assert raw.shape == (math.ceil(n / 80), 80)
    torch.testing.assert_close(raw.flatten()[:n], waveform)  # every sample reaches the model, in order
    assert (raw.flatten()[n:] == 0).all()
    assert AudioFeatures("mel", 8000, 80, 256, 80, 40, 13)(waveform).shape == (n // 80 + 1, 40)
    mfcc = AudioFeatures("mfcc", 8000, 80, 256, 100, 40, 20)(waveform)
    assert mfcc.shape == (n // 100 + 1, 20) and torch.isfinite(mfcc).all()


def test_bad_feature_settings_name_their_key(tmp_path):
    with pytest.raises(ConfigError, match="^features:"):
        AudioFeatures("wavelet", 8000, 80, 256, 80, 40, 13)
    with pytest.raises(ConfigError, match="^n_mfcc:"):
        AudioFeatures("mfcc", 8000, 80, 256, 80, 20, 40)
    with pytest.raises(ConfigError, match="^hop_length:"):
        AudioFeatures("mel", 8000, 80, 256, 0, 40, 13)


# ---------------------------------------------------------------- FSDD


def test_fsdd_official_split_sizes_and_disjointness(shared_data):
    data = FSDDDataModule(root=str(shared_data / "fsdd"))
    splits = data.split_files(data.list_files())
    assert {name: len(files) for name, files in splits.items()} == {"train": 2430, "val": 270, "test": 300}
    names = {name: {path.name for path in files} for name, files in splits.items()}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    index = lambda name: int(name.rsplit("_", 1)[1].removesuffix(".wav"))  # noqa: E731
    assert {index(name) for name in names["test"]} == set(range(5))
    assert min(index(name) for name in names["train"] | names["val"]) == 5
    other_seed = FSDDDataModule(root=str(shared_data / "fsdd"), seed=1)
    assert {p.name for p in other_seed.split_files(other_seed.list_files())["val"]} != names["val"]


def test_fsdd_subset_batches_labels_and_standardisation(shared_data, tmp_path):
    data = setup(FSDDDataModule(root=str(shared_data / "fsdd"), cache_dir=str(tmp_path), max_files=200, batch_size=16))
    assert data.input_size == 13 and data.output_size == 10 and data.task.metric == "acc"
    assert sum(len(split) for split in data.splits.values()) == 200
    files = data.split_files(data.list_files())
    for name, split in data.splits.items():
        assert [int(t) for t in split.targets] == [int(p.name[0]) for p in files[name]]  # label = the file's digit
    frames = torch.cat(data.splits["train"].inputs)
    torch.testing.assert_close(frames.mean(0), torch.zeros(13), atol=1e-4, rtol=0)
    torch.testing.assert_close(frames.std(0), torch.ones(13), atol=1e-4, rtol=0)
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].shape == (16, int(batch["lengths"].max()), 13)
    assert batch["targets"].shape == (16,) and batch["targets"].min() >= 0 and batch["targets"].max() <= 9
    assert "digits 0-9" in data.describe()


def test_fsdd_cache_is_reused_and_keyed_by_settings(shared_data, tmp_path, monkeypatch):
    kwargs = dict(root=str(shared_data / "fsdd"), cache_dir=str(tmp_path), max_files=30, features="mel")
    first = setup(FSDDDataModule(**kwargs))
    assert len(list(tmp_path.glob("*.pt"))) == 1

    def refuse(*args):
        raise AssertionError("the second setup must read the cache, not the WAVs")

    monkeypatch.setattr(audio, "read_wav", refuse)
    second = setup(FSDDDataModule(**kwargs))
    for a, b in zip(first.splits["train"].inputs, second.splits["train"].inputs):
        assert torch.equal(a, b)
    monkeypatch.undo()
    setup(FSDDDataModule(**{**kwargs, "n_mels": 20}))
    assert len(list(tmp_path.glob("*.pt"))) == 2


def copy_recordings(shared_data, destination, count=6):
    (destination / "recordings").mkdir(parents=True)
    sources = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[:count]
    for path in sources:
        shutil.copy(path, destination / "recordings" / path.name)
    return [destination / "recordings" / path.name for path in sources]


def test_fsdd_corrupt_wav_fails_at_setup_naming_it_and_leaves_no_cache(shared_data, tmp_path):
    copies = copy_recordings(shared_data, tmp_path / "fsdd")
    copies[2].write_bytes(b"this is not a RIFF file" * 20)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=f"root: {copies[2]} is not a readable WAV"):
        setup(FSDDDataModule(root=str(tmp_path / "fsdd"), cache_dir=str(cache)))
    assert no_cache_entries(cache)


def test_fsdd_checksum_mismatch_and_missing_file_are_named(shared_data, tmp_path):
    copies = copy_recordings(shared_data, tmp_path / "fsdd")
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  recordings/{p.name}\n" for p in copies)
    (tmp_path / "fsdd" / "SHA256SUMS").write_text(sums)
    readable_but_changed = bytearray(copies[1].read_bytes())
    readable_but_changed[-1] ^= 0xFF  # one sample changes: still a valid WAV
    copies[1].write_bytes(bytes(readable_but_changed))
    with pytest.raises(ConfigError, match=f"{copies[1]} does not match its checksum"):
        setup(FSDDDataModule(root=str(tmp_path / "fsdd")))
    copies[1].unlink()
    with pytest.raises(ConfigError, match=f"{copies[1]} is missing"):
        setup(FSDDDataModule(root=str(tmp_path / "fsdd")))


def test_fsdd_missing_root_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="recordings not found"):
        setup(FSDDDataModule(root=str(tmp_path / "nowhere")))


# ---------------------------------------------------------------- FSDD CTC


def tagged_waveform(path, sample_rate):
    """A fake recording whose samples encode its digit and repetition index: 1 + digit + index / 100."""
    digit, _, index = path.stem.split("_")
    return torch.full((240,), 1 + int(digit) + int(index) / 100)


def test_fsdd_ctc_sequences_follow_the_split_and_the_transcript(shared_data, monkeypatch):
    monkeypatch.setattr(audio, "read_wav", tagged_waveform)
    data = setup(
        FSDDCTCDataModule(
            root=str(shared_data / "fsdd"), features="raw", frame_size=8, normalize=False, max_files=600,
            train_size=40, val_size=10, test_size=20, min_gap=0.01, max_gap=0.05,
        )
    )
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 40, "val": 10, "test": 20}
    val_indices = {int(p.stem.rsplit("_", 1)[1]) for p in data.split_files(data.list_files())["val"]}
    for name, split in data.splits.items():
        for inputs, labels in zip(split.inputs, split.targets):
            samples = inputs.flatten()
            values = torch.unique_consecutive(samples)
            words = values[values > 0]
            assert 2 <= len(labels) <= 5 and len(words) == len(labels)
            assert torch.equal(labels, words.floor().long())  # label = digit + 1, in spoken order
            indices = {round(float((w - w.floor()) * 100)) for w in words}
            assert all(i < 5 for i in indices) if name == "test" else all(i >= 5 for i in indices)
            if name == "val":
                assert indices <= val_indices
            silence = (samples == 0).long()
            assert samples[:80].eq(0).all()  # a leading gap of at least 0.01 s = 80 samples
            assert int(silence.sum()) >= 80 * (len(labels) + 1)
    batch = next(iter(data.train_dataloader()))
    assert batch["targets"].shape == (min(40, data.batch_size), int(batch["target_lengths"].max()))
    assert batch["targets"].min() >= 0 and batch["targets"].max() <= 10 and data.output_size == 11


def test_fsdd_ctc_real_features_are_long_enough_for_ctc(shared_data, tmp_path):
    data = setup(
        FSDDCTCDataModule(
            root=str(shared_data / "fsdd"), cache_dir=str(tmp_path), max_files=300, train_size=20, val_size=5,
            test_size=5,
        )
    )
    for split in data.splits.values():
        for inputs, labels in zip(split.inputs, split.targets):
            assert inputs.shape[1] == 13 and inputs.shape[0] >= 2 * len(labels) and labels.min() >= 1
    assert data.task.kind == "ctc" and data.task.metric == "ler"


def test_ctc_length_check_refuses_too_coarse_steps(shared_data):
    with pytest.raises(ConfigError, match="^frame_size:"):
        setup(
            FSDDCTCDataModule(
                root=str(shared_data / "fsdd"), features="raw", frame_size=20000, max_files=100,
                train_size=5, val_size=2, test_size=2,
            )
        )


# ---------------------------------------------------------------- YESNO


def test_yesno_split_labels_and_lengths(shared_data, tmp_path):
    data = setup(YesNoDataModule(root=str(shared_data / "yesno"), cache_dir=str(tmp_path), batch_size=8))
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 40, "val": 10, "test": 10}
    files = data.split_files(data.list_files())
    names = [set(p.name for p in files[name]) for name in ("train", "val", "test")]
    assert len(set.union(*names)) == 60
    for name, split in data.splits.items():
        for path, labels, inputs in zip(files[name], split.targets, split.inputs):
            assert labels.tolist() == [int(word) + 1 for word in path.stem.split("_")]  # no 1, yes 2
            assert 240 <= inputs.shape[0] <= 360 and inputs.shape[1] == 13  # 4.9-7.0 s at 20 ms
    batch = next(iter(data.val_dataloader()))
    assert batch["targets"].shape == (8, 8) and (batch["target_lengths"] == 8).all()


def test_yesno_ctc_training_run_records_label_error_rate(shared_data, tmp_path):
    record = train_in_process(
        tmp_path, "data=yesno", "model=lstm", f"data.root={shared_data / 'yesno'}", f"paths.cache_dir={tmp_path}",
        "model.hidden_size=16", "trainer.max_epochs=1",
    )
    assert record["status"] == "completed", record["error"]
    assert 0 <= record["metrics"]["test/ler"] and math.isfinite(record["metrics"]["test/loss"])


# ---------------------------------------------------------------- Speech Commands (generated layout)

WORDS = ("yes", "no", "up")
SPEAKERS = ("0a1b2c3d", "1f2e3d4c", "2b3c4d5e", "3c4d5e6f")


def make_speech_commands(root):
    """A tiny folder in the v0.02 layout: 3 words x 4 speakers x 2 clips of 0.25 s, speaker 2 validation, 3 test."""
    rng = np.random.default_rng(0)
    for w, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for speaker in SPEAKERS:
            for n in range(2):
                tone = np.sin(2 * np.pi * 300 * (w + 1) * np.arange(4000) / 16000) * 0.3
                soundfile.write(root / word / f"{speaker}_nohash_{n}.wav", tone + rng.normal(0, 0.01, 4000), 16000)
    (root / "_background_noise_").mkdir()
    soundfile.write(root / "_background_noise_" / "noise.wav", rng.normal(0, 0.1, 16000), 16000)
    for split, speaker in (("validation_list.txt", SPEAKERS[2]), ("testing_list.txt", SPEAKERS[3])):
        lines = [f"{word}/{speaker}_nohash_{n}.wav" for word in WORDS for n in range(2)]
        (root / split).write_text("\n".join(lines) + "\n")


def test_speech_commands_layout_split_and_classes(tmp_path):
    make_speech_commands(tmp_path / "sc")
    data = setup(SpeechCommandsDataModule(root=str(tmp_path / "sc"), cache_dir=str(tmp_path / "cache")))
    assert data.words == ["no", "up", "yes"] and data.output_size == 3
    assert data.task.baseline == pytest.approx(math.log(3))
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 12, "val": 6, "test": 6}
    files = data.split_files(data.list_files())
    assert {p.name.split("_")[0] for p in files["val"]} == {SPEAKERS[2]}
    assert {p.name.split("_")[0] for p in files["test"]} == {SPEAKERS[3]}
    assert not any("_background_noise_" in str(p) for split in files.values() for p in split)
    for name, split in data.splits.items():
        assert [int(t) for t in split.targets] == [data.words.index(p.parent.name) for p in files[name]]
        assert all(x.shape == (4000 // 160 + 1, 13) for x in split.inputs)


def test_speech_commands_without_data_says_how_to_get_it(tmp_path):
    with pytest.raises(ConfigError, match="data.download=true"):
        SpeechCommandsDataModule(root=str(tmp_path / "absent"))


def archive_of(folder, path):
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=f"./{item.name}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_speech_commands_download_checks_sha256_then_extracts(tmp_path):
    make_speech_commands(tmp_path / "source")
    served = tmp_path / "served" / "speech_commands_v0.02.tar.gz"
    served.parent.mkdir()
    digest = archive_of(tmp_path / "source", served)
    root = tmp_path / "data" / "speech_commands"
    wrong = SpeechCommandsDataModule(root=str(root), download=True, url=served.as_uri(), sha256="0" * 64)
    with pytest.raises(ConfigError, match="sha256"):
        wrong.prepare_data()
    assert not root.exists() and not any((tmp_path / "data").iterdir())  # refused: nothing kept, nothing extracted
    data = SpeechCommandsDataModule(root=str(root), download=True, url=served.as_uri(), sha256=digest)
    data.prepare_data()
    setup(data)
    assert data.words == ["no", "up", "yes"] and len(data.splits["train"]) == 12


def test_speech_commands_existing_archive_with_wrong_checksum_is_refused(tmp_path):
    root = tmp_path / "data" / "speech_commands"
    root.parent.mkdir()
    (root.parent / "speech_commands_v0.02.tar.gz").write_bytes(b"truncated download")
    data = SpeechCommandsDataModule(root=str(root), download=True)  # the real url and sha256: no network is used
    with pytest.raises(ConfigError, match="delete it and download again"):
        data.prepare_data()


# ---------------------------------------------------------------- polyphonic


def test_polyphonic_jsb_splits_and_next_step_layout(shared_data):
    data = setup(PolyphonicDataModule(root=str(shared_data / "polyphonic"), corpus="jsb", batch_size=8))
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 229, "val": 76, "test": 77}
    steps = {name: sum(len(x) for x in split.targets) for name, split in data.splits.items()}
    assert steps == {"train": 13807, "val": 4602, "test": 4725}  # SOURCE.txt
    for inputs, targets in zip(data.splits["train"].inputs, data.splits["train"].targets):
        assert targets.shape[1] == 88 and ((targets == 0) | (targets == 1)).all()
        assert (inputs[0] == 0).all() and torch.equal(inputs[1:], targets[:-1])  # step t reads frame t - 1
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].shape == batch["targets"].shape == (8, int(batch["lengths"].max()), 88)
    assert data.task.kind == "multilabel" and data.task.metric == "nll" and 5 < data.task.baseline < 88 * math.log(2)


def test_marginal_baseline_by_hand():
    train = [torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0]])]  # key frequencies 2/3, 1/3
    test = [torch.tensor([[1.0, 0.0]])]
    p = torch.tensor([(2 + 1) / (3 + 2), (1 + 1) / (3 + 2)])  # add-one smoothing
    assert marginal_nll(train, test) == pytest.approx(float(-(p[0].log() + (1 - p[1]).log())))


def test_polyphonic_bad_corpus_and_corrupt_file(tmp_path):
    with pytest.raises(ConfigError, match="^corpus:"):
        PolyphonicDataModule(root=str(tmp_path), corpus="bach")
    (tmp_path / "JSB_Chorales.mat").write_bytes(b"garbage" * 100)
    with pytest.raises(ConfigError, match="JSB_Chorales.mat is not a readable .mat file"):
        setup(PolyphonicDataModule(root=str(tmp_path)))


# ---------------------------------------------------------------- learning


@pytest.mark.slow
def test_lstm_learns_fsdd_digits_from_mfcc(shared_data, tmp_path):
    record = train_in_process(
        tmp_path, "data=fsdd", "model=lstm", f"data.root={shared_data / 'fsdd'}", f"paths.cache_dir={tmp_path}",
        "trainer.max_epochs=3",
    )
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/acc"] > 0.5, record["metrics"]  # chance is 0.1


@pytest.mark.slow
def test_lstm_beats_the_independent_key_baseline_on_jsb(shared_data, tmp_path):
    record = train_in_process(
        tmp_path, "data=polyphonic", "model=lstm", f"data.root={shared_data / 'polyphonic'}", "data.batch_size=16",
        "model.hidden_size=128", "optimizer.lr=0.01", "trainer.max_epochs=20",
    )
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/nll"] < 10.0, record["metrics"]  # independent keys score 11.06 nats per step
