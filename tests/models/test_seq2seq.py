"""Seq2Seq: one attention step and two decoder steps by hand, the plain context vector, state bridging, teacher
forcing / scheduled feeding revealed by a decoder that echoes its input, and greedy vs beam search (beam 1 is greedy;
a wide beam is exact; a myopic hand-built decoder where beam search beats greedy)."""

from __future__ import annotations

import itertools
import math
from functools import partial

import pytest
import torch

from conftest import compose_config
from rnnlab.errors import ConfigError
from rnnlab.models.elman import Elman
from rnnlab.models.gated import GRU, LSTM
from rnnlab.models.seq2seq import Seq2Seq
from rnnlab.wiring import build_model

INPUT, CLASSES, HIDDEN = 5, 4, 6


def model(encoder=LSTM, decoder=LSTM, **kwargs) -> Seq2Seq:
    torch.manual_seed(0)
    kwargs = {"hidden_size": HIDDEN, "embedding_dim": 3, **kwargs}
    return Seq2Seq(INPUT, CLASSES, partial(encoder), partial(decoder), **kwargs).double().eval()


def source(batch=3, steps=7):
    torch.manual_seed(1)
    return torch.randn(batch, steps, INPUT, dtype=torch.float64), torch.tensor([7, 4, 2][:batch])


def test_attention_step_by_hand():
    net = model(attention="bahdanau", attention_size=5)
    x, lengths = source()
    memory = net.encode(x, lengths)
    query = torch.randn(3, HIDDEN, dtype=torch.float64)
    context, weights = net.attention(query, memory.keys, memory.annotations, memory.mask)
    W, U, v = net.attention.query.weight, net.attention.key.weight, net.attention.score.weight[0]
    for b, length in enumerate(lengths.tolist()):
        h = memory.annotations[b, :length]
        scores = torch.stack([v @ torch.tanh(W @ query[b] + U @ h[j]) for j in range(length)])  # e_bj
        alpha = torch.exp(scores) / torch.exp(scores).sum()
        torch.testing.assert_close(weights[b, :length], alpha)
        assert (weights[b, length:] == 0).all()  # padded source steps get no weight
        torch.testing.assert_close(context[b], (alpha[:, None] * h).sum(0))


def elman_step(net, x, h):
    """One step of the single-layer Elman decoder (eq. 1-2) and its readout, by hand from its weights."""
    rnn = net.decoder.rnn
    h = torch.tanh(rnn.weight_ih_l0 @ x + rnn.bias_ih_l0 + rnn.weight_hh_l0 @ h + rnn.bias_hh_l0)
    return net.decoder.readout(h), h


@pytest.mark.parametrize("attention", ["bahdanau", "none"])
def test_two_teacher_forced_decoder_steps_by_hand(attention):
    net = model(decoder=Elman, attention=attention)  # LSTM encoder, Elman decoder: states differ, decoder starts at 0
    assert not net.bridged
    x, lengths = source(batch=1, steps=4)
    targets = torch.tensor([[2, 1]])
    with torch.no_grad():
        logits, _ = net(x, lengths[:1].clamp(max=4), targets=targets)
        h_all = net.encoder(x)[0][0]  # annotations of the 4 valid steps
    E, W_o = net.embedding.weight, net.output
    query, h = torch.zeros(HIDDEN, dtype=torch.float64), torch.zeros(HIDDEN, dtype=torch.float64)
    for i, previous in enumerate([net.start_token, 2]):  # start symbol, then the gold y_0
        if attention == "none":
            context = h_all[-1]  # the last annotation, the same for every step
        else:
            a = net.attention
            W, U, v = a.query.weight, a.key.weight, a.score.weight[0]
            scores = torch.stack([v @ torch.tanh(W @ query + U @ hj) for hj in h_all])
            context = (scores.softmax(0)[:, None] * h_all).sum(0)
        o, h = elman_step(net, torch.cat([E[previous], context]), h)
        expected = W_o.weight @ torch.cat([o, context, E[previous]]) + W_o.bias
        torch.testing.assert_close(logits[0, i], expected)
        query = o


