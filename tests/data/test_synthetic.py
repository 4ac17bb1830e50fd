"""The synthetic tasks: sizes, seeding, disjoint splits and the documented baselines."""

from __future__ import annotations

import math

import torch

from rnnlab.data.synthetic import AddingDataModule, CopyDataModule


def setup(module):
    module.setup("fit")
    return module


def test_adding_problem_layout_and_baseline():
    data = setup(AddingDataModule(seq_len=30, train_size=500, val_size=100, test_size=4000, seed=3))
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 500, "val": 100, "test": 4000}
    inputs = torch.stack(data.splits["test"].inputs)
    targets = torch.stack(data.splits["test"].targets)
    markers = inputs[..., 1]
    assert (markers.sum(1) == 2).all()
    first, second = markers[:, :15].argmax(1), 15 + markers[:, 15:].argmax(1)
    rows = torch.arange(len(inputs))
    torch.testing.assert_close(targets[:, 0], inputs[rows, first, 0] + inputs[rows, second, 0])
    trivial_mse = ((targets - 1.0) ** 2).mean().item()  # predicting the mean of U1 + U2
    assert abs(trivial_mse - 2 / 12) < 0.01
    assert data.task.baseline == 2 / 12


def test_adding_problem_variable_lengths_keep_markers_inside():
    data = setup(AddingDataModule(seq_len=20, min_seq_len=5, train_size=300, val_size=10, test_size=10))
    lengths = [x.shape[0] for x in data.splits["train"].inputs]
    assert min(lengths) >= 5 and max(lengths) <= 20 and len(set(lengths)) > 5
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].shape[1] == int(batch["lengths"].max())
    assert all(batch["inputs"][i, : batch["lengths"][i], 1].sum() == 2 for i in range(len(batch["lengths"])))


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (setup(AddingDataModule(seq_len=10, train_size=50, val_size=5, test_size=5, seed=s)) for s in (0, 0, 1))
    assert torch.equal(torch.stack(a.splits["train"].inputs), torch.stack(b.splits["train"].inputs))
    assert not torch.equal(torch.stack(a.splits["train"].inputs), torch.stack(c.splits["train"].inputs))
    order = lambda m: torch.cat([batch["targets"] for batch in m.train_dataloader()])  # noqa: E731
    assert torch.equal(order(a), order(b))


def test_splits_are_disjoint():
    data = setup(CopyDataModule(delay=5, train_size=2000, val_size=200, test_size=200))
    keys = {name: {tuple(x.argmax(-1)[:10].tolist()) for x in split.inputs} for name, split in data.splits.items()}
    # 8^10 possible strings: a shared string between splits would mean a generator bug
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"])


def test_copy_task_layout_and_memoryless_baseline():
    delay = 7
    data = setup(CopyDataModule(delay=delay, train_size=10, val_size=10, test_size=500))
    inputs, targets = data.splits["test"].inputs, data.splits["test"].targets
    assert inputs.shape == (500, delay + 20, 10) and targets.shape == (500, delay + 20)
    symbols = inputs.argmax(-1)
    assert (symbols[:, delay + 9] == 9).all() and (symbols[:, 10 : delay + 9] == 0).all()
    assert torch.equal(targets[:, -10:], symbols[:, :10]) and (targets[:, :-10] == 0).all()
    # memoryless predictor: blank with certainty, then uniform over the 8 data symbols
    logits = torch.full((delay + 20, 9), -1e9)
    logits[: delay + 10, 0] = 0
    logits[delay + 10 :, 1:] = 0
    loss = torch.nn.functional.cross_entropy(logits.repeat(500, 1), targets.reshape(-1)).item()
    assert math.isclose(loss, 10 * math.log(8) / (delay + 20), rel_tol=1e-6)
    assert math.isclose(data.task.baseline, loss, rel_tol=1e-6)
