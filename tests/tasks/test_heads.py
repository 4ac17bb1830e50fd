"""Output layers for large vocabularies (rnnlab.tasks.heads): normalisation, hand-computed log-probabilities and
losses, frequency classes and Huffman codes on hand examples, the task wiring, and a short PTB run per head."""

from __future__ import annotations

import math
import warnings
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from conftest import train_in_process
from rnnlab.conf_dir import CONF_DIR
from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.data.text import PTBWordDataModule
from rnnlab.errors import ConfigError
from rnnlab.models.gated import LSTM
from rnnlab.tasks.heads import (
    HEAD_CLASSES,
    NCE,
    ClassSoftmax,
    HierarchicalSoftmax,
    SampledSoftmax,
    code_lengths,
    frequency_classes,
    huffman_tree,
)
from rnnlab.tasks.sequence import SequenceTask
from rnnlab.wiring import make

LM_SPEC = TaskSpec(kind="classification", per_step=True, metric="ppl", input_vocab=50, stateful=False)


def zipf_counts(vocab_size: int) -> torch.Tensor:
    return (1000.0 / torch.arange(1, vocab_size + 1)).long()


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ------------------------------------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    "name, options",
    [
        ("full", {}),
        ("class_softmax", {}),
        ("class_softmax", {"classes": 4}),
        ("hierarchical_softmax", {"tree": "huffman"}),
        ("hierarchical_softmax", {"tree": "balanced"}),
        ("nce", {}),
        ("sampled", {}),
    ],
)
def test_every_head_is_normalised_and_its_training_nll_matches_the_full_table(name, options):
    torch.manual_seed(0)
    counts = zipf_counts(57)
    counts[40:] = 0  # unseen words still get probability
    head = HEAD_CLASSES[name](6, counts, **options)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_(0, 1.0)  # scores far from 0, so normalisation is really tested
    h = torch.randn(9, 6)
    log_probs = head.log_probs(h)
    assert log_probs.shape == (9, 57)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(9), atol=1e-5)
    targets = torch.randint(0, 57, (9,))
    expected = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    assert torch.allclose(head.nll(h, targets), expected, atol=1e-5)
    assert torch.allclose(head.log_probs(h[None, :3]), log_probs[None, :3], atol=1e-6)  # any leading dims


# ------------------------------------------------------------------------------------------------ class softmax


def test_frequency_classes_on_hand_made_counts():
    # by decreasing count: w0 .30 (cumulative mass .30), w1 .25 (.55 > 1/3: class 0 closes), w2 .20 (.75 > 2/3:
    # class 1 closes), then w3, w4 in the last class
    assert frequency_classes(torch.tensor([30, 25, 20, 15, 10]), 3).tolist() == [0, 0, 1, 2, 2]
    # order by count, not id: w2 (.5) closes class 0 alone, w1 (.7) closes class 1, the rest share class 2
    assert frequency_classes(torch.tensor([10, 20, 50, 5, 10, 5]), 3).tolist() == [2, 1, 0, 2, 2, 2]
    # words heavier than 1/C close one class each: only 4 of 10 classes are used
    assert frequency_classes(torch.tensor([97, 1, 1, 1]), 10).tolist() == [0, 1, 2, 3]


def test_class_softmax_defaults_to_sqrt_vocabulary_classes():
    head = ClassSoftmax(4, torch.ones(100, dtype=torch.long))
    assert head.classes == 10
    # equal counts: a class closes once its mass passes 1/10 strictly, so the first class takes an 11th word
    assert torch.bincount(head.word_class).tolist() == [11] + [10] * 8 + [9]


