"""Output layers over a large vocabulary for per-step classification (language modelling); survey section VI.A.

The ``head`` group picks one (conf/head/<name>.yaml, the head's class as ``_target_``). With a head other than
``full`` the model is built with ``output_size = head.features`` (default the task's ``embedding_dim``) and hands
these features h [N, D] to the head, which owns the output word embedding; :func:`rnnlab.tasks.wiring.task_wiring`
builds it on the training split's unigram counts and the task receives it (:func:`check_head`). Every head gives
the exact, normalised log-likelihood ``log_probs(h)`` [N, V], used at validation and test, so ``val/ppl`` and
``test/ppl`` compare across heads; training minimises ``loss(h, targets)``, the mean over N targets of:

* ``full`` -- softmax over all V words, -log softmax(W h + b)_w. Under ``head=full`` the model's own readout
  plays this role (:class:`FullSoftmax` is the same layer, for the bench).
* ``class_softmax`` -- Goodman 2001, Mikolov et al. 2011: words fall into C classes by frequency binning and
  P(w|h) = P(c(w)|h) P(w|c(w),h), each factor a softmax (over C classes, then over the class's words).
* ``hierarchical_softmax`` -- Morin & Bengio 2005: the words are the leaves of a binary tree (Huffman from unigram
  counts, as in Mikolov et al. 2013, or balanced) and P(w|h) = prod_j sigmoid(d_j (u_{n_j} . h + b_{n_j})) over
  the inner nodes n_j on the root-to-w path, d_j = +1 / -1 for the right / left branch.
* ``nce`` -- noise-contrastive estimation (Gutmann & Hyvarinen 2012; Mnih & Teh 2012): with k noise words from
  the unigram q and Delta(w) = s(w, h) - log Z - log(k q(w)), the loss is
  -log sigmoid(Delta(w)) - sum_j log sigmoid(-Delta(x_j)); log Z is 0 (self-normalised) or a learned scalar.
* ``sampled`` -- sampled softmax (Bengio & Senecal 2008; Jean et al. 2015): the softmax of the corrected scores
  s(x, h) - log q(x) over the target and k noise words (a noise word equal to the target is left out).

s(w, h) = u_w . h + b_w are the scores of one output embedding; nce and sampled score exactly with the full softmax
of these scores. Their biases start at log q(w), so every score starts as the unigram model (words a short run
never samples keep sensible scores under the exact softmax). Noise words are drawn once per training step, shared
by the batch. q is the training split's add-one smoothed unigram distribution; classes and the Huffman tree are
built from the same counts + 1, so words absent from a (sub-sampled) training split keep a fair share.
"""

from __future__ import annotations

import heapq
import math
import warnings
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.errors import ConfigError, require_choice

TREES = ("huffman", "balanced")


class OutputHead(nn.Module):
    """Features h [N, D] -> a distribution over ``vocab_size`` words.

    ``exact_loss``: the training loss is the negative log-likelihood itself (False: a sampled surrogate).
    """

    name: ClassVar[str]  # the head's file in conf/head
    exact_loss = True

    def __init__(self, features: int, vocab_size: int):
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ConfigError("features", f"must be a positive integer, got {features!r}")
        if vocab_size < 2:
            raise ConfigError("_target_", f"{self.name} needs a vocabulary of at least 2 words, got {vocab_size}")
        self.features = features
        self.vocab_size = vocab_size

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """Exact log P(w | h) for every word: [..., D] -> [..., V]."""
        raise NotImplementedError

    def nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """-log P(target | h): h [N, D], targets [N] -> [N]."""
        return -self.log_probs(h).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training objective averaged over targets: h [N, D], targets [N] -> scalar."""
        return self.nll(h, targets).mean()

    def loss_and_count(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``loss`` over the targets that are not IGNORE_INDEX, and their number: features [..., D], targets [...]."""
        flat = targets.reshape(-1)
        valid = flat != IGNORE_INDEX
        return self.loss(features.reshape(-1, features.shape[-1])[valid], flat[valid]), int(valid.sum())


class FullSoftmax(OutputHead):
    """Softmax over the whole vocabulary: log P(w|h) = log softmax(W h + b)_w, W [V, D]."""

    name = "full"

    def __init__(self, features: int, counts: torch.Tensor):
        super().__init__(features, len(counts))
        self.layer = nn.Linear(features, self.vocab_size)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer(h).log_softmax(-1)

    def loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.layer(h), targets)


