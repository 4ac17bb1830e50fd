"""Tree-structured networks: Tree-LSTM nodes and the recursive net by hand, batched-by-height evaluation against a
naive recursion, the tree batches of data=trees, the task hook, errors, and learning arithmetic trees."""

from __future__ import annotations

import random
from collections import Counter
from functools import partial

import pytest
import torch

from conftest import compose_config, train_in_process
from rnnlab.data.base import TaskSpec
from rnnlab.data.reasoning import TreesDataModule
from rnnlab.errors import ConfigError
from rnnlab.models.structured import RecursiveNN, TreeLSTM, batch_structure_kwargs, random_trees, tree_schedule
from rnnlab.tasks.sequence import SequenceTask
from rnnlab.wiring import build_model

IN, OUT, H = 5, 3, 6
sigma = torch.sigmoid


# ------------------------------------------------------------------------------------------ reference math


def lstm_node_by_hand(model: TreeLSTM, x_j, children):
    """Tai et al. 2015 eqs. 2-8 (child_sum) or 9-14 (nary) for one node: x_j [F], children a list of (h, c)."""
    W, b = model.input.weight, model.input.bias
    W_i, W_o, W_u, W_f = W.split(H)
    b_i, b_o, b_u, b_f = b.split(H)
    U_iou, U_f = model.hidden_iou.weight, model.hidden_f.weight
    U_i, U_o, U_u = U_iou.split(H)
    zero = torch.zeros(H)
    if model.variant == "child_sum":
        h_sum = sum((h for h, _ in children), zero)
        i = sigma(W_i @ x_j + U_i @ h_sum + b_i)
        o = sigma(W_o @ x_j + U_o @ h_sum + b_o)
        u = torch.tanh(W_u @ x_j + U_u @ h_sum + b_u)
        c = i * u + sum((sigma(W_f @ x_j + U_f @ h_k + b_f) * c_k for h_k, c_k in children), zero)
    else:
        slots = list(children) + [(zero, zero)] * (model.arity - len(children))
        block = lambda U, k, l: U[k * H : (k + 1) * H, l * H : (l + 1) * H]  # noqa: E731
        i = sigma(W_i @ x_j + sum(block(U_i, 0, l) @ h for l, (h, _) in enumerate(slots)) + b_i)
        o = sigma(W_o @ x_j + sum(block(U_o, 0, l) @ h for l, (h, _) in enumerate(slots)) + b_o)
        u = torch.tanh(W_u @ x_j + sum(block(U_u, 0, l) @ h for l, (h, _) in enumerate(slots)) + b_u)
        c = i * u
        for k, (_, c_k) in enumerate(slots):
            f_k = sigma(W_f @ x_j + sum(block(U_f, k, l) @ h for l, (h, _) in enumerate(slots)) + b_f)
            c = c + f_k * c_k
    return o * torch.tanh(c), c


def recursive_node_by_hand(model: RecursiveNN, x_j, children):
    """h_j = tanh(W [h_j1; h_j2] + V x_j + b), missing children zero."""
    slots = [h for (h,) in children] + [torch.zeros(H)] * (model.arity - len(children))
    return (torch.tanh(model.children_weight.weight @ torch.cat(slots) + model.input.weight @ x_j + model.input.bias),)


def naive_root(model, node_by_hand, x_row, parents_row, positions_row):
    """Plain recursion from the root over one tree (no batching, no heights)."""
    real = [j for j, p in enumerate(positions_row.tolist()) if p >= 0]
    parents = parents_row.tolist()
    children = {j: [k for k in real if parents[k] == j] for j in real}

    def evaluate(j):
        return node_by_hand(model, x_row[positions_row[j]], [evaluate(k) for k in children[j]])

    (root,) = [j for j in real if parents[j] < 0]
    return evaluate(root)


