"""Memory networks: a MemN2N hop by hand, hops and weight tying, the memory window; the RMN memory block by hand,
inputs older than its window, the interface; story batches, the memory task, learning bAbI-style QA."""

from __future__ import annotations

import math
from collections import Counter
from functools import partial

import pytest
import torch

from conftest import compose_config, train_in_process
from rnnlab.data.base import TaskSpec
from rnnlab.data.reasoning import BabiSyntheticDataModule
from rnnlab.errors import ConfigError
from rnnlab.models.memory import MemN2N, RecurrentMemoryNetwork
from rnnlab.tasks.memory import MemoryTask
from rnnlab.wiring import build_model
from zoo_checks import check_interface

V, D = 11, 6
sigma = torch.sigmoid

# one story: sentences of 3, 2 and 4 words, then a padded sentence; a query of 2 words
STORY = torch.tensor([[[3, 1, 4, -1], [5, 9, -1, -1], [2, 6, 5, 3], [-1, -1, -1, -1]]])
QUERY = torch.tensor([[7, 8, -1]])


def encode_by_hand(words: list[int], matrix: torch.Tensor, position: bool) -> torch.Tensor:
    """sum_j l_j * matrix[x_j], l_kj = (1 - j/J) - (k/d)(1 - 2j/J) written out element by element (or l = 1)."""
    J, d = len(words), matrix.shape[1]
    total = torch.zeros(d)
    for j, word in enumerate(words, start=1):
        l = torch.tensor([(1 - j / J) - (k / d) * (1 - 2 * j / J) for k in range(1, d + 1)]) if position else 1.0
        total = total + l * matrix[word]
    return total


def sentences(story_row: torch.Tensor) -> list[list[int]]:
    return [[w for w in s.tolist() if w >= 0] for s in story_row if (s >= 0).any()]


# ------------------------------------------------------------------------------------------ MemN2N by hand


def test_memn2n_one_hop_by_hand():
    torch.manual_seed(0)
    model = MemN2N(V, V, D, hops=1, tying="adjacent", encoding="position", temporal=True)
    A, C = model.embeddings  # adjacent, K = 1: A^1 = B = E_0, C^1 = W^T = E_1
    T_A, T_C = model.times
    story = sentences(STORY[0])
    ages = [len(story) - 1 - i for i in range(len(story))]  # the last sentence is the most recent (age 0)
    m = torch.stack([encode_by_hand(s, A, True) + T_A[a] for s, a in zip(story, ages)])
    c = torch.stack([encode_by_hand(s, C, True) + T_C[a] for s, a in zip(story, ages)])
    u = encode_by_hand([7, 8], A, True)
    p = torch.softmax(m @ u, dim=0)  # attention over the memories (eq. 1)
    o = (p[:, None] * c).sum(0)  # o = sum_i p_i c_i (eq. 2)
    expected = C @ (u + o)  # a = softmax(W (o + u)), W^T = C (eq. 3)
    with torch.no_grad():
        logits, state = model(story=STORY, query=QUERY)
        u_final, (attention,) = model.read(STORY, QUERY)
    torch.testing.assert_close(attention[0, :3], p, atol=1e-6, rtol=0)
    assert attention[0, 3] == 0  # the padded sentence is no memory
    torch.testing.assert_close(state[0, 0], u + o, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[0, 0], expected, atol=1e-5, rtol=0)
    assert logits.shape == (1, 1, V)


