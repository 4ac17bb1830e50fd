"""Text datamodules on the real shared data (Tiny Shakespeare, PTB char and word) and a generated IMDB fixture."""

from __future__ import annotations

import hashlib
import math
import tarfile
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import train_in_process
from rnnlab.data.text import IMDBDataModule, PTBCharDataModule, PTBWordDataModule, TinyShakespeareDataModule
from rnnlab.errors import ConfigError
from rnnlab.models.gated import LSTM
from rnnlab.tasks.sequence import SequenceTask


def decode(module, ids) -> str:
    return "".join(module.vocabulary[i] for i in torch.as_tensor(ids).tolist())


def split_ids(module, name: str) -> torch.Tensor:
    """The split's token stream read back from its windows / streams (inputs, then the final target)."""
    dataset = module.splits[name]
    return torch.cat([dataset.inputs.reshape(-1), dataset.targets.reshape(-1)[-1:]])


# ---------------------------------------------------------------------------------------------------- Tiny Shakespeare


def test_tinyshakespeare_splits_are_the_file_cut_90_5_5(shared_data, tmp_path):
    module = TinyShakespeareDataModule(root=str(shared_data / "tinyshakespeare"), cache_dir=str(tmp_path))
    module.setup()
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert len(text) == 1_115_394 and module.input_size == module.output_size == len(set(text)) == 65
    assert module.token_counts == {"train": 1_003_854, "val": 55_769, "test": 55_771}
    assert sum(module.token_counts.values()) == len(text)
    assert {name: len(split) for name, split in module.splits.items()} == {"train": 10_038, "val": 557, "test": 557}
    # contiguous, disjoint, in order: each split's windows read back the file's own characters
    assert decode(module, split_ids(module, "train")) == text[: 100 * 10_038 + 1]
    assert decode(module, split_ids(module, "val")) == text[1_003_854 : 1_003_854 + 100 * 557 + 1]
    assert decode(module, split_ids(module, "test")) == text[1_059_623 : 1_059_623 + 100 * 557 + 1]
    batch = next(iter(module.train_dataloader()))
    assert batch["inputs"].shape == (64, 100, 65) and batch["targets"].shape == (64, 100)
    assert torch.equal(batch["inputs"].sum(-1), torch.ones(64, 100))  # one-hot
    assert torch.equal(batch["inputs"].argmax(-1)[:, 1:], batch["targets"][:, :-1])  # targets are the next character
    assert torch.equal(batch["lengths"], torch.full((64,), 100))
    assert module.task.metric == "bpc" and module.task.input_vocab is None and not module.task.stateful
    assert module.task.baseline == pytest.approx(3.36, abs=0.01)  # 4.85 bits: the unigram distribution
    assert "vocabulary 65" in module.describe()


def test_cache_is_reused_and_keyed_by_the_source(shared_data, tmp_path, monkeypatch):
    root = str(shared_data / "tinyshakespeare")
    first = TinyShakespeareDataModule(root=root, cache_dir=str(tmp_path / "cache"))
    first.setup()
    assert len(list((tmp_path / "cache").glob("tinyshakespeare-*.pt"))) == 1

    def fail(self):
        raise AssertionError("tokenised again despite a cache entry")

    monkeypatch.setattr(TinyShakespeareDataModule, "tokenize", fail)
    second = TinyShakespeareDataModule(root=root, cache_dir=str(tmp_path / "cache"))
    second.setup()
    assert second.vocabulary == first.vocabulary and second.token_counts == first.token_counts
    monkeypatch.undo()
    other = tmp_path / "other"
    other.mkdir()
    (other / "input.txt").write_text("abcab" * 100, encoding="utf-8")
    small = TinyShakespeareDataModule(root=str(other), cache_dir=str(tmp_path / "cache"), seq_len=10)
    small.setup()
    assert small.vocabulary == ["a", "b", "c"] and len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_missing_or_corrupt_text_fails_at_setup_naming_the_file(tmp_path):
    module = TinyShakespeareDataModule(root=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="input.txt not found"):
        module.setup()
    (tmp_path / "input.txt").write_bytes(b"abc\xff\xfe")
    module = TinyShakespeareDataModule(root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="input.txt is not UTF-8"):
        module.setup()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # no half cache entry


def test_stateful_batches_continue_each_stream(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(4_000))
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    module = TinyShakespeareDataModule(root=str(tmp_path), seq_len=7, stateful=True, batch_size=4)
    module.setup()
    loader = module.train_dataloader()
    assert list(loader.sampler) == list(range(len(module.splits["train"]))) and module.task.stateful  # in order
    batches = list(loader)
    row = (3_600 - 1) // 4  # training characters per stream
    assert len(batches) == math.ceil(row / 7) and batches[-1]["lengths"].tolist() == [row % 7] * 4
    streams = torch.cat([b["inputs"].argmax(-1) for b in batches], dim=1)  # [4, row]: each stream read back
    for b in range(4):
        assert decode(module, streams[b]) == text[b * row : (b + 1) * row]
    for previous, following in zip(batches, batches[1:]):
        assert torch.equal(following["inputs"].argmax(-1)[:, 0], previous["targets"][:, -1])


