"""The CTC and multilabel heads of the base LightningModule, checked against hand computation."""

from __future__ import annotations

import functools
import math

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from rnnlab.data.base import SequenceDataset, TaskSpec, pad_collate
from rnnlab.models.gated import LSTM
from rnnlab.tasks.metrics import LabelErrorRate, edit_distance, greedy_ctc_decode
from rnnlab.tasks.sequence import SequenceTask


def task(kind: str, output_size: int) -> SequenceTask:
    model = LSTM(3, output_size, hidden_size=4)
    spec = TaskSpec(kind=kind, per_step=kind == "multilabel", metric="ler" if kind == "ctc" else "nll")
    return SequenceTask(model, spec, optimizer=functools.partial(torch.optim.SGD, lr=0.1))


def one_hot_logits(paths: list[list[int]], classes: int) -> torch.Tensor:
    """Logits [B, T, C] whose argmax at every step is the given class."""
    return torch.nn.functional.one_hot(torch.tensor(paths), classes).float() * 5.0


def test_greedy_decoding_collapses_repeats_then_drops_blanks_within_the_length():
    logits = one_hot_logits([[0, 1, 1, 0, 1, 2, 2, 0], [3, 3, 0, 3, 1, 1, 2, 2]], classes=4)
    decoded = greedy_ctc_decode(logits, torch.tensor([8, 4]))
    # row 0: 0 1 1 0 1 2 2 0 -> 0 1 0 1 2 0 -> 1 1 2; row 1 reads 3 3 0 3 only (the rest is padding) -> 3 3
    assert decoded == [[1, 1, 2], [3, 3]]


def test_edit_distance_counts_substitutions_insertions_deletions():
    assert edit_distance([], [1, 2, 3]) == 3  # three deletions
    assert edit_distance([1, 2, 3], []) == 3  # three insertions
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 3], [1, 2, 3]) == 1
    assert edit_distance([1, 9, 3, 4], [1, 2, 3]) == 2  # substitute 9 -> 2, delete 4
    kitten, sitting = [ord(c) for c in "kitten"], [ord(c) for c in "sitting"]
    assert edit_distance(kitten, sitting) == edit_distance(sitting, kitten) == 3


def test_label_error_rate_sums_edits_over_total_reference_length():
    metric = LabelErrorRate()
    # batch 1: [1, 2] vs [1, 2, 3] -> 1 edit; [2] vs [2] -> 0
    metric.update([[1, 2], [2]], torch.tensor([[1, 2, 3], [2, 0, 0]]), torch.tensor([3, 1]))
    # batch 2: [2, 2, 1] vs [2, 1] -> 1 edit
    metric.update([[2, 2, 1]], torch.tensor([[2, 1]]), torch.tensor([2]))
    assert math.isclose(float(metric.compute()), (1 + 0 + 1) / (3 + 1 + 2), rel_tol=1e-6)


def test_ctc_head_uses_every_step():
    outputs = torch.randn(2, 5, 3)
    assert torch.equal(task("ctc", 3).head(outputs, torch.tensor([5, 2])), outputs)


def test_ctc_loss_matches_the_sum_over_alignments():
    logits = torch.randn(2, 3, 3)
    p = logits.softmax(-1)
    targets = torch.tensor([[1, 0], [1, 2]])  # sequence 0: label "1" over 3 steps; sequence 1: "1 2" over 2 steps
    loss, count = task("ctc", 3).loss_and_count(
        logits, targets, torch.tensor([3, 2]), target_lengths=torch.tensor([1, 2])
    )
    # alignments of "1" in 3 steps (blank 0): 1 _ _, _ 1 _, _ _ 1, 1 1 _, _ 1 1, 1 1 1
    b, one = 0, 1
    seq0 = (
        p[0, 0, one] * p[0, 1, b] * p[0, 2, b] + p[0, 0, b] * p[0, 1, one] * p[0, 2, b]
        + p[0, 0, b] * p[0, 1, b] * p[0, 2, one] + p[0, 0, one] * p[0, 1, one] * p[0, 2, b]
        + p[0, 0, b] * p[0, 1, one] * p[0, 2, one] + p[0, 0, one] * p[0, 1, one] * p[0, 2, one]
    )
    seq1 = p[1, 0, 1] * p[1, 1, 2]  # "1 2" in 2 steps: the single alignment; step 3 is padding
    assert count == 3
    torch.testing.assert_close(loss, -(seq0.log() + seq1.log()) / 3)


