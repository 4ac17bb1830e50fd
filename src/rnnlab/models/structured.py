"""Recursive (tree-structured) networks: the Tree-LSTM / S-LSTM and the plain recursive neural network.

A tree model reads the token sequence ``x`` [B, T, F] of a batch and its trees, given as two batch fields
(``rnnlab.data.reasoning``, ``data.structure=true``):

    parents:   [B, N] long, index of each node's parent in the same row, -1 for the root (and for padding)
    positions: [B, N] long, the step of ``x`` holding each node's symbol, -1 past the tree's nodes

Node j's input x_j is ``x[b, positions[b, j]]``; its children are the nodes whose parent is j, ordered by index
(pre-order: left before right). Nodes are computed bottom-up by height (leaves 0, a parent one more than its highest
child): every node of one height, across the whole batch, in one batched operation, so the Python loop runs over
heights only. The output is the root's: ``readout(h_root)`` [B, C], broadcast over the T steps as [B, T, C] so that
the task's ``last`` and ``mean`` heads both read the root. The returned state is the root's (h,) or (h, c), each
[1, B, H]; trees carry no state between batches (``state`` must be None).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice, require_positive

TREE_LSTM_VARIANTS = ("child_sum", "nary")


def batch_structure_kwargs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch fields a model names in its ``batch_keys`` (tree, story, query), as forward() keyword arguments."""
    keys = tuple(getattr(model, "batch_keys", ()))
    missing = [key for key in keys if key not in batch]
    if missing:
        raise ConfigError(
            "data.structure", f"{type(model).__name__} reads {', '.join(missing)} from each batch, which this data's "
            "batches lack; data.structure=true adds trees (data=trees) or story and query (data=babi_synthetic)"
        )
    return {key: batch[key] for key in keys}


@dataclass
class TreeSchedule:
    """The bottom-up order of a batch of trees, over flat node indices g = b * N + j.

    levels:   one LongTensor per height (0 = leaves), the flat indices of the real nodes of that height
    children: [B * N, K] flat index of each node's k-th child; ``pad`` (= B * N) where it has fewer than K
    roots:    [B] flat index of each row's root
    """

    levels: list[torch.Tensor]
    children: torch.Tensor
    roots: torch.Tensor
    pad: int


