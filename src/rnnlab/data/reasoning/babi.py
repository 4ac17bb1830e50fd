"""bAbI-style question answering: simulated stories, their questions, and the story / query batch structure."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import torch

from rnnlab.data.base import TaskSpec
from rnnlab.data.reasoning.base import GeneratedDataModule, TokenExample, entropy_baseline, pad_structure
from rnnlab.errors import ConfigError, require_choice


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


def story_structure(examples: list[QAExample]) -> dict[str, torch.Tensor]:
    """``story`` [B, S, L] and ``query`` [B, L_q] word ids of a batch, padded with ``STRUCTURE_PAD``."""
    longest = max(len(sentence) for example in examples for sentence in example.story)
    stories = [pad_structure(example.story, (longest,)) for example in examples]  # [S_b, L] each
    return {"story": pad_structure(stories), "query": pad_structure([example.query for example in examples])}