def test_class_softmax_log_prob_by_hand():
    counts = torch.tensor([60, 30, 6, 4])  # C=2: w0 alone closes class 0; w1, w2, w3 share class 1
    head = ClassSoftmax(2, counts, classes=2)
    assert head.word_class.tolist() == [0, 1, 1, 1]
    with torch.no_grad():
        head.class_layer.weight.copy_(torch.tensor([[0.5, -1.0], [1.5, 0.25]]))
        head.class_layer.bias.copy_(torch.tensor([0.1, -0.2]))
        head.word_layer.weight.copy_(torch.tensor([[2.0, 1.0], [0.3, -0.7], [-1.2, 0.4], [0.8, 0.9]]))
        head.word_layer.bias.copy_(torch.tensor([0.0, 0.5, -0.5, 0.2]))
    h = [0.7, -0.4]
    class_scores = [0.5 * 0.7 - 1.0 * -0.4 + 0.1, 1.5 * 0.7 + 0.25 * -0.4 - 0.2]
    word_scores = {1: 0.3 * 0.7 - 0.7 * -0.4 + 0.5, 2: -1.2 * 0.7 + 0.4 * -0.4 - 0.5, 3: 0.8 * 0.7 + 0.9 * -0.4 + 0.2}
    p_class1 = math.exp(class_scores[1]) / sum(math.exp(s) for s in class_scores)
    p_word2 = math.exp(word_scores[2]) / sum(math.exp(s) for s in word_scores.values())
    expected = math.log(p_class1 * p_word2)
    h = torch.tensor([h])
    assert head.log_probs(h)[0, 2].item() == pytest.approx(expected, abs=1e-5)
    assert -head.nll(h, torch.tensor([2])).item() == pytest.approx(expected, abs=1e-5)
    p_class0 = 1 - p_class1  # w0 is alone in its class: P(w0|h) = P(class 0|h)
    assert head.log_probs(h)[0, 0].item() == pytest.approx(math.log(p_class0), abs=1e-5)


# ------------------------------------------------------------------------------------------------ hierarchical


def test_huffman_code_lengths_on_the_textbook_example():
    # Cormen et al., Introduction to Algorithms, section 16.3: a..f with frequencies 45 13 12 16 9 5 (thousands)
    parent, sign = huffman_tree(torch.tensor([45, 13, 12, 16, 9, 5]))
    assert code_lengths(parent, 6) == [1, 3, 3, 3, 4, 4]
    assert int(parent[-1]) == 10 and int(sign[-1]) == 0  # the root is the last node, its own parent
    assert sorted(sign[:-1].tolist()) == [-1] * 5 + [1] * 5  # every inner node has a left and a right branch


@pytest.mark.parametrize("vocab_size, depths", [(8, {3}), (6, {2, 3}), (1000, {9, 10})])
def test_balanced_tree_depths(vocab_size, depths):
    head = HierarchicalSoftmax(3, zipf_counts(vocab_size), tree="balanced")
    lengths = code_lengths(head.parent, vocab_size)
    assert set(lengths) == depths
    assert sum(2.0 ** -length for length in lengths) == pytest.approx(1.0)  # Kraft: a full binary tree


