"""Generated reasoning tasks: the embedded Reber grammar, bAbI-style question answering, arithmetic expression trees.

Every example is generated from ``data.seed`` (Python's ``random.Random``) and read as a sequence of one-hot symbols
[T, V]. Items are :class:`TokenExample` objects: iterating one yields ``(inputs, targets)``, the pair the default
collate (``rnnlab.data.base.pad_collate``) batches, and each kind adds the structure that later models need
(legal next symbols, the story's sentences, the tree's parents). With ``disjoint: true`` a val or test example never
repeats (by its token sequence) an example of an earlier split, so scores measure generalisation, not recall.

``structure: true`` (trees, bAbI) also puts that structure into every batch, padded with ``STRUCTURE_PAD`` (-1):
trees add ``parents`` and ``positions`` [B, N], stories add ``story`` [B, S, L] and ``query`` [B, L_q] word ids.
Models that read them name the keys in ``batch_keys`` (``rnnlab.models.structured``, ``rnnlab.models.memory``).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from rnnlab.data.base import TaskSpec
from rnnlab.data.synthetic import SyntheticDataModule
from rnnlab.errors import ConfigError, require_choice, require_positive


@dataclass(frozen=True, eq=False)
class TokenExample:
    """One generated sequence: ``tokens`` [T] symbol ids over ``vocab_size`` symbols and its ``targets``."""

    tokens: torch.Tensor
    targets: torch.Tensor
    vocab_size: int

    @property
    def inputs(self) -> torch.Tensor:
        """One-hot float [T, vocab_size]."""
        return torch.nn.functional.one_hot(self.tokens, self.vocab_size).float()

    def __iter__(self):
        return iter((self.inputs, self.targets))


STRUCTURE_PAD = -1  # padding of the structure fields: no node / no word / no sentence


def pad_structure(tensors: Sequence[torch.Tensor], shape: Sequence[int] | None = None) -> torch.Tensor:
    """Stack long tensors of equal rank into [len(tensors), *shape], each padded at the end of every dimension with
    ``STRUCTURE_PAD``; ``shape`` defaults to the largest size of each dimension."""
    if shape is None:
        shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    out = torch.full((len(tensors), *shape), STRUCTURE_PAD, dtype=torch.long)
    for row, tensor in enumerate(tensors):
        out[(row, *(slice(0, size) for size in tensor.shape))] = tensor
    return out


class StructureCollate:
    """The flat batch of ``collate(examples)`` plus the fields ``structure(examples)`` returns (picklable)."""

    def __init__(self, collate: Callable, structure: Callable[[list], dict[str, torch.Tensor]]):
        self.collate = collate
        self.structure = structure

    def __call__(self, examples: list) -> dict[str, torch.Tensor]:
        return {**self.collate(examples), **self.structure(examples)}


def entropy_baseline(train_labels: list[int], test_labels: list[int]) -> float:
    """Test cross-entropy (nats) of the training label prior, a predictor that ignores the input (add-one smoothed
    over the labels that occur in either split)."""
    counts = Counter(train_labels)
    total = len(train_labels) + len(set(train_labels) | set(test_labels))
    return -sum(math.log((counts[label] + 1) / total) for label in test_labels) / len(test_labels)


class GeneratedDataModule(SyntheticDataModule):
    """Examples drawn one at a time by ``sample(rng)``; ``disjoint`` keeps val/test examples out of earlier splits.

    Batches: inputs [B, T, V] one-hot, lengths [B], targets as the subclass documents. Datasets are lists of
    examples (``self.splits[name][i]``), so the extra fields stay reachable.
    """

    MAX_DRAWS_PER_EXAMPLE = 50

    def __init__(self, disjoint: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.disjoint = bool(disjoint)

    def sample(self, rng: random.Random) -> tuple[tuple[int, ...], Callable[[], TokenExample]]:
        """One draw: its token ids (the key ``disjoint`` compares) and a function that builds the example."""
        raise NotImplementedError

    def build_splits(self) -> dict[str, list[TokenExample]]:
        rng = random.Random(self.seed)
        seen: set[tuple[int, ...]] = set()
        splits = {}
        for name, size in self.sizes.items():
            examples, keys, draws = [], set(), 0
            while len(examples) < size:
                draws += 1
                if draws > self.MAX_DRAWS_PER_EXAMPLE * size:
                    raise ConfigError(
                        "disjoint", f"found only {len(examples)} of {size} {name} examples unseen in earlier splits "
                        f"in {draws - 1} draws; generate a larger space, lower the split sizes or set disjoint=false"
                    )
                key, make = self.sample(rng)
                if self.disjoint and key in seen:
                    continue
                examples.append(make())
                keys.add(key)
            seen |= keys
            splits[name] = examples
        self.after_build(splits)
        return splits

    def after_build(self, splits: dict[str, list[TokenExample]]) -> None:
        """Set data-dependent parts of ``task`` (its baseline)."""

    def batch_structure(self) -> Callable[[list], dict[str, torch.Tensor]] | None:
        """The function giving a batch's structure fields (see the module docstring), or None for the flat batch."""
        return None

    def _loader(self, split: str, shuffle: bool):
        loader = super()._loader(split, shuffle)
        structure = self.batch_structure()
        if structure is not None:  # DataLoader allows replacing collate_fn after construction
            loader.collate_fn = StructureCollate(loader.collate_fn, structure)
        return loader

    def describe(self) -> str:
        lengths = [len(example.tokens) for split in self.splits.values() for example in split]
        return (
            f"{super().describe()}; lengths min {min(lengths)}, mean {sum(lengths) / len(lengths):.1f}, "
            f"max {max(lengths)}; disjoint splits {self.disjoint}; baseline loss {self.task.baseline:.3f}"
        )