def test_memn2n_two_layerwise_hops_by_hand():
    torch.manual_seed(1)
    model = MemN2N(V, 4, D, hops=2, tying="layerwise", encoding="bow", temporal=False)
    A, C, B = model.embeddings
    story = sentences(STORY[0])
    m = torch.stack([encode_by_hand(s, A, False) for s in story])
    c = torch.stack([encode_by_hand(s, C, False) for s in story])
    u = encode_by_hand([7, 8], B, False)
    for _ in range(2):  # the same A and C in every hop; u^k+1 = H u^k + o^k
        p = torch.softmax(m @ u, dim=0)
        u = model.hop_map.weight @ u + (p[:, None] * c).sum(0)
    with torch.no_grad():
        logits, _ = model(story=STORY, query=QUERY)
    torch.testing.assert_close(logits[0, 0], model.answer.weight @ u, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hops", [1, 3])
def test_memn2n_tying_shapes_and_parameter_counts(hops):
    adjacent = MemN2N(V, V, D, hops=hops, tying="adjacent", memory_size=20)
    assert len(adjacent.embeddings) == hops + 1 and len(adjacent.times) == hops + 1
    for k in range(hops - 1):
        assert adjacent.matrices(k)[1] is adjacent.matrices(k + 1)[0]  # A^k+1 = C^k
        assert adjacent.matrices(k)[3] is adjacent.matrices(k + 1)[2]  # T_A^k+1 = T_C^k
    assert adjacent.query_matrix() is adjacent.matrices(0)[0]  # B = A^1
    assert adjacent.answer_weight() is adjacent.matrices(hops - 1)[1]  # W^T = C^K
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(adjacent) == (hops + 1) * (V * D + 20 * D)
    untied_answer = MemN2N(V, 4, D, hops=hops, tying="adjacent", memory_size=20)  # answers != words: own W
    assert count(untied_answer) == count(adjacent) + 4 * D
    layerwise = MemN2N(V, 4, D, hops=hops, tying="layerwise", memory_size=20)
    assert all(layerwise.matrices(k)[0] is layerwise.matrices(0)[0] for k in range(hops))
    assert count(layerwise) == 3 * V * D + D * D + 4 * D + 2 * 20 * D  # A, C, B, H, W, T_A, T_C
    example = MemN2N.example_inputs(5, V)
    for model in (adjacent, layerwise):
        with torch.no_grad():
            logits, state = model(**example)
            _, attention = model.read(example["story"], example["query"])
        assert logits.shape == (5, 1, model.output_size) and state.shape == (1, 5, D)
        assert len(attention) == hops and all(torch.allclose(p.sum(-1), torch.ones(5)) for p in attention)


def test_memn2n_keeps_only_the_most_recent_memory_size_sentences():
    torch.manual_seed(2)
    model = MemN2N(V, V, D, hops=1, memory_size=2)
    _, (attention,) = model.read(STORY, QUERY)
    assert attention[0, 0] == 0 and attention[0, 3] == 0  # oldest sentence dropped; padding is no memory
    assert torch.isclose(attention[0, 1:3].sum(), torch.tensor(1.0))
    # dropping the oldest sentence from the story itself changes nothing
    shorter = torch.cat([STORY[:, 1:], STORY[:, :1].clamp(max=-1)], dim=1)
    torch.testing.assert_close(model(story=shorter, query=QUERY)[0], model(story=STORY, query=QUERY)[0])


def test_memn2n_gradients_and_settings():
    model = MemN2N(V, V, D, hops=2)
    logits, _ = model(**MemN2N.example_inputs(4, V))
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ConfigError, match="tying"):
        MemN2N(V, V, D, tying="none")
    with pytest.raises(ConfigError, match="encoding"):
        MemN2N(V, V, D, encoding="tfidf")
    with pytest.raises(ConfigError, match="hops"):
        MemN2N(V, V, D, hops=0)
    with pytest.raises(ValueError, match="story"):
        model(torch.zeros(1, 3, V))


# ------------------------------------------------------------------------------------------ RMN


def rm_block_by_hand(model: RecurrentMemoryNetwork, x_row, h_t, t):
    """Tran et al. 2016: attention over x_{t-n+1..t} (ages n-1..0), s_t, and the gated h'_t for one sequence."""
    n, size = model.memory_size, model.hidden_size
    M, C = model.memory_in.weight, model.memory_out.weight
    steps = range(max(0, t - n + 1), t + 1)
    m = torch.stack([M @ x_row[i] + model.time_in[t - i] for i in steps])
    c = torch.stack([C @ x_row[i] + model.time_out[t - i] for i in steps])
    p = torch.softmax(m @ h_t, dim=0)
    s = (p[:, None] * c).sum(0)
    W_z, W_r, W = model.gate_s.weight.split(size)
    b_z, b_r, b = model.gate_s.bias.split(size)
    U_z, U_r = model.gate_h.weight.split(size)
    z = sigma(W_z @ s + U_z @ h_t + b_z)
    r = sigma(W_r @ s + U_r @ h_t + b_r)
    mixed = (1 - z) * h_t + z * torch.tanh(W @ s + model.candidate_h.weight @ (r * h_t) + b)
    return p, model.readout.weight @ mixed + model.readout.bias


def test_rmn_memory_block_by_hand():
    torch.manual_seed(3)
    model = RecurrentMemoryNetwork(4, 3, hidden_size=5, memory_size=3)
    x = torch.randn(2, 6, 4)
    with torch.no_grad():
        outputs, _ = model(x)
        hidden, _ = model.lstm(x)
        window = torch.cat([torch.zeros(2, 2, 4), x], dim=1)
        seen = torch.cat([torch.zeros(2, 2, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)], dim=1)
        _, attention = model.attend(window, seen, hidden)
        for b in range(2):
            for t in (0, 1, 4, 5):  # a window still filling up, and full ones
                p, y = rm_block_by_hand(model, x[b], hidden[b, t], t)
                torch.testing.assert_close(outputs[b, t], y, atol=1e-5, rtol=0)
                torch.testing.assert_close(attention[b, t, 3 - len(p) :], p, atol=1e-6, rtol=0)  # oldest first
                assert (attention[b, t, : 3 - len(p)] == 0).all()  # nothing before the stream started


def test_rmn_inputs_older_than_the_window_do_not_reach_the_memory_read():
    torch.manual_seed(4)
    n, steps, t = 4, 10, 8
    model = RecurrentMemoryNetwork(3, 2, hidden_size=5, memory_size=n)
    x = torch.randn(1, steps, 3, requires_grad=True)
    hidden = torch.randn(1, steps, 5)
    window = torch.cat([torch.zeros(1, n - 1, 3), x], dim=1)
    seen = torch.cat([torch.zeros(1, n - 1, dtype=torch.bool), torch.ones(1, steps, dtype=torch.bool)], dim=1)
    s, _ = model.attend(window, seen, hidden)
    s[0, t].sum().backward()
    influence = x.grad[0].abs().sum(-1)
    assert (influence[: t - n + 1] == 0).all()  # x_0 .. x_{t-n}: outside the window
    assert (influence[t - n + 1 : t + 1] > 0).all()  # x_{t-n+1} .. x_t: the window
    assert (influence[t + 1 :] == 0).all()  # the future