def test_hierarchical_softmax_log_prob_by_hand():
    # Huffman over (5, 1, 1): w1 (left) and w2 (right) merge into inner node 3; then node 3 (left, weight 2) and
    # w0 (right) into the root 4. Inner node n has weights row n - V: node 3 -> row 0, root -> row 1.
    head = HierarchicalSoftmax(2, torch.tensor([5, 1, 1]))
    with torch.no_grad():
        head.node_layer.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.3]]))
        head.node_layer.bias.copy_(torch.tensor([0.2, -0.1]))
    h = torch.tensor([[0.4, 0.9]])
    inner = 1.0 * 0.4 - 2.0 * 0.9 + 0.2
    root = 0.5 * 0.4 + 0.3 * 0.9 - 0.1
    expected = [
        math.log(sigmoid(root)),
        math.log(sigmoid(-root) * sigmoid(-inner)),
        math.log(sigmoid(-root) * sigmoid(inner)),
    ]
    assert head.log_probs(h)[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert (-head.nll(h.expand(3, 2), torch.arange(3))).tolist() == pytest.approx(expected, abs=1e-6)


def test_huffman_tree_is_optimal_for_zipf_counts():
    counts = zipf_counts(1000)
    lengths = torch.tensor(code_lengths(huffman_tree(counts)[0], 1000), dtype=torch.double)
    p = counts.double() / counts.sum()
    entropy_bits = float(-(p * p.log2()).sum())
    mean_length = float((p * lengths).sum())
    assert entropy_bits <= mean_length < entropy_bits + 1  # Shannon's bounds on an optimal prefix code
    assert mean_length < 9.5 < math.log2(1000)  # shorter paths on average than a balanced tree's 9-10
    more_frequent = counts[:, None] > counts[None, :]
    assert bool((lengths[:, None] <= lengths[None, :])[more_frequent].all())  # a more frequent word: no longer path


def test_heads_build_on_add_one_counts_so_unseen_words_keep_a_share():
    # a training subset that missed four words: raw counts would put them at depth 5, below the seen rare words
    counts = torch.tensor([1000, 3, 3, 0, 0, 0, 0])
    assert code_lengths(huffman_tree(counts)[0], 7) == [1, 3, 2, 5, 5, 5, 5]
    assert code_lengths(HierarchicalSoftmax(2, counts).parent, 7) == [1, 3, 3, 4, 4, 4, 4]  # Huffman of counts + 1
    # classes: counts + 1 = (31, 31, 1 x 38) of 100; w0 closes class 0 (.31), w1 class 1 (.62), then 14 unseen words
    # reach .76 > 3/4 and close class 2; raw counts would leave one unseen word in class 2 and 37 in class 3
    counts = torch.tensor([30, 30] + [0] * 38)
    assert torch.bincount(ClassSoftmax(2, counts, classes=4).word_class).tolist() == [1, 1, 14, 24]
    assert torch.bincount(frequency_classes(counts, 4)).tolist() == [1, 1, 1, 37]


# ------------------------------------------------------------------------------------------------ nce, sampled


def scored_head(head_class, counts, **kwargs):
    torch.manual_seed(1)
    head = head_class(3, counts, samples=4, **kwargs)
    with torch.no_grad():
        head.layer.weight.normal_()
        head.layer.bias.normal_()
    return head


def scores_by_hand(head, h, word):
    return sum(head.layer.weight[word, i].item() * h[i].item() for i in range(3)) + head.layer.bias[word].item()


@pytest.mark.parametrize("learn_log_z", [False, True])
def test_nce_loss_is_the_hand_formula_for_fixed_noise(learn_log_z):
    counts = torch.tensor([9, 4, 2, 0, 1, 3])
    head = scored_head(NCE, counts, learn_log_z=learn_log_z)
    log_z = 0.0
    if learn_log_z:
        with torch.no_grad():
            head.log_z.fill_(0.3)
        log_z = 0.3
    q = [(c + 1) / (sum(counts.tolist()) + 6) for c in counts.tolist()]  # add-one smoothed unigram
    h, targets, noise = torch.randn(2, 3), torch.tensor([0, 3]), torch.tensor([1, 1, 4, 0])
    k = 4
    total = 0.0
    for row, target in zip(h, targets.tolist()):
        delta = scores_by_hand(head, row, target) - log_z - math.log(k * q[target])
        total -= math.log(sigmoid(delta))
        for x in noise.tolist():
            total -= math.log(sigmoid(-(scores_by_hand(head, row, x) - log_z - math.log(k * q[x]))))
    assert head.loss(h, targets, noise).item() == pytest.approx(total / 2, rel=1e-5)
    assert isinstance(head.log_z, torch.nn.Parameter) == learn_log_z


def test_sampled_softmax_loss_is_the_hand_formula_for_fixed_noise():
    counts = torch.tensor([9, 4, 2, 0, 1, 3])
    head = scored_head(SampledSoftmax, counts)
    q = [(c + 1) / (sum(counts.tolist()) + 6) for c in counts.tolist()]
    h, targets, noise = torch.randn(2, 3), torch.tensor([0, 3]), torch.tensor([1, 0, 4, 4])
    total = 0.0
    for row, target in zip(h, targets.tolist()):
        candidates = [target] + [x for x in noise.tolist() if x != target]  # a noise word equal to the target: out
        corrected = [scores_by_hand(head, row, w) - math.log(q[w]) for w in candidates]
        total -= corrected[0] - math.log(sum(math.exp(s) for s in corrected))
    assert head.loss(h, targets, noise).item() == pytest.approx(total / 2, rel=1e-5)


@pytest.mark.parametrize("head_class", [NCE, SampledSoftmax])
def test_sampled_heads_score_exactly_with_the_full_softmax_of_their_scores(head_class):
    head = scored_head(head_class, torch.tensor([9, 4, 2, 0, 1, 3]))
    h = torch.randn(5, 3)
    scores = h @ head.layer.weight.T + head.layer.bias
    assert torch.allclose(head.log_probs(h), scores.log_softmax(-1), atol=1e-6)
    assert not head.exact_loss


def test_sampled_heads_start_at_the_unigram_and_draw_noise_from_it():
    counts = torch.tensor([300, 100, 0, 599])
    head = NCE(2, counts, samples=20000)
    q = (counts + 1).double() / 1003
    assert torch.allclose(head.layer.bias.double(), q.log(), atol=1e-6)
    torch.manual_seed(0)
    frequencies = torch.bincount(head.draw_noise(), minlength=4).double() / 20000
    assert torch.allclose(frequencies, q, atol=0.015)


# ------------------------------------------------------------------------------------------------ task wiring


def lm_task(head: str, **options) -> tuple[SequenceTask, dict]:
    torch.manual_seed(0)
    model = LSTM(input_size=8, output_size=6, hidden_size=12)
    output_head = None if head == "full" else HEAD_CLASSES[head](6, zipf_counts(50), **options)
    task = SequenceTask(model, LM_SPEC, partial(torch.optim.Adam, lr=0.01), embedding_dim=8, head=output_head)
    targets = torch.randint(0, 50, (3, 7))
    targets[2, 5:] = IGNORE_INDEX
    batch = {"inputs": torch.randint(0, 50, (3, 7)), "lengths": torch.tensor([7, 7, 5]), "targets": targets}
    return task, batch


@pytest.mark.parametrize("head", ["class_softmax", "hierarchical_softmax", "nce", "sampled"])
def test_task_trains_the_heads_loss_and_evaluates_the_exact_nll(head):
    task, batch = lm_task(head)
    assert task.model.output_size == 6 and task.output_head.vocab_size == 50
    assert task.accuracy["val"].num_classes == 50
    valid = batch["targets"] != IGNORE_INDEX
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        task.eval()
        with torch.no_grad():
            features = task.run_model(batch, "val")
            exact = F.nll_loss(task.output_head.log_probs(features[valid]), batch["targets"][valid])
            assert task.shared_step(batch, "val").item() == pytest.approx(exact.item(), rel=1e-5)
        task.train()
        torch.manual_seed(3)
        loss = task.shared_step(batch, "train")
    torch.manual_seed(3)  # the same noise words
    expected = task.output_head.loss(features[valid], batch["targets"][valid])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in [*task.output_head.parameters(), *task.model.parameters()])