# ----------------------------------------------------------------------------------------------------------------
# Embedded Reber grammar


@dataclass(frozen=True, eq=False)
class ReberExample(TokenExample):
    """``legal`` [T, 7] bool: row t marks every symbol the grammar allows as ``targets[t]`` (the classic target)."""

    legal: torch.Tensor


class ReberDataModule(GeneratedDataModule):
    """Embedded Reber grammar, next-symbol prediction (Hochreiter & Schmidhuber 1997, section 5 experiment 1).

    A string is B, T or P, a Reber string (B, a walk of the graph below with 50/50 choices, E), the same T or P, E:

        0 -T-> 1, 0 -P-> 2;  1 -S-> 1, 1 -X-> 3;  2 -T-> 2, 2 -V-> 4;  3 -X-> 2, 3 -S-> 5;  4 -P-> 3, 4 -V-> 5;  5 -E->

    Symbols B T P S X V E (ids 0-6, one-hot inputs [B, T, 7]). Inputs are the string less its last symbol and the
    per-step targets [B, T] the next symbol (ids), metric accuracy. Strings have 9 or more symbols (mean about 12).

    Most steps offer two legal successors, so no predictor scores accuracy 1: the classic criterion (all of a
    string's predictions legal, Hochreiter & Schmidhuber) reads the per-step multi-hot ``legal`` field of each
    example instead. ``optimal_loss`` / ``optimal_accuracy`` are the test scores of the Bayes-optimal predictor;
    ``task.baseline`` is the loss of a predictor that knows the grammar but forgets the second symbol, which costs
    ln 2 at the step after the inner E: only a model with memory over the whole string gets below it.
    ``disjoint`` defaults to false here (the classic i.i.d. protocol): true keeps only strings unseen in training
    for val/test, which are then mostly the longer ones.
    """

    SYMBOLS = "BTPSXVE"
    GRAPH = {
        0: (("T", 1), ("P", 2)),
        1: (("S", 1), ("X", 3)),
        2: (("T", 2), ("V", 4)),
        3: (("X", 2), ("S", 5)),
        4: (("P", 3), ("V", 5)),
        5: (("E", None),),
    }

    def __init__(self, disjoint: bool = False, **kwargs):
        super().__init__(disjoint=disjoint, **kwargs)
        self.input_size = self.output_size = len(self.SYMBOLS)
        self.task = TaskSpec(kind="classification", per_step=True, metric="acc")
        self.optimal_loss = self.optimal_accuracy = math.nan

    def sample(self, rng: random.Random):
        embedded = rng.choice("TP")
        symbols, choices = ["B", embedded, "B"], [("B",), ("T", "P"), ("B",)]  # choices[i]: legal symbols[i]
        node = 0
        while node is not None:
            edges = self.GRAPH[node]
            symbol, node = rng.choice(edges)
            symbols.append(symbol)
            choices.append(tuple(edge[0] for edge in edges))
        symbols += [embedded, "E"]
        choices += [(embedded,), ("E",)]
        ids = tuple(self.SYMBOLS.index(s) for s in symbols)

        def make() -> ReberExample:
            legal = [[symbol in options for symbol in self.SYMBOLS] for options in choices[1:]]
            return ReberExample(
                tokens=torch.tensor(ids[:-1]),
                targets=torch.tensor(ids[1:]),
                vocab_size=len(self.SYMBOLS),
                legal=torch.tensor(legal),
            )

        return ids[:-1], make

    def after_build(self, splits: dict[str, list[ReberExample]]) -> None:
        legal_counts = torch.cat([example.legal.sum(1) for example in splits["test"]]).double()
        self.optimal_loss = float(legal_counts.log().mean())
        self.optimal_accuracy = float((1 / legal_counts).mean())
        forgetting = math.log(2) * len(splits["test"]) / len(legal_counts)
        baseline = self.optimal_loss + forgetting
        self.task = TaskSpec(kind="classification", per_step=True, metric="acc", baseline=baseline)

    def describe(self) -> str:
        return (
            f"{super().describe()}; symbols {' '.join(self.SYMBOLS)}; Bayes-optimal test loss "
            f"{self.optimal_loss:.3f}, accuracy {self.optimal_accuracy:.3f}"
        )