def frequency_classes(counts: torch.Tensor, classes: int) -> torch.Tensor:
    """Frequency binning (Mikolov et al. 2011): the class of each word, long [V], classes 0 .. C'-1 (C' <= classes).

    Words are taken by decreasing count (ties: smaller id first) and join the current class a; once the cumulative
    unigram mass passes (a + 1) / classes the class closes (a word heavier than 1 / classes closes one class alone).
    """
    counts = [int(count) for count in counts.tolist()]
    total = sum(counts)
    assigned = [0] * len(counts)
    current = cumulative = 0
    for word in sorted(range(len(counts)), key=lambda word: (-counts[word], word)):
        cumulative += counts[word]
        assigned[word] = current
        if cumulative * classes > (current + 1) * total and current < classes - 1:  # mass > (a + 1) / C, exactly
            current += 1
    return torch.tensor(assigned)


class ClassSoftmax(OutputHead):
    """Class-factored softmax (Goodman 2001; Mikolov et al. 2011): log P(w|h) = log P(c(w)|h) + log P(w|c(w), h).

    P(c|h) = softmax(A h + a)_c over the C' classes; P(w|c, h) = softmax over the words of class c of (W h + b).
    Training evaluates only the target's class: O(C' + |c(w)|) scores per target instead of V.
    """

    name = "class_softmax"

    def __init__(self, features: int, counts: torch.Tensor, classes: int | None = None):
        vocab_size = len(counts)
        super().__init__(features, vocab_size)
        valid = isinstance(classes, int) and not isinstance(classes, bool) and 1 <= classes <= vocab_size
        if classes is not None and not valid:
            raise ConfigError("classes", f"must be null or an integer in [1, {vocab_size}], got {classes!r}")
        classes = round(math.sqrt(vocab_size)) if classes is None else classes
        word_class = frequency_classes(counts + 1, classes)
        self.classes = int(word_class.max()) + 1
        members = torch.argsort(word_class * vocab_size + torch.arange(vocab_size))  # by class, then by id
        sizes = torch.bincount(word_class, minlength=self.classes)
        self.bounds = [0, *torch.cumsum(sizes, 0).tolist()]  # class c's words: members[bounds[c]:bounds[c + 1]]
        position = torch.empty(vocab_size, dtype=torch.long)
        position[members] = torch.arange(vocab_size) - torch.tensor(self.bounds[:-1]).repeat_interleave(sizes)
        self.register_buffer("word_class", word_class, persistent=False)
        self.register_buffer("members", members, persistent=False)
        self.register_buffer("position", position, persistent=False)  # a word's index within its class
        self.class_layer = nn.Linear(features, self.classes)
        self.word_layer = nn.Linear(features, vocab_size)

    def nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        target_class = self.word_class[targets]
        class_nll = -self.class_layer(h).log_softmax(-1).gather(1, target_class.unsqueeze(1)).squeeze(1)
        order = torch.argsort(target_class, stable=True)  # targets grouped by class
        groups, sizes = torch.unique_consecutive(target_class[order], return_counts=True)
        groups, sizes = groups.tolist(), sizes.tolist()
        words = torch.cat([self.members[self.bounds[group] : self.bounds[group + 1]] for group in groups])
        class_sizes = [self.bounds[group + 1] - self.bounds[group] for group in groups]
        # one gather and one split each (a single backward each), then a small softmax per class present
        weights = self.word_layer.weight[words].split(class_sizes)
        biases = self.word_layer.bias[words].split(class_sizes)
        positions = self.position[targets[order]].unsqueeze(1).split(sizes)
        pieces = [
            F.linear(rows, weight, bias).log_softmax(-1).gather(1, position).squeeze(1)
            for rows, weight, bias, position in zip(h[order].split(sizes), weights, biases, positions)
        ]
        word_nll = -torch.cat(pieces)[torch.argsort(order)]  # back to the targets' order
        return class_nll + word_nll

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.word_layer(h)  # [..., V]
        index = self.word_class.expand_as(logits)
        shape = (*logits.shape[:-1], self.classes)
        peak = logits.detach().new_full(shape, -math.inf).scatter_reduce(-1, index, logits.detach(), "amax")
        shifted = (logits - peak.gather(-1, index)).exp()
        log_norm = peak + logits.new_zeros(shape).scatter_add(-1, index, shifted).log()  # per-class logsumexp
        class_log_probs = self.class_layer(h).log_softmax(-1)
        return (class_log_probs - log_norm).gather(-1, index) + logits