def random_general_trees(batch: int, seed: int, max_children: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-order trees whose nodes have 0..max_children children, with shuffled positions into a longer x."""
    rng = random.Random(seed)
    rows = []
    for _ in range(batch):
        parents: list[int] = []

        def grow(parent, depth):
            index = len(parents)
            parents.append(parent)
            if depth < 3:
                for _ in range(rng.randint(0 if depth else 1, max_children)):
                    grow(index, depth + 1)

        grow(-1, 0)
        rows.append(parents)
    width = max(map(len, rows))
    parents = torch.full((batch, width), -1)
    positions = torch.full((batch, width), -1)
    for b, row in enumerate(rows):
        parents[b, : len(row)] = torch.tensor(row)
        positions[b, : len(row)] = torch.tensor(rng.sample(range(width + 2), len(row)))  # steps of x, any order
    return parents, positions


# ------------------------------------------------------------------------------------------ by hand


@pytest.mark.parametrize("variant", ["child_sum", "nary"])
def test_tree_lstm_three_node_tree_by_hand(variant):
    # "3 + 4" in infix: the root + at step 1, its children at steps 0 and 2
    torch.manual_seed(0)
    model = TreeLSTM(IN, OUT, H, variant=variant)
    x = torch.randn(1, 3, IN)
    parents, positions = torch.tensor([[-1, 0, 0]]), torch.tensor([[1, 0, 2]])
    with torch.no_grad():
        outputs, (h, c) = model(x, parents=parents, positions=positions)
        left = lstm_node_by_hand(model, x[0, 0], [])
        right = lstm_node_by_hand(model, x[0, 2], [])
        root_h, root_c = lstm_node_by_hand(model, x[0, 1], [left, right])
    torch.testing.assert_close(h[0, 0], root_h, atol=1e-5, rtol=0)
    torch.testing.assert_close(c[0, 0], root_c, atol=1e-5, rtol=0)
    expected = model.readout.weight @ root_h + model.readout.bias
    assert outputs.shape == (1, 3, OUT)
    for t in range(3):  # the root's output at every step
        torch.testing.assert_close(outputs[0, t], expected, atol=1e-5, rtol=0)
    # the leaves' own cells: c = i * u (no children), checked against the gates directly
    W_i, _, W_u, _ = model.input.weight.split(H)
    b_i, _, b_u, _ = model.input.bias.split(H)
    torch.testing.assert_close(left[1], sigma(W_i @ x[0, 0] + b_i) * torch.tanh(W_u @ x[0, 0] + b_u))


def test_nary_children_are_ordered_and_child_sum_children_are_not():
    torch.manual_seed(1)
    x = torch.randn(1, 3, IN)
    parents, positions = torch.tensor([[-1, 0, 0]]), torch.tensor([[0, 1, 2]])
    swapped = torch.tensor([[0, 2, 1]])
    for variant, same in (("child_sum", True), ("nary", False)):
        model = TreeLSTM(IN, OUT, H, variant=variant)
        with torch.no_grad():
            a, _ = model(x, parents=parents, positions=positions)
            b, _ = model(x, parents=parents, positions=swapped)
        assert torch.allclose(a, b, atol=1e-6) == same, variant


def test_recursive_nn_three_node_tree_by_hand():
    torch.manual_seed(2)
    model = RecursiveNN(IN, OUT, H)
    x = torch.randn(1, 3, IN)
    with torch.no_grad():
        outputs, h = model(x, parents=torch.tensor([[-1, 0, 0]]), positions=torch.tensor([[0, 1, 2]]))
    V, b, W = model.input.weight, model.input.bias, model.children_weight.weight
    left, right = torch.tanh(V @ x[0, 1] + b), torch.tanh(V @ x[0, 2] + b)  # leaves: embedded
    root = torch.tanh(W[:, :H] @ left + W[:, H:] @ right + V @ x[0, 0] + b)
    torch.testing.assert_close(h[0, 0], root, atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs[0, -1], model.readout(root), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ batched = naive


@pytest.mark.parametrize(
    "make, node_by_hand, max_children",
    [
        (partial(TreeLSTM, variant="child_sum"), lstm_node_by_hand, 3),
        (partial(TreeLSTM, variant="nary", arity=3), lstm_node_by_hand, 3),
        (partial(TreeLSTM, variant="nary"), lstm_node_by_hand, 2),
        (RecursiveNN, recursive_node_by_hand, 2),
    ],
    ids=["child_sum", "nary3", "nary2", "recursive_nn"],
)
def test_batched_by_height_equals_naive_recursion_on_random_trees(make, node_by_hand, max_children):
    torch.manual_seed(3)
    model = make(IN, OUT, H)
    parents, positions = random_general_trees(batch=12, seed=4, max_children=max_children)
    x = torch.randn(12, parents.shape[1] + 2, IN)
    with torch.no_grad():
        _, state = model(x, parents=parents, positions=positions)
        state = state if isinstance(state, tuple) else (state,)
        for b in range(12):
            expected = naive_root(model, node_by_hand, x[b], parents[b], positions[b])
            for got, want in zip(state, expected):
                torch.testing.assert_close(got[0, b], want, atol=1e-5, rtol=0)


def test_schedule_groups_nodes_by_height():
    parents, positions = random_trees(6, seed=5)
    schedule = tree_schedule(parents, positions)
    width = parents.shape[1]
    height = {}
    for level, nodes in enumerate(schedule.levels):
        for g in nodes.tolist():
            height[g] = level
    for b in range(6):
        real = [j for j in range(width) if positions[b, j] >= 0]
        assert {b * width + j for j in real} <= set(height)
        for j in real:
            kids = [k for k in real if parents[b, k] == j]
            assert height[b * width + j] == (1 + max(height[b * width + k] for k in kids) if kids else 0)
            assert sorted(k for k in schedule.children[b * width + j].tolist() if k != schedule.pad) == [
                b * width + k for k in kids
            ]
    assert sum(len(level) for level in schedule.levels) == int((positions >= 0).sum())


def test_tree_batches_from_the_trees_datamodule_match_naive_recursion():
    module = TreesDataModule(structure=True, notation="infix", train_size=40, val_size=20, test_size=20, batch_size=8)
    module.setup()
    batch = next(iter(module.val_dataloader()))
    for row, example in enumerate(module.splits["val"][:8]):
        nodes = len(example.nodes)
        assert batch["parents"][row, :nodes].tolist() == example.parents.tolist()
        assert batch["positions"][row, :nodes].tolist() == example.positions.tolist()
        assert (batch["positions"][row, nodes:] == -1).all() and (batch["parents"][row, nodes:] == -1).all()
        symbols = batch["inputs"][row, batch["positions"][row, :nodes]].argmax(-1)
        assert symbols.tolist() == example.nodes.tolist()  # positions point at the node symbols in the inputs
    torch.manual_seed(6)
    model = TreeLSTM(15, 10, H, variant="nary")
    with torch.no_grad():
        _, (h, _) = model(batch["inputs"], batch["lengths"], parents=batch["parents"], positions=batch["positions"])
        for row in range(8):
            want, _ = naive_root(model, lstm_node_by_hand, batch["inputs"][row], batch["parents"][row],
                                 batch["positions"][row])
            torch.testing.assert_close(h[0, row], want, atol=1e-5, rtol=0)
    flat = TreesDataModule(train_size=40, val_size=20, test_size=20, batch_size=8)
    flat.setup()
    assert set(next(iter(flat.val_dataloader()))) == {"inputs", "lengths", "targets"}  # default: unchanged


# ------------------------------------------------------------------------------------------ task wiring


def test_sequence_task_passes_the_tree_and_both_heads_read_the_root():
    torch.manual_seed(7)
    model = TreeLSTM(IN, OUT, H)
    spec = TaskSpec(kind="classification", per_step=False, metric="acc")
    example = TreeLSTM.example_inputs(4, IN)
    batch = {"inputs": example["x"], "lengths": example["lengths"], "targets": torch.zeros(4, dtype=torch.long),
             "parents": example["parents"], "positions": example["positions"]}
    with torch.no_grad():
        _, (root, _) = model(example["x"], parents=example["parents"], positions=example["positions"])
        for pooling in ("last", "mean"):
            task = SequenceTask(model, spec, optimizer=partial(torch.optim.SGD, lr=0.1), pooling=pooling)
            outputs = task.run_model(batch, "val")
            torch.testing.assert_close(task.head(outputs, batch["lengths"]), model.readout(root[0]), atol=1e-5, rtol=0)
    del batch["parents"]
    with pytest.raises(ConfigError, match="data.structure"):
        batch_structure_kwargs(model, batch)


def test_gradients_reach_every_parameter_and_the_node_inputs():
    torch.manual_seed(8)
    for model in (TreeLSTM(IN, OUT, H), TreeLSTM(IN, OUT, H, variant="nary"), RecursiveNN(IN, OUT, H)):
        example = type(model).example_inputs(5, IN)
        x = example.pop("x").requires_grad_()
        outputs, _ = model(x, **example)
        outputs[:, 0].sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        real = example["positions"][example["positions"] >= 0]
        assert (x.grad[0, real[real < x.shape[1]]].abs().sum(-1) > 0).any()


# ------------------------------------------------------------------------------------------ errors and config


def test_bad_trees_and_settings_are_refused():
    model = TreeLSTM(IN, OUT, H, variant="nary")
    x = torch.randn(1, 4, IN)
    with pytest.raises(ValueError, match="arity"):  # three children for a binary N-ary cell
        model(x, parents=torch.tensor([[-1, 0, 0, 0]]), positions=torch.tensor([[0, 1, 2, 3]]))
    with pytest.raises(ValueError, match="root"):
        model(x, parents=torch.tensor([[1, 0, -1, -1]]), positions=torch.tensor([[0, 1, -1, -1]]))
    with pytest.raises(ValueError, match="parents"):
        model(x)
    with pytest.raises(ConfigError, match="variant"):
        TreeLSTM(IN, OUT, H, variant="binary")
    with pytest.raises(ConfigError, match="arity"):
        RecursiveNN(IN, OUT, H, arity=0)


@pytest.mark.parametrize("name", ["tree_lstm", "recursive_nn"])
def test_configs_build_and_param_budget_picks_hidden_size(tmp_path, name):
    cfg = compose_config(tmp_path, [f"model={name}", "model.param_budget=20000"])
    model = build_model(cfg.model, 15, 10)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 20000) <= 0.05 * 20000 and model.output_size == 10


# ------------------------------------------------------------------------------------------ learning


def label_prior_accuracy(module: TreesDataModule) -> float:
    """Test accuracy of always answering the most frequent training label."""
    majority = Counter(int(e.targets) for e in module.splits["train"]).most_common(1)[0][0]
    return sum(int(e.targets) == majority for e in module.splits["test"]) / len(module.splits["test"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, settings",
    [
        ("tree_lstm", ["model.hidden_size=32", "trainer.max_epochs=5"]),
        ("recursive_nn", ["model.hidden_size=64", "trainer.max_epochs=10"]),
    ],
)
def test_tree_models_beat_the_label_prior_on_arithmetic_trees(tmp_path, name, settings):
    sizes = dict(max_depth=2, train_size=3000, val_size=300, test_size=300)
    record = train_in_process(
        tmp_path, "data=trees", "data.structure=true", f"model={name}", "optimizer.lr=0.01",
        *(f"data.{key}={value}" for key, value in sizes.items()), *settings,
    )
    assert record["status"] == "completed", record["error"]
    module = TreesDataModule(**sizes)
    module.setup()
    metrics = record["metrics"]
    # the value mod 10 composes bottom-up; the label prior (baseline, about ln 10) ignores the expression
    assert metrics["test/loss"] < module.task.baseline - 0.3, (metrics, module.task.baseline)
    assert metrics["test/acc"] > label_prior_accuracy(module), metrics