@pytest.mark.parametrize("attention", ["bahdanau", "none"])
def test_teacher_forced_path_values_and_gradients_equal_step_by_step_decoding(attention):
    """Teacher forcing 1 embeds all gold tokens before the loop and applies the output layer after it; against the
    step-by-step loop (embedding, context, decoder step and output layer at every step), values and every gradient
    to 1e-5, on a ragged batch."""
    net = model(attention=attention).train()
    x, lengths = source()
    x.requires_grad_()
    targets = torch.tensor([[2, 1, 3, 0, 1], [1, 1, 2, 3, 0], [3, 2, -100, -100, -100]])  # -100: padding
    target_lengths = torch.tensor([5, 5, 2])
    logits, _ = net(x, lengths, targets=targets, target_lengths=target_lengths)
    memory = net.encode(x, lengths)
    previous, state = torch.full((3,), net.start_token), memory.decoder_state
    query = torch.zeros(3, HIDDEN, dtype=x.dtype)
    expected = []
    for i in range(targets.shape[1]):
        embedded = net.embedding(previous)
        if attention == "none":
            context = memory.context
        else:
            context, _ = net.attention(query, memory.keys, memory.annotations, memory.mask)
        output, state = net.decoder(torch.cat([embedded, context], dim=-1).unsqueeze(1), None, state)
        query = output.squeeze(1)
        step_logits = net.output(torch.cat([query, context, embedded], dim=-1))
        expected.append(torch.where((i < target_lengths)[:, None], step_logits, 0.0))
        previous = targets[:, i].clamp(min=0)
    expected = torch.stack(expected, dim=1)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    weights = torch.randn_like(logits)
    inputs = [x, *net.parameters()]
    grads = torch.autograd.grad((logits * weights).sum(), inputs, allow_unused=True)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs, allow_unused=True)
    for grad, expected_grad in zip(grads, expected_grads):
        if expected_grad is None:
            assert grad is None
        else:
            torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-5)


def test_bridge_only_between_matching_states():
    same = model(LSTM, LSTM)
    assert same.bridged
    x, lengths = source()
    memory = same.encode(x, lengths)
    _, (h, c) = same.encoder(x, lengths)
    torch.testing.assert_close(memory.decoder_state[0], h)
    torch.testing.assert_close(memory.decoder_state[1], c)
    assert not model(LSTM, GRU).bridged  # (h, c) against h
    assert model(LSTM, LSTM, bridge=False).encode(x, lengths).decoder_state is None
    both = model(LSTM, LSTM, bidirectional=True, num_layers=2)
    assert both.bridged
    _, (h, c) = both.encoder(x, lengths)  # [layers * 2, B, H], layer-major
    torch.testing.assert_close(both.encode(x, lengths).decoder_state[0], h.view(2, 2, 3, HIDDEN).sum(1))


def echo_decoder() -> Seq2Seq:
    """A decoder whose logits reveal its input token: logits_i = 10 * onehot(y_{i-1}) (+1 for class 0)."""
    net = Seq2Seq(INPUT, CLASSES, partial(LSTM), partial(GRU), hidden_size=HIDDEN, embedding_dim=CLASSES + 1)
    with torch.no_grad():
        net.embedding.weight.copy_(torch.eye(CLASSES + 1))
        net.output.weight.zero_()
        net.output.weight[:, 2 * HIDDEN : 2 * HIDDEN + CLASSES] = 10 * torch.eye(CLASSES)
        net.output.bias.zero_()
        net.output.bias[0] = 1.0  # the start symbol (and free running from it) yields class 0
    return net.eval()


def test_teacher_forcing_feeds_the_gold_tokens():
    net = echo_decoder()
    x = torch.randn(2, 3, INPUT)
    targets = torch.tensor([[1, 2, 3], [3, 3, 1]])
    with torch.no_grad():
        forced = net(x, targets=targets, teacher_forcing=1.0)[0].argmax(-1)
        free = net(x, targets=targets, teacher_forcing=0.0)[0].argmax(-1)
    assert forced[:, 1:].tolist() == targets[:, :-1].tolist()  # step i reveals gold y_{i-1}
    assert (forced[:, 0] == 0).all() and (free == 0).all()  # free running reads its own 0s


def test_scheduled_feeding_uses_gold_with_the_given_probability():
    net = echo_decoder()
    rows, steps, probability = 2000, 4, 0.3
    targets = torch.arange(1, steps + 1).repeat(rows, 1) % CLASSES  # 1, 2, 3, 0: no token repeats within a row
    with torch.no_grad():
        fed = net(torch.randn(rows, 2, INPUT), targets=targets, teacher_forcing=probability)[0].argmax(-1)
    gold = (fed[:, 1:] == targets[:, :-1]).float().mean().item()  # own tokens are earlier tokens, never the gold one
    assert abs(gold - probability) < 4 * math.sqrt(probability * (1 - probability) / (rows * (steps - 1)))


def test_beam_of_one_is_greedy_and_scores_are_log_probabilities():
    net = model(attention="bahdanau")
    x, lengths = source()
    target_lengths = torch.tensor([5, 3, 4])
    greedy = net.greedy(x, lengths, target_lengths)
    tokens, scores = net.beam_search(x, lengths, target_lengths, beam_size=1)
    valid = torch.arange(5)[None, :] < target_lengths[:, None]
    assert torch.equal(tokens[valid], greedy[valid])
    torch.testing.assert_close(scores, net.score(x, lengths, tokens, target_lengths))