def huffman_tree(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Huffman's (1952) binary tree over V >= 2 leaves: (parent, sign), long [2V - 1] each.

    Nodes 0 .. V-1 are the words, V .. 2V-2 the inner nodes in order of creation (the root, 2V - 2, is its own
    parent). Each step merges the two lightest nodes (ties: the lower node id first); the lighter becomes its
    parent's left branch (sign -1), the other the right branch (sign +1); the root's sign is 0.
    """
    vocab_size = len(counts)
    heap = [(int(count), node) for node, count in enumerate(counts.tolist())]
    heapq.heapify(heap)
    parent = list(range(2 * vocab_size - 1))
    sign = [0] * (2 * vocab_size - 1)
    for node in range(vocab_size, 2 * vocab_size - 1):
        left_count, left = heapq.heappop(heap)
        right_count, right = heapq.heappop(heap)
        parent[left], parent[right], sign[left], sign[right] = node, node, -1, 1
        heapq.heappush(heap, (left_count + right_count, node))
    return torch.tensor(parent), torch.tensor(sign)


def node_depths(parent: torch.Tensor) -> list[int]:
    """Each node's depth in a tree from :func:`huffman_tree` (the root's is 0)."""
    parent = parent.tolist()
    depth = [0] * len(parent)
    for node in range(len(parent) - 2, -1, -1):  # parents are created after their children: root first
        depth[node] = depth[parent[node]] + 1
    return depth


def code_lengths(parent: torch.Tensor, vocab_size: int) -> list[int]:
    """Each leaf's depth (its code length in bits) in a tree from :func:`huffman_tree`."""
    return node_depths(parent)[:vocab_size]


class HierarchicalSoftmax(OutputHead):
    """Binary-tree softmax (Morin & Bengio 2005): log P(w|h) = sum_j log sigmoid(d_j (U h + b)_{n_j}).

    The V - 1 inner nodes n each have a vector u_n and bias b_n; (n_j, d_j) are the inner nodes on the path from the
    root to w and the branch taken (+1 right, -1 left). ``tree``: ``huffman`` (from the unigram counts: frequent
    words get short paths, Mikolov et al. 2013) or ``balanced`` (Huffman over equal counts: depth ceil(log2 V) at
    most). Training evaluates the target's path only: O(depth) scores per target instead of V.
    """

    name = "hierarchical_softmax"

    def __init__(self, features: int, counts: torch.Tensor, tree: str = "huffman"):
        vocab_size = len(counts)
        super().__init__(features, vocab_size)
        require_choice("tree", tree, TREES)
        parent, sign = huffman_tree(counts + 1 if tree == "huffman" else torch.ones_like(counts))
        parents, signs, depths = parent.tolist(), sign.tolist(), node_depths(parent)
        self.max_depth = max(depths)
        path_nodes = [[0] * self.max_depth for _ in range(vocab_size)]  # inner node ids (node - V), padded with 0
        path_signs = [[0.0] * self.max_depth for _ in range(vocab_size)]  # +1 / -1 branch taken, padded with 0
        # log_probs is one sparse product: as log sigmoid(-s) = log sigmoid(s) - s, log P(w|h) is the sum of
        # log sigmoid(s_n) over w's path minus the sum of s_n over its left branches: paths [V, 2(V-1)] applied to
        # [log sigmoid(s), s]. paths is kept in CSR form as dense buffers (a sparse buffer cannot be deep-copied).
        rows, columns, values = [0], [], []
        for word in range(vocab_size):
            node = word
            for step in range(depths[word]):
                path_nodes[word][step], path_signs[word][step] = parents[node] - vocab_size, float(signs[node])
                node = parents[node]
            on_path = sorted(path_nodes[word][: depths[word]])
            left = sorted(n + vocab_size - 1 for n, d in zip(path_nodes[word], path_signs[word]) if d < 0)
            columns += on_path + left
            values += [1.0] * len(on_path) + [-1.0] * len(left)
            rows.append(len(columns))
        self.register_buffer("path_nodes", torch.tensor(path_nodes), persistent=False)  # [V, L]
        self.register_buffer("path_signs", torch.tensor(path_signs), persistent=False)  # [V, L]
        self.register_buffer("parent", parent, persistent=False)  # the tree, as huffman_tree gives it
        self.register_buffer("path_rows", torch.tensor(rows), persistent=False)
        self.register_buffer("path_columns", torch.tensor(columns), persistent=False)
        self.register_buffer("path_values", torch.tensor(values), persistent=False)
        self.node_layer = nn.Linear(features, vocab_size - 1)

    def nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nodes, signs = self.path_nodes[targets], self.path_signs[targets]  # [N, L]
        scores = torch.einsum("nld,nd->nl", self.node_layer.weight[nodes], h) + self.node_layer.bias[nodes]
        return -(F.logsigmoid(signs * scores) * signs.abs()).sum(-1)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        scores = self.node_layer(h.reshape(-1, self.features))  # [N, V-1]
        terms = torch.cat([F.logsigmoid(scores), scores], dim=-1)  # [N, 2(V-1)]
        size = (self.vocab_size, terms.shape[-1])
        with warnings.catch_warnings():  # torch's notes that sparse CSR is in beta and unchecked by default
            warnings.filterwarnings("ignore", "Sparse (CSR tensor support|invariant checks)")
            paths = torch.sparse_csr_tensor(self.path_rows, self.path_columns, self.path_values, size)
        return (paths @ terms.T).T.reshape(*h.shape[:-1], self.vocab_size)


