"""UEA .ts parsing and the UEA datamodule: sizes, variable lengths, labels, stratified split, normalisation."""

from __future__ import annotations

import pytest
import torch

from conftest import train_in_process
from rnnlab.data.timeseries import UEADataModule, parse_ts
from rnnlab.errors import ConfigError

TINY = """# a comment
@problemName Tiny
@timeStamps false
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3:4,5,6:down
7,8:9,10:up
1.5,2.5,?:3.5,4.5,?:up
"""


def test_parse_ts_by_hand(tmp_path):
    path = tmp_path / "Tiny_TRAIN.ts"
    path.write_text(TINY)
    series, labels, classes = parse_ts(path)
    assert classes == ["up", "down"] and labels == ["down", "up", "up"]
    assert series[0].tolist() == [[1, 4], [2, 5], [3, 6]]  # [T, D]: dimensions become features
    assert series[1].tolist() == [[7, 9], [8, 10]]
    assert series[2].tolist() == [[1.5, 3.5], [2.5, 4.5]]  # trailing missing values end the series


@pytest.mark.parametrize(
    "line, where, message",
    [("1,?,3:4,5,6:up", "Bad_TRAIN.ts:10", "missing values inside"), ("1,2:4,5,6:up", "Bad_TRAIN.ts:10", "differ in"),
     ("1,x:4,5:up", "Bad_TRAIN.ts:10", "unreadable"), ("1,2:3,4:left", "Bad_TRAIN.ts", "not in the @classLabel")],
)  # fmt: skip
def test_parse_ts_rejects_bad_cases_naming_file_and_line(tmp_path, line, where, message):
    path = tmp_path / "Bad_TRAIN.ts"
    path.write_text(TINY.replace("7,8:9,10:up", line))  # the case on line 10
    with pytest.raises(ConfigError, match=f"{where}: .*{message}"):
        parse_ts(path)


def test_parse_ts_rejects_a_file_cut_before_its_data(tmp_path):
    path = tmp_path / "Cut_TRAIN.ts"
    path.write_text(TINY.split("@data")[0])
    with pytest.raises(ConfigError, match="Cut_TRAIN.ts: no @data"):
        parse_ts(path)


@pytest.mark.parametrize(
    "dataset, sizes, dims, classes, lengths",
    [
        ("BasicMotions", (32, 8, 40), 6, 4, (100, 100)),
        ("JapaneseVowels", (216, 54, 370), 12, 9, (7, 29)),
        ("GunPoint", (40, 10, 150), 1, 2, (150, 150)),
    ],
)
def test_uea_sets_sizes_shapes_and_labels(shared_data, dataset, sizes, dims, classes, lengths):
    module = UEADataModule(root=str(shared_data / "uea"), dataset=dataset, batch_size=500)
    module.setup()
    assert tuple(len(module.splits[name]) for name in ("train", "val", "test")) == sizes
    assert module.input_size == dims and module.output_size == classes
    all_lengths = [len(x) for split in module.splits.values() for x in split.inputs]
    assert (min(all_lengths), max(all_lengths)) == lengths
    for name in ("train", "val", "test"):
        labels = torch.stack(module.splits[name].targets)
        assert labels.min() >= 0 and labels.max() < classes
        if name != "test":  # stratified: every class in train and in validation
            assert set(labels.tolist()) == set(range(classes))
    train, val = set(module.split_indices["train"]), set(module.split_indices["val"])
    assert not train & val and len(train | val) == sizes[0] + sizes[1]  # a partition of the TRAIN file
    # z-normalised by the statistics of the training part: per dimension mean 0, std 1 over its time steps
    steps = torch.cat(module.splits["train"].inputs)
    torch.testing.assert_close(steps.mean(0), torch.zeros(dims), atol=1e-4, rtol=0)
    torch.testing.assert_close(steps.std(0), torch.ones(dims), atol=1e-4, rtol=0)
    batch = next(iter(module.test_dataloader()))
    assert batch["inputs"].shape == (sizes[2], lengths[1], dims)
    for row, length in enumerate(batch["lengths"].tolist()):
        assert not batch["inputs"][row, length:].any()  # padding at the end


def test_labels_follow_the_header_order(shared_data):
    module = UEADataModule(root=str(shared_data / "uea"), dataset="BasicMotions")
    module.setup()
    assert module.classes == ["Standing", "Running", "Walking", "Badminton"]
    raw, names, _ = parse_ts(module.files["test"])
    index = {name: i for i, name in enumerate(module.classes)}
    assert [int(y) for y in module.splits["test"].targets] == [index[name] for name in names]
    torch.testing.assert_close(module.splits["test"].inputs[0], (raw[0] - module.mean) / module.std)


def test_unknown_dataset_lists_the_ones_there(shared_data):
    with pytest.raises(ConfigError, match="GunPoint") as error:
        UEADataModule(root=str(shared_data / "uea"), dataset="Epilepsy")
    assert error.value.key == "dataset"


@pytest.mark.slow
def test_lstm_classifies_japanese_vowels_above_chance(tmp_path, shared_data):
    record = train_in_process(
        tmp_path, "data=uea", f"data.root={shared_data / 'uea'}", "data.dataset=JapaneseVowels", "model=lstm",
        "trainer.max_epochs=10",
    )  # fmt: skip
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/acc"] > 0.6, record["metrics"]  # chance 1/9