def test_full_head_keeps_the_models_readout():
    task, _ = lm_task("full")
    assert task.output_head is None


@pytest.mark.parametrize(
    "option,settings,message",
    [
        ("class_softmax", {"classes": 51}, "^head.classes: must be null or an integer in \\[1, 50\\], got 51$"),
        ("hierarchical_softmax", {"tree": "random"}, "^head.tree: got 'random'; allowed: huffman, balanced$"),
        ("nce", {"samples": 0}, "^head.samples: must be a positive integer, got 0$"),
        ("nce", {"learn_log_z": "yes"}, "^head.learn_log_z: must be true or false, got 'yes'$"),
        ("sampled", {"features": 0}, "^head.features: must be a positive integer, got 0$"),
    ],
)
def test_bad_head_settings_raise_config_errors_naming_the_key(option, settings, message):
    """The shipped conf/head file with one setting changed, built as the app builds it (``rnnlab.wiring.make``)."""
    head = OmegaConf.merge(OmegaConf.load(CONF_DIR / "head" / f"{option}.yaml"), settings)
    config = OmegaConf.create({"task": {"embedding_dim": 6}, "head": head})
    with pytest.raises(ConfigError, match=message):
        make(config, "head", counts=zipf_counts(50))


def test_the_task_refuses_a_head_its_data_or_model_cannot_use():
    model = LSTM(input_size=3, output_size=4, hidden_size=5)
    regression = TaskSpec(kind="regression", per_step=True, metric="mse")
    with pytest.raises(ConfigError, match="^head: nce needs per-step classification data"):
        SequenceTask(model, regression, partial(torch.optim.Adam), head=NCE(4, zipf_counts(4)))
    with pytest.raises(ConfigError, match="^head: class_softmax reads 5 features; the model writes 4$"):
        SequenceTask(model, LM_SPEC, partial(torch.optim.Adam), embedding_dim=3, head=ClassSoftmax(5, zipf_counts(50)))


