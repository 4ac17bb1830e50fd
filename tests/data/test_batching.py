"""Batches without waste (CONTRIBUTING.md, 'Speed rules'): in-memory splits batched by index equal item-by-item
collation, and length-bucketed training order is a seeded function of (data seed, epoch) that cuts padding."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from rnnlab.data.base import IGNORE_INDEX, IndexBatches, LengthBuckets, SequenceDataset, pad_collate
from rnnlab.data.synthetic import AddingDataModule


def random_split(kind: str, per_step: bool, count: int = 23) -> SequenceDataset:
    generator = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 12, (count,), generator=generator).tolist()
    inputs = [torch.randn(length, 4, generator=generator) for length in lengths]
    if kind == "ctc":
        targets = [torch.randint(1, 5, (int(torch.randint(1, 4, (1,), generator=generator)),)) for _ in lengths]
    elif per_step:
        targets = [torch.randint(0, 5, (length,), generator=generator) for length in lengths]
    else:
        targets = [torch.randn(2, generator=generator) for _ in lengths]
    return SequenceDataset(inputs, targets)


@pytest.mark.parametrize("kind,per_step", [("classification", True), ("regression", False), ("ctc", False)])
def test_index_batches_equal_item_by_item_collation(kind, per_step):
    split = random_split(kind, per_step)
    collate = partial(pad_collate, per_step=per_step, kind=kind)
    batched = IndexBatches(split, collate, per_step, kind)
    for indices in ([0], [5, 2, 9], list(range(len(split))), [22, 1, 1]):
        expected = collate([split[i] for i in indices])
        got = batched.__getitems__(indices)
        assert set(got) == set(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    if per_step:
        assert (batched.__getitems__([0, 1])["targets"] == IGNORE_INDEX).any()


def test_loader_of_a_datamodule_batches_by_index_and_equals_collation():
    data = AddingDataModule(seq_len=12, min_seq_len=3, train_size=50, val_size=5, test_size=5, batch_size=8)
    data.setup("fit")
    loader = data.train_dataloader()
    assert isinstance(loader.dataset, IndexBatches)
    collate = partial(pad_collate, per_step=False, kind="regression")
    plain = DataLoader(data.splits["train"], batch_size=8, sampler=loader.sampler, collate_fn=collate)
    for got, expected in zip(loader, plain, strict=True):
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_length_buckets_are_a_function_of_seed_and_epoch_and_cut_padding():
    lengths = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0))
    buckets = LengthBuckets(lengths, batch_size=16, seed=4)
    first = list(buckets)
    assert sorted(first) == list(range(1000))  # every item once
    assert list(LengthBuckets(lengths, batch_size=16, seed=4)) == first
    buckets.set_epoch(1)
    assert list(buckets) != first
    buckets.set_epoch(0)
    assert list(buckets) == first

    def padded_steps(order):
        batches = torch.tensor(order).split(16)
        return sum(len(batch) * int(lengths[batch].max()) for batch in batches)

    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(4)).tolist()
    assert padded_steps(first) < 0.6 * padded_steps(shuffled)
    assert len(torch.tensor(first).split(16)[-1]) == 1000 % 16  # the one short batch comes last


def test_bucket_must_be_a_boolean():
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="bucket"):
        AddingDataModule(bucket="yes")


def test_the_training_order_starts_where_the_trainer_stands():
    """Given the trainer's position (epoch, batches trained, processes), a pass starts at the next untrained batch
    of that epoch's order, whatever epoch ``set_epoch`` last gave (Lightning draws a resumed run's first batch
    before calling it)."""
    from rnnlab.data.base import EpochShuffle

    whole = EpochShuffle(100, seed=3)
    whole.set_epoch(4)
    epoch4 = list(whole)
    resumed = EpochShuffle(100, seed=3).follow(lambda: (4, 3, 1), batch_size=8)
    assert list(resumed) == epoch4[24:]
    assert list(EpochShuffle(100, seed=3).follow(lambda: (4, 3, 2), batch_size=8)) == epoch4[48:]
    assert list(EpochShuffle(10, seed=3, shuffle=False).follow(lambda: (1, 2, 1), batch_size=4)) == [8, 9]
    assert list(EpochShuffle(100, seed=3).follow(lambda: None, batch_size=8)) == list(EpochShuffle(100, seed=3))
