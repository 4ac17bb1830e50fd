"""Image datamodules: MNIST IDX reading and splits, layouts, the pMNIST permutation, scikit-learn digits."""

from __future__ import annotations

import gzip
import shutil
import struct

import pytest
import torch

from conftest import train_in_process
from rnnlab.data.image import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DigitsDataModule,
    PixelMNISTDataModule,
    pixel_permutation,
    read_idx,
)
from rnnlab.errors import ConfigError

IMAGES, LABELS = PixelMNISTDataModule.FILES["test_images"], PixelMNISTDataModule.FILES["test_labels"]


def sorted_rows(images: torch.Tensor) -> list[bytes]:
    return sorted(bytes(row) for row in images.reshape(len(images), -1).numpy())


def test_t10k_splits_are_8000_1000_1000_and_partition_the_file(shared_data):
    root = shared_data / "mnist_t10k"
    module = PixelMNISTDataModule(root=str(root), layout="row")
    module.setup()
    sizes = {name: len(split) for name, split in module.splits.items()}
    assert sizes == {"train": 8000, "val": 1000, "test": 1000}
    everything = read_idx(root / IMAGES, IDX_IMAGES_MAGIC)
    labels = read_idx(root / LABELS, IDX_LABELS_MAGIC)
    assert everything.shape == (10000, 28, 28) and labels.shape == (10000,)
    # the three splits together are exactly the file's 10,000 images, each used once
    parts = torch.cat([split.images for split in module.splits.values()])
    assert sorted_rows(parts) == sorted_rows(everything)
    counts = torch.bincount(torch.cat([split.labels for split in module.splits.values()]), minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # SOURCE.txt's label counts
    assert "t10k" in module.note and "8000/1000/1000" in module.describe()


@pytest.mark.parametrize(
    "layout, item_shape, input_size", [("pixel", (784, 1), 1), ("row", (28, 28), 28), ("image", (1, 1, 28, 28), 1)]
)
def test_layouts_give_documented_shapes(shared_data, layout, item_shape, input_size):
    module = PixelMNISTDataModule(root=str(shared_data / "mnist_t10k"), layout=layout, train_size=100, batch_size=16)
    module.setup()
    assert module.input_size == input_size and module.output_size == 10
    inputs, label = module.splits["train"][0]
    assert inputs.shape == item_shape and 0 <= int(label) < 10
    assert inputs.min() >= 0 and inputs.max() <= 1 and inputs.max() > 0.9  # scaled from 0-255
    raw = module.splits["train"].images[0].float() / 255
    assert torch.equal(inputs.reshape(28, 28), raw)  # every layout holds the same pixels in raster order
    batch = next(iter(module.train_dataloader()))
    assert batch["inputs"].shape == (16, *item_shape) and batch["targets"].shape == (16,)
    assert batch["lengths"].tolist() == [item_shape[0]] * 16
    assert len(module.splits["train"]) == 100


def test_permutation_is_fixed_by_its_seed_and_a_true_permutation(shared_data):
    first, again, other = pixel_permutation(784, 0), pixel_permutation(784, 0), pixel_permutation(784, 1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(first.sort().values, torch.arange(784))
    assert (first != torch.arange(784)).float().mean() > 0.9  # not (close to) the identity
    root = str(shared_data / "mnist_t10k")
    plain = PixelMNISTDataModule(root=root, layout="pixel", train_size=10)
    permuted = PixelMNISTDataModule(root=root, layout="pixel", permute=True, permute_seed=0, train_size=10, seed=0)
    plain.setup(), permuted.setup()
    assert torch.equal(permuted.permutation, first)
    original, shuffled = plain.splits["train"][3][0].flatten(), permuted.splits["train"][3][0].flatten()
    assert torch.equal(shuffled, original[first])  # the same image, pixels reordered by the permutation


def test_truncated_idx_file_fails_at_setup_naming_it(shared_data, tmp_path):
    source = shared_data / "mnist_t10k"
    shutil.copy(source / LABELS, tmp_path / LABELS)
    (tmp_path / IMAGES).write_bytes((source / IMAGES).read_bytes()[:5000])
    module = PixelMNISTDataModule(root=str(tmp_path))
    with pytest.raises(ConfigError, match=IMAGES) as error:
        module.setup()
    assert error.value.key == "root"


def test_idx_header_disagreeing_with_payload_or_wrong_magic_is_refused(tmp_path):
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(struct.pack(">IIII", IDX_IMAGES_MAGIC, 3, 2, 2) + bytes(11)))  # needs 12
    with pytest.raises(ConfigError, match="short.gz.*needs 28"):
        read_idx(short, IDX_IMAGES_MAGIC)
    labels = tmp_path / "labels.gz"
    labels.write_bytes(gzip.compress(struct.pack(">II", IDX_LABELS_MAGIC, 3) + bytes([1, 2, 3])))
    assert read_idx(labels, IDX_LABELS_MAGIC).tolist() == [1, 2, 3]
    with pytest.raises(ConfigError, match="labels.gz has IDX magic 2049, expected 2051"):
        read_idx(labels, IDX_IMAGES_MAGIC)


def test_full_source_without_train_images_says_how_to_get_them(shared_data):
    module = PixelMNISTDataModule(root=str(shared_data / "mnist_t10k"), source="full")
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.gz not found.*download=true.*t10k"):
        module.setup()


def test_download_refuses_a_file_with_the_wrong_checksum(tmp_path):
    (tmp_path / IMAGES).write_bytes(b"not mnist")
    module = PixelMNISTDataModule(root=str(tmp_path), source="t10k", download=True)
    with pytest.raises(ConfigError, match="sha256"):
        module.prepare_data()  # the file is present, so no network is touched


def test_bad_options_name_their_key(shared_data):
    root = str(shared_data / "mnist_t10k")
    bad = [({"layout": "column"}, "layout"), ({"source": "train"}, "source"), ({"train_size": 0}, "train_size")]
    for kwargs, key in bad:
        with pytest.raises(ConfigError) as error:
            PixelMNISTDataModule(root=root, **kwargs)
        assert error.value.key == key


def test_digits_split_sizes_and_partition():
    from sklearn.datasets import load_digits

    module = DigitsDataModule(layout="pixel")
    module.setup()
    assert {name: len(split) for name, split in module.splits.items()} == {"train": 1437, "val": 180, "test": 180}
    parts = torch.cat([split.images for split in module.splits.values()])
    assert sorted_rows(parts) == sorted_rows(torch.as_tensor(load_digits().images).to(torch.uint8))
    inputs, label = module.splits["val"][0]
    assert inputs.shape == (64, 1) and inputs.max() <= 1 and 0 <= int(label) < 10
    assert set(torch.cat([s.labels for s in module.splits.values()]).tolist()) == set(range(10))
    other = DigitsDataModule(layout="pixel", seed=1)
    other.setup()
    assert not torch.equal(other.splits["test"].images, module.splits["test"].images)


@pytest.mark.slow
def test_lstm_reads_digits_by_rows_well_above_chance(tmp_path):
    record = train_in_process(tmp_path, "data=digits", "model=lstm", "trainer.max_epochs=5")
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/acc"] > 0.6, record["metrics"]  # chance 0.1


@pytest.mark.slow
def test_lstm_reads_mnist_rows_above_chance(tmp_path, shared_data):
    record = train_in_process(
        tmp_path, "data=pixel_mnist", f"data.root={shared_data / 'mnist_t10k'}", "data.layout=row",
        "data.train_size=2000", "model=lstm", "trainer.max_epochs=3",
    )  # fmt: skip
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/acc"] > 0.5, record["metrics"]  # chance 0.1