# ----------------------------------------------------------------------------------------------------------------
# bAbI-style question answering


@dataclass(frozen=True, eq=False)
class QAExample(TokenExample):
    """A story and a question. ``tokens`` is the flat story + query; ``targets`` the answer word id (scalar long).

    story:      list of [L_i] long word ids, one per sentence (each ends with ``.``)
    query:      [L_q] long word ids (ends with ``?``)
    supporting: [S] long indices into ``story`` of the sentences that determine the answer
    question:   the question type (``single``, ``two`` or ``counting``)
    """

    story: list[torch.Tensor]
    query: torch.Tensor
    supporting: torch.Tensor
    question: str


class BabiSyntheticDataModule(GeneratedDataModule):
    """Generated bAbI-style stories and questions (Weston et al. 2015, tasks 1, 2 and 7), answered with one word.

    Four people move between six places and pick up or drop three objects; a story has 2 to ``max_sentences``
    sentences, then one question of a type drawn from ``question_types``:
      * ``single`` (task 1, single supporting fact): "where is mary ?" -> her last place;
      * ``two`` (task 2, two supporting facts): "where is the apple ?" -> the place of whoever holds it (the pick-up
        and that person's last move), or where it was dropped;
      * ``counting`` (task 7): "how many objects is john carrying ?" -> none, one, two or three.
    Sequence classification over the whole vocabulary (output_size = vocabulary size, 42 words): inputs the flat
    story + query one-hot [B, T, V], targets the answer word id [B], metric accuracy. Each example also keeps the
    ``story`` sentences, the ``query`` and the ``supporting`` sentence indices separately (:class:`QAExample`), for
    memory networks; with ``structure: true`` batches also carry ``story`` [B, S, L] (sentence s of row b, word
    ids, ``STRUCTURE_PAD`` beyond its words and beyond the story's sentences) and ``query`` [B, L_q] (padded
    likewise). ``task.baseline`` is the test loss of the training answer prior.
    """

    PEOPLE = ("mary", "john", "daniel", "sandra")
    PLACES = ("bathroom", "hallway", "garden", "office", "kitchen", "bedroom")
    OBJECTS = ("football", "apple", "milk")
    MOVES = ("moved to the", "went to the", "journeyed to the", "travelled to the", "went back to the")
    TAKES = ("picked up the", "got the", "grabbed the", "took the")
    DROPS = ("dropped the", "discarded the", "put down the", "left the")
    COUNTS = ("none", "one", "two", "three")
    QUESTIONS = ("single", "two", "counting")
    QUERY_WORDS = "where is how many objects carrying . ?"
    structure_keys = ("story", "query")  # story_structure's

    def __init__(
        self,
        question_types: list[str] | tuple[str, ...] = QUESTIONS,
        max_sentences: int = 10,
        structure: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.structure = bool(structure)
        question_types = tuple(question_types)
        if not question_types:
            raise ConfigError("question_types", f"needs at least one of {', '.join(self.QUESTIONS)}")
        for question in question_types:
            require_choice("question_types", question, self.QUESTIONS)
        if isinstance(max_sentences, bool) or not isinstance(max_sentences, int) or max_sentences < 2:
            raise ConfigError("max_sentences", f"must be an integer >= 2, got {max_sentences!r}")
        self.question_types = question_types
        self.max_sentences = max_sentences
        phrases = (*self.PEOPLE, *self.PLACES, *self.OBJECTS, *self.MOVES, *self.TAKES, *self.DROPS, *self.COUNTS)
        words = {word for phrase in (*phrases, self.QUERY_WORDS) for word in phrase.split()}
        self.vocabulary = sorted(words)
        self.index = {word: i for i, word in enumerate(self.vocabulary)}
        self.input_size = self.output_size = len(self.vocabulary)
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc")

    def batch_structure(self):
        return story_structure if self.structure else None

    def encode(self, text: str) -> list[int]:
        return [self.index[word] for word in text.split()]

    def sample(self, rng: random.Random):
        question = rng.choice(self.question_types)
        while True:  # redraw the rare story that leaves nothing to ask
            drawn = self.story(rng, question, rng.randint(2, self.max_sentences))
            if drawn is not None:
                break
        sentences, query, answer, supporting = drawn
        story = [self.encode(sentence + " .") for sentence in sentences]
        query_ids = self.encode(query + " ?")
        flat = tuple(word for sentence in [*story, query_ids] for word in sentence)

        def make() -> QAExample:
            return QAExample(
                tokens=torch.tensor(flat),
                targets=torch.tensor(self.index[answer]),
                vocab_size=len(self.vocabulary),
                story=[torch.tensor(sentence) for sentence in story],
                query=torch.tensor(query_ids),
                supporting=torch.tensor(sorted(supporting), dtype=torch.long),
                question=question,
            )

        return flat, make

    def story(self, rng: random.Random, question: str, length: int):
        """(sentences, query, answer, supporting indices) of a simulated story, or None if nothing can be asked."""
        place: dict[str, str] = {}  # person -> current place
        moved: dict[str, int] = {}  # person -> index of the last move
        holder: dict[str, str] = {}  # object -> person holding it
        lying: dict[str, str] = {}  # object -> place it was dropped
        facts: dict[str, list[int]] = {}  # object -> sentences locating it
        handled: dict[str, list[int]] = {}  # person -> their pick-up / drop sentences
        sentences: list[str] = []
        for step in range(length):
            person = rng.choice(self.PEOPLE)
            carried = [o for o in self.OBJECTS if holder.get(o) == person]
            free = [o for o in self.OBJECTS if o not in holder and lying.get(o, place.get(person)) == place.get(person)]
            actions = ["move"]
            if question != "single":
                actions += ["take"] * bool(free and person in place) + ["drop"] * bool(carried)
            action = rng.choice(actions)
            if action == "move":
                place[person] = rng.choice([p for p in self.PLACES if p != place.get(person)])
                moved[person] = step
                sentences.append(f"{person} {rng.choice(self.MOVES)} {place[person]}")
                for thing in carried:
                    facts[thing] = [facts[thing][0], step]
            elif action == "take":
                thing = rng.choice(free)
                holder[thing] = person
                lying.pop(thing, None)
                facts[thing] = [step, moved[person]]
                handled.setdefault(person, []).append(step)
                sentences.append(f"{person} {rng.choice(self.TAKES)} {thing}")
            else:
                thing = rng.choice(carried)
                del holder[thing]
                lying[thing] = place[person]
                facts[thing] = [moved[person], step]
                handled.setdefault(person, []).append(step)
                sentences.append(f"{person} {rng.choice(self.DROPS)} {thing}")
        if question == "single":
            if not moved:
                return None
            person = rng.choice(sorted(moved))
            return sentences, f"where is {person}", place[person], [moved[person]]
        if question == "two":
            if not facts:
                return None
            thing = rng.choice(sorted(facts))
            where = place[holder[thing]] if thing in holder else lying[thing]
            return sentences, f"where is the {thing}", where, facts[thing]
        mentioned = sorted({sentence.split()[0] for sentence in sentences})
        person = rng.choice(mentioned)
        count = sum(holder.get(o) == person for o in self.OBJECTS)
        return sentences, f"how many objects is {person} carrying", self.COUNTS[count], handled.get(person, [])

    def after_build(self, splits: dict[str, list[QAExample]]) -> None:
        answers = {name: [int(example.targets) for example in split] for name, split in splits.items()}
        baseline = entropy_baseline(answers["train"], answers["test"])
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc", baseline=baseline)

    def describe(self) -> str:
        questions = Counter(example.question for example in self.splits["train"])
        answers = Counter(self.vocabulary[int(example.targets)] for example in self.splits["train"])
        return (
            f"{super().describe()}; vocabulary {len(self.vocabulary)} words; train questions {dict(questions)}; "
            f"train answers {dict(answers.most_common())}"
        )


# ----------------------------------------------------------------------------------------------------------------
# Arithmetic expression trees


@dataclass(frozen=True, eq=False)
class TreeExample(TokenExample):
    """An expression; ``targets`` is its value mod 10 (scalar long).

    nodes:     [N] long symbol ids of the tree's nodes in pre-order (digits are leaves, operators have 2 children)
    parents:   [N] long index (into ``nodes``) of each node's parent, -1 for the root
    positions: [N] long index into ``tokens`` of each node's symbol (the identity for prefix notation)
    value:     the expression's integer value
    """

    nodes: torch.Tensor
    parents: torch.Tensor
    positions: torch.Tensor
    value: int


class TreesDataModule(GeneratedDataModule):
    """Arithmetic expression trees over the digits 0-9 with +, - and * (a tree-structured reasoning task).

    The root is an operator; below it each node is a digit with probability ``leaf_prob``, else an operator with
    two subtrees, and nodes at depth ``max_depth`` are digits (so 1 <= operator depth <= max_depth). The sequence
    is the tree in ``prefix`` notation ("* + 3 4 2") or fully parenthesised ``infix`` ("( 3 + 4 ) * 2").
    Symbols 0-9 + - * ( ) (ids 0-14), inputs one-hot [B, T, 15]. Target: the value mod 10 (Python's floor
    modulo, so 0-9 also for negative values), class [B], metric accuracy; classification rather than regression
    of the raw value, whose range grows as 9^(2^max_depth). ``task.baseline`` is the test loss of the
    training label prior (0 and the even digits are the most frequent, from the products). Each example keeps
    the tree (:class:`TreeExample`: nodes, parents, positions) for tree-structured models; with ``structure: true``
    batches also carry ``parents`` [B, N] (pre-order, -1 for the root) and ``positions`` [B, N] (each node's step in
    ``inputs``), both ``STRUCTURE_PAD`` past a tree's nodes (so a node is real where ``positions >= 0``).
    """

    SYMBOLS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "-", "*", "(", ")")
    OPERATORS = ("+", "-", "*")
    NOTATIONS = ("prefix", "infix")
    structure_keys = ("parents", "positions")  # tree_structure's

    def __init__(
        self, max_depth: int = 3, leaf_prob: float = 0.5, notation: str = "prefix", structure: bool = False, **kwargs
    ):
        super().__init__(**kwargs)
        self.structure = bool(structure)
        require_positive(max_depth=max_depth)
        if not 0.0 <= leaf_prob <= 1.0:
            raise ConfigError("leaf_prob", f"must be in [0, 1], got {leaf_prob!r}")
        require_choice("notation", notation, self.NOTATIONS)
        self.max_depth = max_depth
        self.leaf_prob = leaf_prob
        self.notation = notation
        self.input_size = len(self.SYMBOLS)
        self.output_size = 10
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc")

    def batch_structure(self):
        return tree_structure if self.structure else None

    def sample(self, rng: random.Random):
        nodes: list[str] = []
        parents: list[int] = []

        def grow(depth: int, parent: int) -> None:
            index = len(nodes)
            parents.append(parent)
            if depth == self.max_depth or (depth > 0 and rng.random() < self.leaf_prob):
                nodes.append(str(rng.randrange(10)))
                return
            nodes.append(rng.choice(self.OPERATORS))
            grow(depth + 1, index)
            grow(depth + 1, index)

        grow(0, -1)
        value, _ = evaluate_prefix(nodes, 0)
        tokens, positions = (nodes, list(range(len(nodes)))) if self.notation == "prefix" else to_infix(nodes)
        ids = tuple(self.SYMBOLS.index(s) for s in tokens)

        def make() -> TreeExample:
            return TreeExample(
                tokens=torch.tensor(ids),
                targets=torch.tensor(value % 10),
                vocab_size=len(self.SYMBOLS),
                nodes=torch.tensor([self.SYMBOLS.index(s) for s in nodes]),
                parents=torch.tensor(parents),
                positions=torch.tensor(positions),
                value=value,
            )

        return ids, make

    def after_build(self, splits: dict[str, list[TreeExample]]) -> None:
        labels = {name: [int(example.targets) for example in split] for name, split in splits.items()}
        baseline = entropy_baseline(labels["train"], labels["test"])
        self.task = TaskSpec(kind="classification", per_step=False, metric="acc", baseline=baseline)

    def describe(self) -> str:
        labels = Counter(int(example.targets) for example in self.splits["train"])
        return (
            f"{super().describe()}; {self.notation} notation, max_depth {self.max_depth}; "
            f"train labels {dict(sorted(labels.items()))}"
        )