class SampledHead(OutputHead):
    """One output embedding s(w, h) = u_w . h + b_w trained on k noise words from the unigram q; exact full softmax
    of s at evaluation. Biases start at log q(w)."""

    exact_loss = False

    def __init__(self, features: int, counts: torch.Tensor, samples: int = 64):
        super().__init__(features, len(counts))
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError("samples", f"must be a positive integer, got {samples!r}")
        self.samples = samples
        noise = (counts.double() + 1.0) / (counts.double() + 1.0).sum()  # add-one smoothed unigram q
        self.register_buffer("noise", noise.float(), persistent=False)
        self.register_buffer("log_noise", noise.log().float(), persistent=False)
        self.layer = nn.Linear(features, self.vocab_size)
        with torch.no_grad():
            self.layer.bias.copy_(self.log_noise)

    def draw_noise(self) -> torch.Tensor:
        """k noise words drawn from q with replacement: long [k]."""
        return torch.multinomial(self.noise, self.samples, replacement=True)

    def scores(self, h: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s(target, h) [N] and s(x_j, h) [N, k] for noise words x [k]."""
        weight, bias = self.layer.weight, self.layer.bias
        target_scores = (weight[targets] * h).sum(-1) + bias[targets]
        return target_scores, F.linear(h, weight[noise], bias[noise])

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer(h).log_softmax(-1)


class NCE(SampledHead):
    """Noise-contrastive estimation (Gutmann & Hyvarinen 2012; Mnih & Teh 2012), see the module docstring.

    ``learn_log_z``: log Z is a learned scalar (starting at 0); otherwise fixed at 0 (self-normalised scores).
    """

    name = "nce"

    def __init__(self, features: int, counts: torch.Tensor, samples: int = 64, learn_log_z: bool = False):
        super().__init__(features, counts, samples)
        if not isinstance(learn_log_z, bool):
            raise ConfigError("learn_log_z", f"must be true or false, got {learn_log_z!r}")
        log_z = torch.zeros(())
        if learn_log_z:
            self.log_z = nn.Parameter(log_z)
        else:
            self.register_buffer("log_z", log_z)

    def loss(self, h: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """NCE loss averaged over targets; ``noise`` [k] fixes the noise words (default: drawn from q)."""
        noise = self.draw_noise() if noise is None else noise
        target_scores, noise_scores = self.scores(h, targets, noise)
        log_k = math.log(len(noise))
        target_delta = target_scores - self.log_z - log_k - self.log_noise[targets]
        noise_delta = noise_scores - self.log_z - log_k - self.log_noise[noise]
        return -(F.logsigmoid(target_delta) + F.logsigmoid(-noise_delta).sum(-1)).mean()


class SampledSoftmax(SampledHead):
    """Sampled softmax (Bengio & Senecal 2008; Jean et al. 2015), see the module docstring."""

    name = "sampled"

    def loss(self, h: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """-log softmax of the corrected scores over [target, noise words], averaged over targets."""
        noise = self.draw_noise() if noise is None else noise
        target_scores, noise_scores = self.scores(h, targets, noise)
        target_scores = target_scores - self.log_noise[targets]
        noise_scores = (noise_scores - self.log_noise[noise]).masked_fill(
            noise.unsqueeze(0) == targets.unsqueeze(1), -math.inf
        )
        candidates = torch.cat([target_scores.unsqueeze(1), noise_scores], dim=1)
        return (torch.logsumexp(candidates, dim=1) - target_scores).mean()


HEAD_CLASSES: dict[str, type[OutputHead]] = {
    head.name: head for head in (FullSoftmax, ClassSoftmax, HierarchicalSoftmax, NCE, SampledSoftmax)
}
HEADS = tuple(HEAD_CLASSES)  # the files of conf/head (full: the model's own readout)


def check_head(head: OutputHead, model: nn.Module, spec: TaskSpec, prediction_optimizer: bool = False) -> None:
    """Refuse (``head``) a head the data, the model or the optimizer cannot use with it."""
    if spec.kind != "classification" or not spec.per_step:
        raise ConfigError(
            "head", f"{head.name} needs per-step classification data (language modelling); use head=full", full=True
        )
    if model.output_size != head.features:
        raise ConfigError(
            "head", f"{head.name} reads {head.features} features; the model writes {model.output_size}", full=True
        )
    if prediction_optimizer:
        raise ConfigError(
            "head", f"{head.name} is trained by gradient; optimizers that read predictions need head=full", full=True
        )
