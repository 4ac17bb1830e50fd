"""Seq2SeqTask and the data it reads: the reversal / answer-only copy layouts, target extraction, the scheduled
sampling schedules at given steps, free-running metrics against a hand count, and (slow) learning copy and reversal."""

from __future__ import annotations

import functools
import math

import pytest
import pytorch_lightning as pl
import torch

from conftest import read_record, run_cli, train_in_process
from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.data.synthetic import CopyDataModule, ReversalDataModule
from rnnlab.errors import ConfigError
from rnnlab.models.gated import GRU, LSTM
from rnnlab.models.seq2seq import Seq2Seq
from rnnlab.tasks.seq2seq import SamplingSchedule, Seq2SeqTask, target_sequences

SPEC = TaskSpec(kind="classification", per_step=True, metric="acc")
SGD = functools.partial(torch.optim.SGD, lr=0.1)


def seq2seq(input_size=10, classes=8) -> Seq2Seq:
    return Seq2Seq(input_size, classes, functools.partial(GRU), functools.partial(GRU), hidden_size=8)


def test_reversal_layout_and_chance_baseline():
    data = ReversalDataModule(length=4, min_length=2, symbols=6, train_size=10, val_size=10, test_size=300)
    data.setup("fit")
    assert (data.input_size, data.output_size) == (8, 6)
    lengths = set()
    for x, y in zip(data.splits["test"].inputs, data.splits["test"].targets):
        n = (x.shape[0] - 1) // 2
        lengths.add(n)
        symbols = x.argmax(-1)
        assert x.shape[0] == 2 * n + 1 and symbols[n] == 7 and (symbols[n + 1 :] == 0).all()
        assert ((symbols[:n] >= 1) & (symbols[:n] <= 6)).all()
        assert (y[: n + 1] == IGNORE_INDEX).all() and torch.equal(y[n + 1 :], symbols[:n].flip(0) - 1)
    assert lengths == {2, 3, 4}
    batch = next(iter(data.test_dataloader()))
    uniform = torch.zeros(*batch["targets"].shape, 6)  # chance: a uniform guess at every answer step
    loss = torch.nn.functional.cross_entropy(uniform.view(-1, 6), batch["targets"].view(-1), ignore_index=IGNORE_INDEX)
    assert math.isclose(loss.item(), math.log(6), rel_tol=1e-6) and data.task.baseline == math.log(6)


def test_answer_only_copy_scores_just_the_copied_symbols():
    data = CopyDataModule(delay=3, length=4, answer_only=True, train_size=10, val_size=10, test_size=10)
    data.setup("fit")
    x, y = data.splits["test"].inputs, data.splits["test"].targets
    assert x.shape == (10, 11, 10)
    assert (y[:, :7] == IGNORE_INDEX).all() and torch.equal(y[:, 7:], x.argmax(-1)[:, :4])
    assert data.task.baseline == math.log(8)


def test_target_sequences_keep_the_counted_steps_in_order():
    batch = {
        "targets": torch.tensor([[IGNORE_INDEX, 3, 1, 4], [5, IGNORE_INDEX, 2, 7], [6, 6, 0, 0]]),
        "lengths": torch.tensor([4, 3, 2]),  # row 1's 7 and row 2's zeros are padding
        "target_mask": torch.tensor([[True, True, False, True], [True, True, True, True], [True, True, True, True]]),
    }
    targets, lengths = target_sequences(batch)
    assert targets.tolist() == [[3, 4], [5, 2], [6, 6]] and lengths.tolist() == [2, 2, 2]
    batch["target_mask"] = None
    targets, lengths = target_sequences(batch)
    assert targets.tolist() == [[3, 1, 4], [5, 2, IGNORE_INDEX], [6, 6, IGNORE_INDEX]] and lengths.tolist() == [3, 2, 2]


@pytest.mark.parametrize(
    "schedule, k, c, minimum, expected",
    [
        ("linear", 1.0, 0.01, 0.1, {0: 1.0, 30: 0.7, 50: 0.5, 90: 0.1, 500: 0.1}),  # max(eps, k - c i)
        ("exponential", 0.99, None, None, {0: 1.0, 1: 0.99, 100: 0.99**100}),  # k^i
        # k / (k + exp(i / k)): 10 / 11 at 0, 1/2 where exp(i / k) = k, i.e. i = k ln k
        ("inverse_sigmoid", 10.0, None, None, {0: 10 / 11, 10 * math.log(10): 0.5, 50: 10 / (10 + math.exp(5))}),
    ],
)
def test_sampling_schedules_at_given_steps(schedule, k, c, minimum, expected):
    extra = {} if c is None else {"c": c, "minimum": minimum}
    eps = SamplingSchedule(schedule, k, **extra)
    for step, value in expected.items():
        assert eps(step) == pytest.approx(value, rel=1e-9)
    assert eps(10**6) >= 0.0


def test_bad_schedules_and_tasks_name_their_key():
    with pytest.raises(ConfigError, match="schedule_k"):
        SamplingSchedule("exponential", 1.5)
    with pytest.raises(ConfigError, match="schedule_k"):
        SamplingSchedule("inverse_sigmoid", 0.5)
    with pytest.raises(ConfigError, match="min_teacher_prob"):
        SamplingSchedule("linear", 1.0, 0.01, 1.0)
    with pytest.raises(ConfigError, match="_target_"):
        Seq2SeqTask(seq2seq(), TaskSpec(kind="regression", per_step=False, metric="mse"), SGD)
    with pytest.raises(ConfigError, match="_target_"):
        Seq2SeqTask(LSTM(10, 8), SPEC, SGD)
    with pytest.raises(ConfigError, match="beam_size"):
        Seq2SeqTask(seq2seq(), SPEC, SGD, beam_size=0)