def test_rmn_interface_and_carried_window():
    torch.manual_seed(5)
    for memory_size, temporal in ((3, True), (1, False), (12, True)):  # window inside, at, beyond a half
        model = RecurrentMemoryNetwork(3, 2, hidden_size=6, num_layers=2, memory_size=memory_size, temporal=temporal)
        check_interface(model, 3, 2)
    with_time = RecurrentMemoryNetwork(3, 2, hidden_size=6, memory_size=4)
    without = RecurrentMemoryNetwork(3, 2, hidden_size=6, memory_size=4, temporal=False)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(with_time) - count(without) == 2 * 4 * 6  # T_M and T_C
    with pytest.raises(ConfigError, match="memory_size"):
        RecurrentMemoryNetwork(3, 2, memory_size=0)


@pytest.mark.parametrize("name", ["memn2n", "rmn"])
def test_configs_build_and_param_budget_picks_hidden_size(tmp_path, name):
    cfg = compose_config(tmp_path, [f"model={name}", "model.param_budget=30000", "data=babi_synthetic"])
    model = build_model(cfg.model, 42, 42)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 30000) <= 0.05 * 30000 and model.output_size == 42
    task = "memory.MemoryTask" if name == "memn2n" else "sequence.SequenceTask"  # memn2n selects its own task
    assert cfg.task._target_ == f"rnnlab.tasks.{task}"


# ------------------------------------------------------------------------------------------ data and task


def test_story_batches_hold_each_examples_sentences_and_query():
    module = BabiSyntheticDataModule(structure=True, train_size=40, val_size=20, test_size=20, batch_size=8)
    module.setup()
    batch = next(iter(module.val_dataloader()))
    assert batch["story"].dim() == 3 and batch["query"].dim() == 2
    for row, example in enumerate(module.splits["val"][:8]):
        assert sentences(batch["story"][row]) == [s.tolist() for s in example.story]
        assert (batch["story"][row, len(example.story) :] == -1).all()
        assert [w for w in batch["query"][row].tolist() if w >= 0] == example.query.tolist()
    flat = BabiSyntheticDataModule(train_size=40, val_size=20, test_size=20, batch_size=8)
    flat.setup()
    assert set(next(iter(flat.val_dataloader()))) == {"inputs", "lengths", "targets"}  # default: unchanged


def test_memory_task_reads_story_and_query_and_refuses_what_it_cannot_answer():
    torch.manual_seed(6)
    module = BabiSyntheticDataModule(structure=True, train_size=40, val_size=20, test_size=20, batch_size=8)
    module.setup()
    batch = next(iter(module.val_dataloader()))
    model = MemN2N(42, 42, D)
    task = MemoryTask(model, module.task, optimizer=partial(torch.optim.SGD, lr=0.1))
    with torch.no_grad():
        answers = task.head(task.run_model(batch, "val"), batch["lengths"])
        logits, _ = model(story=batch["story"], query=batch["query"])
    torch.testing.assert_close(answers, logits[:, 0])
    loss = task.shared_step(batch, "val")
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[:, 0], batch["targets"]))
    per_step = TaskSpec(kind="classification", per_step=True, metric="acc")
    with pytest.raises(ConfigError, match="one answer"):
        MemoryTask(model, per_step, optimizer=partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ConfigError, match="reads no story"):
        MemoryTask(RecurrentMemoryNetwork(42, 42), module.task, optimizer=partial(torch.optim.SGD, lr=0.1))


# ------------------------------------------------------------------------------------------ learning


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, settings",
    [("memn2n", ["trainer.max_epochs=5"]), ("rmn", ["model.hidden_size=32", "trainer.max_epochs=5"])],
)
def test_memory_models_beat_the_answer_prior_on_babi(tmp_path, name, settings):
    sizes = dict(max_sentences=5, train_size=2000, val_size=200, test_size=300)
    record = train_in_process(
        tmp_path, "data=babi_synthetic", "data.structure=true", f"model={name}", "optimizer.lr=0.01",
        *(f"data.{key}={value}" for key, value in sizes.items()), *settings,
    )
    assert record["status"] == "completed", record["error"]
    module = BabiSyntheticDataModule(**sizes)
    module.setup()
    majority = Counter(int(e.targets) for e in module.splits["train"]).most_common(1)[0][0]
    prior_accuracy = sum(int(e.targets) == majority for e in module.splits["test"]) / len(module.splits["test"])
    metrics = record["metrics"]
    assert metrics["test/loss"] < module.task.baseline - 0.3, (metrics, module.task.baseline)
    assert metrics["test/acc"] > prior_accuracy + 0.05, (metrics, prior_accuracy)
    assert math.isfinite(metrics["val/loss"])