# ---------------------------------------------------------------------------------------------------- PTB


def test_ptb_char_decodes_to_the_word_level_text(shared_data, tmp_path):
    module = PTBCharDataModule(root=str(shared_data / "ptb_char"), cache_dir=str(tmp_path))
    module.setup()
    assert module.token_counts == {"train": 5_017_482, "val": 393_042, "test": 442_423}
    assert module.input_size == 50 and {"_", "\n", "N", "<", ">"} <= set(module.vocabulary)
    words = (shared_data / "ptb" / "ptb.valid.txt").read_text().splitlines()
    expected = "\n".join(line.strip().replace(" ", "_") for line in words) + "\n"
    assert decode(module, split_ids(module, "val")) == expected[: 100 * len(module.splits["val"]) + 1]
    batch = next(iter(module.val_dataloader()))
    assert batch["inputs"].shape == (64, 100, 50) and int(batch["targets"].max()) < 50
    assert module.task.baseline == pytest.approx(3.01, abs=0.01)


def test_ptb_char_rejects_a_file_not_in_its_format(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.char.{split}.txt").write_text("a b _ c \n ")
    (tmp_path / "ptb.char.test.txt").write_text("ab _ c")
    with pytest.raises(ConfigError, match="ptb.char.test.txt is not one character then one space"):
        PTBCharDataModule(root=str(tmp_path), cache_dir=str(tmp_path / "cache")).setup()
    assert not (tmp_path / "cache").exists()


def test_ptb_word_vocabulary_streams_and_ids(shared_data, tmp_path):
    module = PTBWordDataModule(root=str(shared_data / "ptb"), cache_dir=str(tmp_path))
    module.setup()
    assert module.token_counts == {"train": 929_589, "val": 73_760, "test": 82_430}
    assert len(module.vocabulary) == module.input_size == module.output_size == 10_000
    assert module.vocabulary[:3] == ["the", "<unk>", "<eos>"]  # by training frequency
    assert module.task.input_vocab == 10_000 and module.task.stateful and module.task.metric == "ppl"
    assert math.exp(module.task.baseline) == pytest.approx(640, rel=0.01)  # unigram perplexity
    loader = module.train_dataloader()
    assert list(loader.sampler) == list(range(len(module.splits["train"])))  # streams arrive in order
    iterator = iter(loader)
    first, second = next(iterator), next(iterator)
    assert first["inputs"].dtype == torch.long and first["inputs"].shape == (20, 35)
    row = (929_589 - 1) // 20
    train = (shared_data / "ptb" / "ptb.train.txt").read_text().split("\n")
    words = [w for line in train[:-1] for w in [*line.split(), "<eos>"]]
    for b in (0, 7, 19):
        assert [module.vocabulary[i] for i in first["inputs"][b]] == words[b * row : b * row + 35]
        assert [module.vocabulary[i] for i in second["targets"][b]] == words[b * row + 36 : b * row + 71]
    assert torch.equal(second["inputs"][:, 0], first["targets"][:, -1])


def test_ptb_word_rejects_test_words_missing_from_training(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" a b c \n b c \n")
    (tmp_path / "ptb.valid.txt").write_text(" a b \n")
    (tmp_path / "ptb.test.txt").write_text(" a zebra \n")
    with pytest.raises(ConfigError, match="ptb.test.txt has 1 words absent from training"):
        PTBWordDataModule(root=str(tmp_path), batch_size=1).setup()


def test_ptb_word_perplexity_through_the_trainer(shared_data, tmp_path):
    """Token ids -> embedding -> LSTM, stateful; the logged test/ppl is exp(test/loss) over the same tokens."""
    module = PTBWordDataModule(
        root=str(shared_data / "ptb"), cache_dir=str(tmp_path), max_train_tokens=4_001, batch_size=10, seq_len=20
    )
    module.setup()
    pl.seed_everything(0)
    model = LSTM(input_size=16, output_size=module.output_size, hidden_size=32)
    task = SequenceTask(model, module.task, partial(torch.optim.Adam, lr=0.01), embedding_dim=16)
    trainer = pl.Trainer(
        max_epochs=1, limit_val_batches=2, limit_test_batches=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(task, datamodule=module)
    trainer.test(task, datamodule=module, verbose=False)
    metrics = trainer.callback_metrics
    assert float(metrics["test/ppl"]) == pytest.approx(math.exp(float(metrics["test/loss"])), rel=1e-4)
    assert trainer.global_step == 20
    assert float(metrics["test/ppl"]) < 10_000  # below the uniform guess after 20 steps


# ---------------------------------------------------------------------------------------------------- IMDB


def write_imdb_fixture(root: Path, per_folder: int = 10) -> None:
    """aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt in the real layout, with words that carry the label."""
    for split in ("train", "test"):
        for label, word in (("pos", "wonderful"), ("neg", "dreadful")):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_folder):
                extra = " only_in_test" if split == "test" else ""
                text = f"A {word} film.<br /><br />I didn't expect it, {i} times over{extra}!"
                (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(text, encoding="utf-8")


def imdb(root: Path, **kwargs) -> IMDBDataModule:
    return IMDBDataModule(root=str(root), cache_dir=str(root / "cache"), batch_size=4, **kwargs)


def test_imdb_reads_the_folder_format(tmp_path):
    write_imdb_fixture(tmp_path)
    module = imdb(tmp_path, min_freq=1, val_fraction=0.25, max_len=9)
    module.prepare_data()
    module.setup()
    assert {name: len(split) for name, split in module.splits.items()} == {"train": 15, "val": 5, "test": 20}
    assert module.vocabulary[:2] == ["<pad>", "<unk>"] and "didn't" in module.vocabulary
    assert "only_in_test" not in module.vocabulary and "br" not in module.vocabulary  # train vocabulary, no <br />
    assert module.task.input_vocab == module.input_size == len(module.vocabulary) and module.output_size == 2
    first = module.splits["test"][0][0]
    assert [module.vocabulary[i] for i in first] == ["a", "dreadful", "film", ".", "i", "didn't", "expect", "it", ","]
    batch = next(iter(module.train_dataloader()))
    assert batch["inputs"].dtype == torch.long and batch["inputs"].shape[0] == 4 and batch["targets"].shape == (4,)
    assert set(batch["targets"].tolist()) <= {0, 1} and int(batch["inputs"].max()) < module.input_size
    for inputs, label in module.splits["train"]:
        assert module.vocabulary[int(inputs[1])] == ("wonderful" if int(label) == 1 else "dreadful")
    assert "train: " in module.describe()


def test_imdb_capped_vocabulary_maps_rare_words_to_unk(tmp_path):
    write_imdb_fixture(tmp_path)
    module = imdb(tmp_path, max_vocab=5, max_files=3)
    module.setup()
    assert len(module.vocabulary) == 5 and sum(len(split) for split in module.splits.values()) == 12
    assert all(int(inputs.max()) < 5 for split in module.splits.values() for inputs, _ in split)


def test_imdb_archive_is_checksummed_and_extracted(tmp_path):
    source = tmp_path / "source"
    write_imdb_fixture(source, per_folder=2)
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "aclImdb", arcname="aclImdb")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()

    refused = imdb(tmp_path / "bad", download=True, url=archive.as_uri(), sha256="0" * 64)
    with pytest.raises(ConfigError, match="sha256"):
        refused.prepare_data()
    assert not (tmp_path / "bad" / "aclImdb").exists() and not list((tmp_path / "bad").glob("*.tar.gz*"))

    module = imdb(tmp_path / "good", download=True, url=archive.as_uri(), sha256=digest)
    module.prepare_data()
    module.setup()
    assert (tmp_path / "good" / "aclImdb" / "test" / "pos" / "1_8.txt").is_file()
    assert len(module.splits["test"]) == 4


def test_imdb_without_data_or_download_names_the_fix(tmp_path):
    module = imdb(tmp_path)
    module.prepare_data()
    with pytest.raises(ConfigError, match="aclImdb not found; set data.download=true"):
        module.setup()


# ---------------------------------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_lstm_learns_tinyshakespeare_below_3_4_bpc(shared_data, tmp_path):
    """300 Adam steps of 32 x 50 characters; measured 3.17 test bpc (unigram baseline 4.85 bpc)."""
    record = train_in_process(
        tmp_path, "data=tinyshakespeare", "model=lstm", f"data.root={shared_data / 'tinyshakespeare'}",
        f"paths.cache_dir={tmp_path / 'cache'}", "data.max_train_tokens=160000", "data.batch_size=32",
        "data.seq_len=50", "model.hidden_size=128", "optimizer.lr=0.01", "trainer.max_epochs=3",
        "+trainer.limit_val_batches=4", "+trainer.limit_test_batches=4",
    )
    assert record["status"] == "completed", record["error"]
    assert record["steps"] == 300
    assert record["metrics"]["test/bpc"] < 3.4, record["metrics"]