def test_wide_beam_is_exact():
    net = model(attention="bahdanau")
    x, lengths = source(batch=2)
    steps = 3
    tokens, scores = net.beam_search(x, lengths, torch.tensor([steps, steps]), beam_size=CLASSES ** (steps - 1))
    every = torch.tensor(list(itertools.product(range(CLASSES), repeat=steps)))  # all 64 sequences
    for b in range(2):
        rows = every.shape[0]
        all_scores = net.score(x[b : b + 1].expand(rows, -1, -1), lengths[b : b + 1].expand(rows), every)
        torch.testing.assert_close(scores[b], all_scores.max())
        assert torch.equal(tokens[b], every[all_scores.argmax()])


def test_beam_search_beats_myopic_greedy():
    """A decoder that is a Markov chain over tokens, p(y_i | y_{i-1}): after the start symbol a (0.6) beats b (0.4),
    but after a every token is equally likely while after b token c has 0.97. Greedy takes a and scores
    0.6 * 1/3; a beam of 2 keeps b and finds b c at 0.4 * 0.97."""
    a, b, c, start = 0, 1, 2, 3
    transitions = torch.full((4, 3), 0.015)  # rows: previous token, columns: next token
    transitions[start] = torch.tensor([0.6, 0.4, 0.0])
    transitions[a] = 1 / 3
    transitions[b] = torch.tensor([0.015, 0.015, 0.97])
    net = Seq2Seq(INPUT, 3, partial(GRU), partial(GRU), hidden_size=HIDDEN, embedding_dim=4)
    with torch.no_grad():
        net.embedding.weight.copy_(torch.eye(4))
        net.output.weight.zero_()
        net.output.weight[:, 2 * HIDDEN :] = transitions.clamp(min=1e-9).log().T
        net.output.bias.zero_()
    x, two = torch.randn(1, 4, INPUT), torch.tensor([2])
    greedy = net.greedy(x, None, two)
    beam, score = net.beam_search(x, None, two, beam_size=2)
    assert greedy.tolist() == [[a, a]] and beam.tolist() == [[b, c]]
    torch.testing.assert_close(score.exp(), torch.tensor([0.4 * 0.97]))
    assert net.score(x, None, greedy).exp().item() == pytest.approx(0.6 / 3, rel=1e-5)


def test_outputs_past_each_target_length_are_zero_and_rows_are_independent():
    net = model()
    x, lengths = source()
    target_lengths = torch.tensor([2, 5, 3])
    with torch.no_grad():
        logits, _ = net(x, lengths, target_lengths=target_lengths)
        for b in range(3):
            alone, _ = net(x[b : b + 1, : lengths[b]], target_lengths=target_lengths[b : b + 1])
            torch.testing.assert_close(logits[b, : target_lengths[b]], alone[0])
            assert (logits[b, target_lengths[b] :] == 0).all()


def test_config_swaps_families_and_sizes_follow_the_top_level(tmp_path):
    overrides = ["model=seq2seq", "model.hidden_size=12", "model.encoder._target_=rnnlab.models.gated.GRU",
                 "+model@model.decoder=elman", "model.decoder.hidden_size=99"]
    cfg = compose_config(tmp_path, overrides)
    assert cfg.task._target_ == "rnnlab.tasks.seq2seq.Seq2SeqTask"  # model=seq2seq selects its task
    net = build_model(cfg.model, INPUT, CLASSES)
    assert isinstance(net.encoder, GRU) and isinstance(net.decoder, Elman)
    assert net.encoder.hidden_size == net.decoder.hidden_size == 12
    assert net.bridged  # GRU and Elman both carry one [layers, B, H] tensor


def test_param_budget_scales_encoder_and_decoder(tmp_path):
    cfg = compose_config(tmp_path, ["model=seq2seq", "model.param_budget=40000", "model.bidirectional=true"])
    net = build_model(cfg.model, INPUT, CLASSES)
    assert abs(sum(p.numel() for p in net.parameters()) - 40000) <= 0.05 * 40000
    assert net.encoder.hidden_size == net.decoder.hidden_size == net.hidden_size


def test_bad_settings_name_their_key():
    with pytest.raises(ConfigError, match="attention"):
        model(attention="luong")
    with pytest.raises(ConfigError, match="encoder.param_budget"):
        Seq2Seq(INPUT, CLASSES, partial(LSTM, param_budget=1000), partial(LSTM))
    with pytest.raises(ConfigError, match="decoder.variant"):
        Seq2Seq(INPUT, CLASSES, partial(LSTM), partial(LSTM, variant="nope"))
    with pytest.raises(ConfigError, match="beam_size"):
        model().beam_search(*source(), beam_size=0)