def test_ctc_collate_pads_label_sequences_with_blank_and_reports_their_lengths():
    items = [(torch.ones(4, 2), torch.tensor([3, 1])), (torch.ones(6, 2), torch.tensor([2, 2, 5]))]
    batch = pad_collate(items, per_step=False, kind="ctc")
    assert torch.equal(batch["targets"], torch.tensor([[3, 1, 0], [2, 2, 5]]))
    assert torch.equal(batch["target_lengths"], torch.tensor([2, 3]))
    assert torch.equal(batch["lengths"], torch.tensor([4, 6]))


def test_multilabel_nll_sums_keys_and_averages_valid_steps():
    logits = torch.randn(2, 3, 4)
    targets = torch.randint(0, 2, (2, 3, 4)).float()
    logits[1, 2] = 1e4  # padding: must not count
    targets[1, 2] = 0.0
    loss, count = task("multilabel", 4).loss_and_count(logits, targets, torch.tensor([3, 2]))
    sigma = 1 / (1 + torch.exp(-logits))
    per_key = -(targets * sigma.log() + (1 - targets) * (1 - sigma).log())
    by_hand = (per_key[0].sum() + per_key[1, :2].sum()) / 5
    assert count == 5
    torch.testing.assert_close(loss, by_hand)


def test_multilabel_nll_of_even_odds_is_keys_times_ln2():
    loss, _ = task("multilabel", 88).loss_and_count(
        torch.zeros(3, 7, 88), torch.randint(0, 2, (3, 7, 88)).float(), torch.tensor([7, 7, 7])
    )
    assert math.isclose(float(loss), 88 * math.log(2), rel_tol=1e-6)


def spoken_symbols(count: int, generator: torch.Generator) -> SequenceDataset:
    """Toy CTC data: 3-6 symbols from 1-4, each held for 3 noisy one-hot steps after 1-2 silent steps."""
    inputs, targets = [], []
    for _ in range(count):
        labels = torch.randint(1, 5, (int(torch.randint(3, 7, (1,), generator=generator)),), generator=generator)
        steps = []
        for label in labels:
            steps += [torch.zeros(5)] * int(torch.randint(1, 3, (1,), generator=generator))
            steps += [torch.nn.functional.one_hot(label, 5).float()] * 3
        frames = torch.stack(steps + [torch.zeros(5)])
        inputs.append(frames + 0.1 * torch.randn(frames.shape, generator=generator))
        targets.append(labels)
    return SequenceDataset(inputs, targets)


def test_ctc_head_learns_to_transcribe_a_toy_signal():
    generator = torch.Generator().manual_seed(0)
    collate = functools.partial(pad_collate, per_step=False, kind="ctc")
    train = DataLoader(spoken_symbols(512, generator), batch_size=32, shuffle=True, collate_fn=collate)
    val = DataLoader(spoken_symbols(64, generator), batch_size=64, collate_fn=collate)
    pl.seed_everything(0)
    module = SequenceTask(
        LSTM(5, 5, hidden_size=32), TaskSpec(kind="ctc", per_step=False, metric="ler"),
        optimizer=functools.partial(torch.optim.Adam, lr=0.01),
    )
    trainer = pl.Trainer(
        max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(module, train, val)
    assert trainer.callback_metrics["val/ler"] < 0.1  # emitting nothing scores 1.0