def test_teacher_forcing_probability_follows_the_training_step(monkeypatch):
    task = Seq2SeqTask(seq2seq(), SPEC, SGD, sampling="scheduled", schedule="linear", schedule_k=1.0, schedule_c=0.01)
    monkeypatch.setattr(Seq2SeqTask, "global_step", property(lambda self: 40))
    assert task.teacher_forcing_probability("train") == pytest.approx(0.6)
    assert task.teacher_forcing_probability("val") == 1.0  # evaluation loss is always teacher forced
    plain = Seq2SeqTask(seq2seq(), SPEC, SGD)
    assert plain.teacher_forcing_probability("train") == 1.0


def test_loss_is_teacher_forced_cross_entropy_of_the_answer():
    torch.manual_seed(0)
    data = ReversalDataModule(length=3, min_length=2, train_size=8, val_size=8, test_size=8, batch_size=8)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    task = Seq2SeqTask(seq2seq(), data.task, SGD).eval()
    with torch.no_grad():
        loss = task.shared_step(batch, "train")  # self.log outside a Trainer only warns
        answers = [y[y != IGNORE_INDEX] for y in batch["targets"]]
        by_hand = []
        for b, answer in enumerate(answers):
            logits, _ = task.model(batch["inputs"][b : b + 1, : batch["lengths"][b]], targets=answer[None])
            by_hand.append(torch.nn.functional.cross_entropy(logits[0], answer, reduction="sum"))
    torch.testing.assert_close(loss, torch.stack(by_hand).sum() / sum(len(a) for a in answers))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_free_running_metrics_match_a_hand_count(tmp_path, one_thread, beam_size):
    torch.manual_seed(0)
    data = ReversalDataModule(length=2, symbols=2, train_size=8, val_size=40, test_size=8, batch_size=16)
    data.setup("fit")
    model = seq2seq(input_size=4, classes=2)
    task = Seq2SeqTask(model, data.task, SGD, beam_size=beam_size)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    metrics = trainer.validate(task, datamodule=data, verbose=False)[0]
    right = exact = 0
    model.eval()
    for x, y in zip(data.splits["val"].inputs, data.splits["val"].targets):
        answer = y[y != IGNORE_INDEX]
        decoded = model.generate(x[None], target_lengths=torch.tensor([len(answer)]), beam_size=beam_size)[0]
        right += int((decoded == answer).sum())
        exact += int(torch.equal(decoded, answer))
    assert metrics["val/acc"] == pytest.approx(right / 80, abs=1e-6)
    assert metrics["val/seq_acc"] == pytest.approx(exact / 40, abs=1e-6)
    assert 0 < exact < 40  # 2 symbols, 2 steps: an untrained model gets some right and some wrong


def test_scheduled_sampling_runs_and_logs_its_probability(tmp_path, one_thread):
    record = train_in_process(
        tmp_path, "model=seq2seq", "data=reversal", "debug=fast", "model.hidden_size=16",
        "task.sampling=scheduled", "task.schedule=linear", "task.schedule_c=0.2", "task.beam_size=2",
    )
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["train/teacher_forcing_prob"] == pytest.approx(1 - 0.2 * 4)  # the 5th step, i = 4
    assert {"val/loss", "val/tf_acc", "val/acc", "val/seq_acc", "test/acc", "test/seq_acc"} <= set(record["metrics"])


@pytest.mark.slow
def test_cli_runs_seq2seq_with_swapped_families(tmp_path):
    result = run_cli(
        tmp_path, "model=seq2seq", "data=reversal", "debug=fast", "callbacks=minimal", "model.attention=none",
        "model.encoder._target_=rnnlab.models.gated.GRU", "+model@model.decoder=elman", f"hydra.run.dir={tmp_path}/x",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_record(result.stdout.strip().splitlines()[-1])
    assert record["status"] == "completed" and record["config"]["model"]["decoder"]["_target_"].endswith("Elman")


LEARNING = ["data.train_size=6400", "data.val_size=200", "data.test_size=500", "optimizer.lr=0.01"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, threshold",
    [
        # seeds 0, 1, 2 reached test/seq_acc 0.976, 0.932, 0.968 (300 steps)
        (["data=reversal", "model.bidirectional=true", "trainer.max_epochs=3"], 0.85),
        # scheduled sampling, inverse sigmoid k = 40 (eps 0.5 near step 150, 0.02 at 300): 1.0, 1.0 (seeds 0, 1)
        (["data=reversal", "model.bidirectional=true", "trainer.max_epochs=3", "task.sampling=scheduled",
          "task.schedule_k=40"], 0.9),
        # plain context vector, no attention: 0.946, 0.982, 0.992 (500 steps)
        (["data=reversal", "model.bidirectional=true", "model.attention=none", "trainer.max_epochs=5"], 0.85),
        # 5 of 8 symbols copied across a delay of 2, unidirectional encoder: 1.0, 1.0, 0.988 (300 steps)
        (["data=copy", "data.delay=2", "data.length=5", "data.answer_only=true", "trainer.max_epochs=3"], 0.9),
    ],
    ids=["reversal", "reversal-scheduled", "reversal-no-attention", "copy"],
)
def test_seq2seq_learns_short_sequences(tmp_path, one_thread, overrides, threshold):
    """Free-running exact-sequence accuracy on 5 symbols of 8; chance is 8^-5 = 3e-5."""
    record = train_in_process(tmp_path, "model=seq2seq", *overrides, *LEARNING)
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/seq_acc"] > threshold, record["metrics"]