def tree_schedule(parents: torch.Tensor, positions: torch.Tensor, slots: int | None = None) -> TreeSchedule:
    """Heights, child slots and roots of the trees in ``parents`` / ``positions`` [B, N] with tensor operations.

    ``slots``: K, the child slots per node (N-ary networks; more children is an error); None: the most children of
    any node in the batch (at least 1).
    """
    batch, width = parents.shape
    device = parents.device
    real = positions >= 0
    flat = torch.arange(batch * width, device=device).view(batch, width)
    is_child = real & (parents >= 0)
    is_root = real & (parents < 0)
    if not bool((is_root.sum(1) == 1).all()):
        raise ValueError("every tree needs exactly one root (a real node whose parent is -1)")
    child = flat[is_child]  # ascending: pre-order within each row
    parent = (torch.arange(batch, device=device)[:, None] * width + parents)[is_child]  # b * N + parents[b, j]
    # rank of each child among its siblings: sort by parent (stable keeps index order), count within the group
    order = torch.sort(parent, stable=True).indices
    _, counts = torch.unique_consecutive(parent[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.empty_like(child)
    rank[order] = torch.arange(child.numel(), device=device) - starts
    most = int(counts.max()) if counts.numel() else 0
    if slots is not None and most > slots:
        raise ValueError(f"a node has {most} children; this N-ary network has arity {slots}")
    slots = slots if slots is not None else max(most, 1)
    pad = batch * width
    children = torch.full((pad, slots), pad, dtype=torch.long, device=device)
    children[parent, rank] = child
    # height(j) = 1 + max height of j's children, relaxed until it settles (at most N rounds, each one batched op)
    height = torch.zeros(pad, dtype=torch.long, device=device)
    for _ in range(width + 1):
        raised = height.scatter_reduce(0, parent, height[child] + 1, reduce="amax")
        if torch.equal(raised, height):
            break
        height = raised
    else:
        raise ValueError("parents do not form trees (a cycle)")
    nodes = flat[real]
    node_heights = height[nodes]
    by_height = torch.sort(node_heights, stable=True)
    sizes = torch.bincount(node_heights).tolist()
    levels = list(torch.split(nodes[by_height.indices], sizes))
    return TreeSchedule(levels=levels, children=children, roots=flat[is_root], pad=pad)


def random_trees(batch_size: int, max_depth: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random full binary trees in pre-order: ``parents`` and ``positions`` [B, N] (-1 padded), positions = index."""
    rng = random.Random(seed)
    rows: list[list[int]] = []
    for _ in range(batch_size):
        parents: list[int] = []

        def grow(parent: int, depth: int) -> None:
            index = len(parents)
            parents.append(parent)
            if depth < max_depth and (depth == 0 or rng.random() < 0.6):
                grow(index, depth + 1)
                grow(index, depth + 1)

        grow(-1, 0)
        rows.append(parents)
    width = max(len(row) for row in rows)
    parents = torch.full((batch_size, width), -1, dtype=torch.long)
    positions = torch.full((batch_size, width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        parents[b, : len(row)] = torch.tensor(row)
        positions[b, : len(row)] = torch.arange(len(row))
    return parents, positions


class TreeNetwork(nn.Module):
    """Bottom-up evaluation of a node function over a batch of trees (see the module docstring for shapes).

    Subclasses set ``state_names`` and implement ``node(projected, children)``: the new states [m, H] of m nodes
    from their projected inputs [m, P] (``project``, computed for every node before the loop) and their children's
    states [m, K, H] (zeros in empty slots). ``slots`` is K for N-ary networks (None: as many as the batch needs).
    """

    input_layout = (
        "[batch, time, features] plus the trees: parents [batch, nodes] (-1 root) and positions [batch, nodes] "
        "(step of each node in x, -1 padding)"
    )
    batch_keys = ("parents", "positions")
    state_names: tuple[str, ...] = ("h",)
    slots: int | None = None

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 64):
        super().__init__()
        require_positive(input_size=input_size, output_size=output_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size

    def project(self, x_nodes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def node(self, projected: torch.Tensor, children: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    @classmethod
    def example_inputs(cls, batch_size: int, input_size: int) -> dict:
        """A random batch of binary trees with their token features (prefix order: positions are node indices)."""
        parents, positions = random_trees(batch_size)
        lengths = (positions >= 0).sum(1)
        x = torch.randn(batch_size, parents.shape[1], input_size)
        return {"x": x, "lengths": lengths, "parents": parents, "positions": positions}

    def encode(self, x: torch.Tensor, parents: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The states of every node, each [B * N + 1, H] (flat index b * N + j; the last row is an empty slot)."""
        batch, width = parents.shape
        schedule = tree_schedule(parents.to(x.device), positions.to(x.device), self.slots)
        rows = torch.arange(batch, device=x.device)[:, None]
        x_nodes = x[rows, positions.to(x.device).clamp(min=0)].reshape(batch * width, -1)  # [B * N, F]
        projected = self.project(x_nodes)  # every node's input part at once
        states = tuple(x.new_zeros(schedule.pad + 1, self.hidden_size) for _ in self.state_names)
        for level in schedule.levels:
            slots = schedule.children[level]  # [m, K]
            new = self.node(projected[level], tuple(state[slots] for state in states))
            states = tuple(state.index_copy(0, level, part) for state, part in zip(states, new))
        return tuple(state[schedule.roots] for state in states)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state=None,
        parents: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ):
        """x [B, T, F] (lengths unused: the tree names the steps it reads) -> ([B, T, C] root output, root state)."""
        if parents is None or positions is None:
            raise ValueError(f"{type(self).__name__} needs the trees: parents and positions [batch, nodes]")
        if state is not None:
            raise ValueError("a tree network carries no state between batches; pass state=None")
        roots = self.encode(x, parents, positions)
        outputs = self.readout(roots[0]).unsqueeze(1).expand(-1, x.shape[1], -1)
        states = tuple(part.unsqueeze(0) for part in roots)
        return outputs, states if len(states) > 1 else states[0]


class TreeLSTM(TreeNetwork):
    """Tree-LSTM (Tai, Socher & Manning 2015), also the S-LSTM of Zhu, Sobhani & Guo 2015 without its peepholes.

    ``variant: child_sum`` (Tai et al. eqs. 2-8), children k of node j unordered, any number:

        h~_j   = sum_k h_k
        i_j    = sigma(W_i x_j + U_i h~_j + b_i)           o_j = sigma(W_o x_j + U_o h~_j + b_o)
        u_j    = tanh(W_u x_j + U_u h~_j + b_u)
        f_jk   = sigma(W_f x_j + U_f h_k + b_f)            (one forget gate per child)
        c_j    = i_j * u_j + sum_k f_jk * c_k              h_j = o_j * tanh(c_j)

    ``variant: nary`` (eqs. 9-14), children in ``arity`` ordered slots l (missing ones are zero):

        i_j  = sigma(W_i x_j + sum_l U_i^l h_jl + b_i)     (o_j, u_j likewise)
        f_jk = sigma(W_f x_j + sum_l U_f^{kl} h_jl + b_f)
        c_j  = i_j * u_j + sum_l f_jl * c_jl               h_j = o_j * tanh(c_j)

    Every node reads its own symbol x_j (operators too); a leaf has no children, so c_j = i_j * u_j. Weights:
    ``input`` = [W_i; W_o; W_u; W_f] with biases (F -> 4H), ``hidden_iou`` = [U_i; U_o; U_u] (H or arity*H -> 3H),
    ``hidden_f`` = U_f (H -> H, or arity*H -> arity*H: row block k, column block l is U_f^{kl}), readout H -> C.
    """

    state_names = ("h", "c")

    def __init__(
        self, input_size: int, output_size: int, hidden_size: int = 64, variant: str = "child_sum", arity: int = 2
    ):
        super().__init__(input_size, output_size, hidden_size)
        require_choice("variant", variant, TREE_LSTM_VARIANTS)
        if isinstance(arity, bool) or not isinstance(arity, int) or arity < 1:
            raise ConfigError("arity", f"must be a positive integer, got {arity!r}")
        self.variant = variant
        self.arity = arity
        self.slots = arity if variant == "nary" else None
        reads = hidden_size * (arity if variant == "nary" else 1)
        self.input = nn.Linear(input_size, 4 * hidden_size)
        self.hidden_iou = nn.Linear(reads, 3 * hidden_size, bias=False)
        self.hidden_f = nn.Linear(reads, reads, bias=False)
        self.readout = nn.Linear(hidden_size, output_size)

    def project(self, x_nodes):
        return self.input(x_nodes)

    def node(self, projected, children):
        h_children, c_children = children  # [m, K, H]
        size = self.hidden_size
        x_iou, x_f = projected.split([3 * size, size], dim=-1)
        if self.variant == "child_sum":
            iou = x_iou + self.hidden_iou(h_children.sum(1))
            f = torch.sigmoid(x_f.unsqueeze(1) + self.hidden_f(h_children))
        else:
            flat = h_children.flatten(1)  # [m, K * H] = [h_j1; ...; h_jK]
            iou = x_iou + self.hidden_iou(flat)
            f = torch.sigmoid(x_f.unsqueeze(1) + self.hidden_f(flat).view_as(h_children))
        i, o, u = iou.split(size, dim=-1)
        c = torch.sigmoid(i) * torch.tanh(u) + (f * c_children).sum(1)
        return torch.sigmoid(o) * torch.tanh(c), c


class RecursiveNN(TreeNetwork):
    """Recursive neural network (Goodfellow, Bengio & Courville, Deep Learning, section 10.6; Socher et al. 2011).

        h_j = tanh(W [h_j1; ...; h_jN] + V x_j + b)

    over N = ``arity`` ordered child slots (missing children are zero, so a leaf is embedded as tanh(V x_j + b)).
    The book's form composes the children only; here every node also reads its own symbol through V, which an
    expression tree needs (the operator decides how children combine). Weights: ``children`` W (N*H -> H, no bias),
    ``input`` V with b (F -> H), readout H -> C.
    """

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 64, arity: int = 2):
        super().__init__(input_size, output_size, hidden_size)
        if isinstance(arity, bool) or not isinstance(arity, int) or arity < 1:
            raise ConfigError("arity", f"must be a positive integer, got {arity!r}")
        self.arity = self.slots = arity
        self.input = nn.Linear(input_size, hidden_size)
        self.children_weight = nn.Linear(arity * hidden_size, hidden_size, bias=False)
        self.readout = nn.Linear(hidden_size, output_size)

    def project(self, x_nodes):
        return self.input(x_nodes)

    def node(self, projected, children):
        (h_children,) = children
        return (torch.tanh(projected + self.children_weight(h_children.flatten(1))),)