def story_structure(examples: list[QAExample]) -> dict[str, torch.Tensor]:
    """``story`` [B, S, L] and ``query`` [B, L_q] word ids of a batch, padded with ``STRUCTURE_PAD``."""
    longest = max(len(sentence) for example in examples for sentence in example.story)
    stories = [pad_structure(example.story, (longest,)) for example in examples]  # [S_b, L] each
    return {"story": pad_structure(stories), "query": pad_structure([example.query for example in examples])}


def tree_structure(examples: list[TreeExample]) -> dict[str, torch.Tensor]:
    """``parents`` and ``positions`` [B, N] of a batch of trees, padded with ``STRUCTURE_PAD``."""
    return {
        "parents": pad_structure([example.parents for example in examples]),
        "positions": pad_structure([example.positions for example in examples]),
    }


def evaluate_prefix(nodes: list[str], index: int) -> tuple[int, int]:
    """The value of the subtree whose pre-order list starts at ``index``, and the index just after it."""
    symbol = nodes[index]
    if symbol.isdigit():
        return int(symbol), index + 1
    left, after = evaluate_prefix(nodes, index + 1)
    right, after = evaluate_prefix(nodes, after)
    value = left + right if symbol == "+" else left - right if symbol == "-" else left * right
    return value, after


def to_infix(nodes: list[str]) -> tuple[list[str], list[int]]:
    """Fully parenthesised infix tokens of a pre-order tree (the root unbracketed) and each node's token index."""
    tokens: list[str] = []
    positions = [0] * len(nodes)

    def write(index: int, bracket: bool) -> int:
        if nodes[index].isdigit():
            positions[index] = len(tokens)
            tokens.append(nodes[index])
            return index + 1
        tokens.extend(["("] if bracket else [])
        after = write(index + 1, True)
        positions[index] = len(tokens)
        tokens.append(nodes[index])
        after = write(after, True)
        tokens.extend([")"] if bracket else [])
        return after

    write(0, False)
    return tokens, positions