def test_train_reports_a_head_on_data_without_unigram_counts(tmp_path):
    record = train_in_process(tmp_path, "data=adding", "head=class_softmax", "debug=fast")
    assert record["status"] == "failed"
    assert record["error"].startswith("head: a head other than full needs the training split's unigram counts")


def test_train_builds_the_head_of_the_group_with_its_features(tmp_path, shared_data):
    """``head=nce head.features=16``: the model writes 16 features, and the head (16 x V weights and V biases) is
    counted among the run's parameters."""
    record = train_in_process(
        tmp_path, "data=ptb_word", f"data.root={shared_data / 'ptb'}", "data.max_train_tokens=5000",
        "data.cache_dir=null", "head=nce", "head.features=16", "head.samples=8", "model=elman", "model.hidden_size=8",
        "task.embedding_dim=8", "debug=fast",
    )
    assert record["status"] == "completed", record["error"]
    assert record["config"]["head"]["features"] == 16 and "head" not in record["config"]["task"]
    vocab = 10_000
    elman = 8 * 8 + 8 * 8 + 2 * 8 + 8 * 16 + 16  # input, recurrent, two biases (torch's RNN), readout to 16 features
    assert record["params"] == elman + 16 * vocab + vocab


# ------------------------------------------------------------------------------------------------ learning on PTB

TRAIN_TOKENS = 150_000
TEST_BATCHES = 8


def unigram_perplexity_of_test_batches(root: str) -> float:
    """Perplexity of the add-one smoothed training unigram on exactly the targets the run's test batches score."""
    data = PTBWordDataModule(root=root, max_train_tokens=TRAIN_TOKENS)
    data.setup()
    log_q = (data.unigram_counts().double() + 1).log() - (data.unigram_counts().double() + 1).sum().log()
    targets = torch.cat([batch["targets"].reshape(-1) for _, batch in zip(range(TEST_BATCHES), data.test_dataloader())])
    return math.exp(-float(log_q[targets].mean()))


@pytest.mark.slow
@pytest.mark.parametrize("head", ["class_softmax", "hierarchical_softmax", "nce", "sampled"])
def test_short_ptb_run_beats_the_unigram(head, shared_data, tmp_path, one_thread):
    """One epoch over 150k training words (214 steps), GRU 128; exact test perplexity well below the unigram's."""
    root = str(shared_data / "ptb")
    record = train_in_process(
        tmp_path, "data=ptb_word", f"data.root={root}", f"data.max_train_tokens={TRAIN_TOKENS}",
        "data.cache_dir=null", "model=gru", "model.hidden_size=128", "task.embedding_dim=64", f"head={head}",
        "optimizer.lr=0.01", "trainer.max_epochs=1", "+trainer.limit_val_batches=2",
        f"+trainer.limit_test_batches={TEST_BATCHES}",
    )
    assert record["status"] == "completed", record["error"]
    unigram = unigram_perplexity_of_test_batches(root)
    assert 600 < unigram < 800  # what the check is against: 150k training words, add-one smoothing
    assert record["metrics"]["test/ppl"] < 0.8 * unigram
    assert record["metrics"]["test/ppl"] == pytest.approx(math.exp(record["metrics"]["test/loss"]), rel=1e-4)
