"""Encoder-decoder (sequence-to-sequence) networks over any recurrent family, with or without additive attention.

Plain context vector (Cho et al. 2014; Sutskever et al. 2014; Goodfellow et al. 2016, section 10.4): the encoder reads
the source into a fixed context C that conditions every decoder step. Additive attention (Bahdanau, Cho & Bengio
2015, "Neural Machine Translation by Jointly Learning to Align and Translate", section 3.1 and appendix A.1.2): at
every decoder step a new context c_i is a soft-aligned average of all encoder annotations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.base import valid_step_mask

log = logging.getLogger(__name__)

ATTENTIONS = ("none", "bahdanau")
SIZE_KEYS = ("hidden_size", "num_layers", "bidirectional")  # set for encoder and decoder by the Seq2Seq itself


def map_state(fn: Callable[..., torch.Tensor], *states):
    """Apply ``fn`` to matching tensors of one or more states (a tensor, or tuples / lists of them)."""
    if isinstance(states[0], torch.Tensor):
        return fn(*states)
    return type(states[0])(map_state(fn, *parts) for parts in zip(*states))


def state_shapes(state) -> Any:
    """The nested structure of a state with each tensor replaced by its shape without the batch dimension (1)."""
    return map_state(lambda s: (s.dtype, s.shape[:1] + s.shape[2:]), state)


class BahdanauAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2015, eqs. 5-6 and appendix A.1.2).

        e_ij = v^T tanh(W s_{i-1} + U h_j)                   (alignment score of target step i and source step j)
        alpha_ij = exp(e_ij) / sum_k exp(e_ik)                (softmax over the valid source steps k)
        c_i = sum_j alpha_ij h_j                              (context)

    W: ``query`` [A, Q], U: ``key`` [A, K], v: ``score`` [1, A]; no biases, as in the paper. U h_j does not depend on
    i, so :meth:`project_keys` computes it once per source sequence, before the decoder loop.
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int):
        super().__init__()
        self.query = nn.Linear(query_size, attention_size, bias=False)
        self.key = nn.Linear(key_size, attention_size, bias=False)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def project_keys(self, annotations: torch.Tensor) -> torch.Tensor:
        """U h_j for every source step: annotations [B, S, K] -> [B, S, A]."""
        return self.key(annotations)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, annotations: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query s_{i-1} [B, Q], keys U h [B, S, A], annotations h [B, S, K], mask [B, S] (True: valid step).

        Returns the context c_i [B, K] and the weights alpha_i [B, S] (0 at padded steps).
        """
        scores = self.score((self.query(query).unsqueeze(1) + keys).tanh_()).squeeze(-1)  # [B, S]
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.bmm(weights.unsqueeze(1), annotations).squeeze(1), weights


@dataclass
class Memory:
    """What the decoder reads from the encoder, per row: annotations h [B, S, H], their projections U h [B, S, A]
    (attention) or None, the source mask [B, S], the fixed context [B, H] (no attention) or None, the decoder's
    initial state (bridged from the encoder, or None for the family's zero state) and the encoder's final state."""

    annotations: torch.Tensor
    keys: torch.Tensor | None
    mask: torch.Tensor
    context: torch.Tensor | None
    decoder_state: Any
    encoder_state: Any

    def repeat(self, times: int) -> "Memory":
        """Each row repeated ``times`` times in a row (row b becomes rows b*times .. b*times + times - 1)."""
        rows = lambda t: None if t is None else t.repeat_interleave(times, dim=0)  # noqa: E731
        state = self.decoder_state
        return replace(
            self,
            annotations=rows(self.annotations),
            keys=rows(self.keys),
            mask=rows(self.mask),
            context=rows(self.context),
            decoder_state=None if state is None else map_state(lambda s: s.repeat_interleave(times, dim=1), state),
        )


class Seq2Seq(nn.Module):
    """Encoder-decoder: an ``encoder`` network reads the source, a ``decoder`` network emits the target one token at a
    time, each any recurrent family of ``rnnlab.models`` (a model config with ``_partial_: true``).

    Encoder: h = encoder(x) [B, S, H], the annotations (the family's readout maps its last layer, both directions
    when ``bidirectional``, to H = ``hidden_size``). Decoder step i (Bahdanau et al. 2015, eq. 4 and appendix A.2.2,
    with a linear output layer in place of the maxout layer):

        c_i = attention(o_{i-1}, h)   (``attention: bahdanau``)  or  c_i = C = h_{L}   (``none``: the annotation of
                                                                                       the last valid source step)
        o_i, s_i = decoder([E y_{i-1}; c_i], s_{i-1})       (one step of the family; o_i its readout, size H)
        logits_i = W_o [o_i; c_i; E y_{i-1}] + b_o           (p(y_i | y_<i, x) = softmax(logits_i))

    y_{-1} is a start symbol (embedding row ``output_size``) and o_{-1} = 0. The decoder's state s is the family's
    own, so attention queries the decoder output o, which every family has. ``bridge``: the decoder starts from the
    encoder's final state when the two families carry states of the same structure and shapes (same family and
    sizes; a bidirectional encoder's two directions are added), checked once at construction (``bridged``);
    otherwise it starts from its zero state and reads the source only through c_i. Sizes: ``hidden_size`` and
    ``num_layers`` apply to encoder and decoder (so ``param_budget`` scales both), ``bidirectional`` to the encoder;
    the same keys inside ``encoder`` / ``decoder`` are ignored.

    The output length is given (``targets`` or ``target_lengths``; by default the source lengths), so there is no
    end symbol. ``forward`` keeps the model interface: outputs [B, S_out, output_size], zero past each row's target
    length; ``state`` is the encoder's (initial in, final out). Decoding: :meth:`greedy` and :meth:`beam_search`.
    Every output depends on the whole source, so a state carried between calls cannot continue a sequence split in
    two (``continues_sequences``), unlike the families of ``rnnlab.models.base``.
    """

    continues_sequences = False

    def __init__(
        self,
        input_size: int,
        output_size: int,
        encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module],
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        attention: str = "bahdanau",
        attention_size: int | None = None,
        embedding_dim: int = 32,
        bridge: bool = True,
    ):
        super().__init__()
        require_positive(
            input_size=input_size, output_size=output_size, hidden_size=hidden_size, num_layers=num_layers,
            embedding_dim=embedding_dim,
        )
        require_choice("attention", attention, ATTENTIONS)
        attention_size = hidden_size if attention_size is None else attention_size
        require_positive(attention_size=attention_size)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.start_token = output_size
        sizes = dict(hidden_size=hidden_size, num_layers=num_layers)
        self.encoder = build_family("encoder", encoder, input_size, hidden_size, bidirectional=bidirectional, **sizes)
        self.decoder = build_family(
            "decoder", decoder, embedding_dim + hidden_size, hidden_size, bidirectional=False, **sizes
        )
        self.embedding = nn.Embedding(output_size + 1, embedding_dim)  # + the start symbol
        self.attention = None
        if attention == "bahdanau":
            self.attention = BahdanauAttention(hidden_size, hidden_size, attention_size)
        self.output = nn.Linear(2 * hidden_size + embedding_dim, output_size)
        self.bridged = bridge and self.states_compatible()

    def fold_directions(self, state):
        """Encoder state components [layers*dirs, B, ...] -> [layers, B, ...], the directions added."""
        if self.num_directions == 1:
            return state
        return map_state(lambda s: s.view(self.num_layers, self.num_directions, *s.shape[1:]).sum(1), state)

    def states_compatible(self) -> bool:
        """Whether the decoder can start from the encoder's final state: one step of each on zeros, shapes compared.

        Built on the meta device (parameter counting) the answer does not matter and is False.
        """
        reference = next(self.parameters())
        if reference.device.type == "meta":
            return False
        training = self.training
        self.eval()  # no dropout: the probe draws no random numbers
        try:
            with torch.no_grad():
                _, encoder_state = self.encoder(reference.new_zeros(1, 1, self.input_size))
                _, decoder_state = self.decoder(reference.new_zeros(1, 1, self.decoder_input_size))
        finally:
            self.train(training)
        try:
            compatible = state_shapes(self.fold_directions(encoder_state)) == state_shapes(decoder_state)
        except (TypeError, RuntimeError, ValueError):  # different nesting, or components that do not fold
            compatible = False
        if not compatible:
            log.info("seq2seq: encoder and decoder states differ in structure; the decoder starts from zeros")
        return compatible

    @property
    def decoder_input_size(self) -> int:
        return self.embedding.embedding_dim + self.hidden_size

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None) -> Memory:
        """Run the encoder over x [B, S, input_size] and prepare what every decoder step reads."""
        batch, steps, _ = x.shape
        annotations, encoder_state = self.encoder(x, lengths, state)
        mask = valid_step_mask(lengths, batch, steps, x.device)
        keys = context = None
        if self.attention is not None:
            keys = self.attention.project_keys(annotations)
        else:
            last = annotations.new_full((batch,), steps - 1, dtype=torch.long) if lengths is None else lengths - 1
            context = annotations[torch.arange(batch, device=x.device), last.to(x.device)]
        decoder_state = self.fold_directions(encoder_state) if self.bridged else None
        return Memory(annotations, keys, mask, context, decoder_state, encoder_state)

    def step(self, memory: Memory, previous: torch.Tensor, query: torch.Tensor, state):
        """One decoder step: previous tokens y_{i-1} [B], query o_{i-1} [B, H], decoder state s_{i-1} (None: zeros).

        Returns logits_i [B, output_size], o_i [B, H] and s_i.
        """
        embedded = self.embedding(previous)
        output, context, state = self.decoder_step(memory, embedded, query, state)
        return self.output(torch.cat([output, context, embedded], dim=-1)), output, state

    def decoder_step(self, memory: Memory, embedded: torch.Tensor, query: torch.Tensor, state):
        """c_i and one step of the decoder family on [E y_{i-1}; c_i]: embedded E y_{i-1} [B, E], query o_{i-1}
        [B, H], state s_{i-1}. Returns o_i [B, H], c_i [B, H] and s_i."""
        if self.attention is None:
            context = memory.context
        else:
            context, _ = self.attention(query, memory.keys, memory.annotations, memory.mask)
        output, state = self.decoder(torch.cat([embedded, context], dim=-1).unsqueeze(1), None, state)
        return output.squeeze(1), context, state

    def teacher_forced(self, memory: Memory, gold: torch.Tensor) -> torch.Tensor:
        """Logits [B, S_out, output_size] when every y_{i-1} is gold [B, S_out] (teacher forcing 1): the same steps
        as :meth:`step`, with the embeddings E y_{i-1} of all steps looked up before the loop and the output layer
        applied to all steps in one matrix product after it (no step reads the logits)."""
        start = gold.new_full((gold.shape[0], 1), self.start_token)
        embedded = self.embedding(torch.cat([start, gold[:, :-1]], dim=1))  # [B, S_out, E]
        query = embedded.new_zeros(gold.shape[0], self.hidden_size)
        state = memory.decoder_state
        outputs, contexts = [], []
        for embedded_i in embedded.unbind(1):
            query, context, state = self.decoder_step(memory, embedded_i, query, state)
            outputs.append(query)
            contexts.append(context)
        return self.output(torch.cat([torch.stack(outputs, dim=1), torch.stack(contexts, dim=1), embedded], dim=-1))

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state=None,
        targets: torch.Tensor | None = None,
        target_lengths: torch.Tensor | None = None,
        teacher_forcing: float = 1.0,
        sample: bool = False,
    ):
        """Logits of every target step, [B, S_out, output_size], and the encoder's final state.

        x [B, S, input_size], lengths [B] (None: all valid). targets [B, S_out] class ids (values past a row's target
        length are ignored): y_{i-1} is the gold targets[:, i-1] with probability ``teacher_forcing`` (drawn for every
        row and step: 1 is teacher forcing, 0 free running; Bengio et al. 2015's scheduled sampling in between), else
        the model's own previous token: ``sample`` draws it from softmax(logits_{i-1}), else its argmax. No gradient
        flows through the choice. Without targets the decoder runs free for ``target_lengths`` steps (default
        ``lengths``, i.e. one output per source step).
        """
        batch = x.shape[0]
        memory = self.encode(x, lengths, state)
        if target_lengths is None:
            if targets is not None:
                target_lengths = torch.full((batch,), targets.shape[1], dtype=torch.long, device=x.device)
            else:
                target_lengths = lengths if lengths is not None else torch.full((batch,), x.shape[1], device=x.device)
        target_lengths = target_lengths.to(x.device)
        steps = targets.shape[1] if targets is not None else int(target_lengths.max())
        gold = targets.clamp(min=0) if targets is not None else None  # padding (IGNORE_INDEX) is never read
        if gold is None:
            teacher_forcing = 0.0
        if gold is not None and teacher_forcing >= 1.0:
            logits = self.teacher_forced(memory, gold)
        else:
            previous = torch.full((batch,), self.start_token, dtype=torch.long, device=x.device)
            query = x.new_zeros(batch, self.hidden_size)
            decoder_state = memory.decoder_state
            outputs = []
            for i in range(steps):
                logits_i, query, decoder_state = self.step(memory, previous, query, decoder_state)
                outputs.append(logits_i)
                if i + 1 < steps:
                    gold_i = None if gold is None else gold[:, i]
                    previous = self.next_input(logits_i.detach(), gold_i, teacher_forcing, sample)
            logits = torch.stack(outputs, dim=1)
        # rows are independent, so a row past its target length may run on; only its outputs are zeroed
        valid = torch.arange(steps, device=x.device)[None, :] < target_lengths[:, None]  # [B, S_out]
        return torch.where(valid.unsqueeze(-1), logits, 0.0), memory.encoder_state

    @staticmethod
    def next_input(logits: torch.Tensor, gold: torch.Tensor | None, teacher_forcing: float, sample: bool):
        """y_i for the next step: gold with probability ``teacher_forcing``, else the model's token (sampled/argmax)."""
        if gold is not None and teacher_forcing >= 1.0:
            return gold
        own = torch.multinomial(logits.softmax(-1), 1).squeeze(1) if sample else logits.argmax(-1)
        if gold is None or teacher_forcing <= 0.0:
            return own
        coin = torch.rand(gold.shape[0], device=gold.device) < teacher_forcing
        return torch.where(coin, gold, own)

    @torch.no_grad()
    def greedy(self, x, lengths=None, target_lengths=None) -> torch.Tensor:
        """Free-running greedy decoding: each step reads its own previous argmax. Tokens [B, S_out]."""
        logits, _ = self(x, lengths, target_lengths=target_lengths)
        return logits.argmax(-1)

    @torch.no_grad()
    def score(self, x, lengths, tokens, target_lengths=None) -> torch.Tensor:
        """log p(tokens | x) = sum_i log softmax(logits_i)[y_i] over each row's target steps, [B]."""
        if target_lengths is None:
            target_lengths = torch.full((x.shape[0],), tokens.shape[1], dtype=torch.long, device=x.device)
        logits, _ = self(x, lengths, targets=tokens, target_lengths=target_lengths)
        picked = logits.log_softmax(-1).gather(-1, tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        valid = torch.arange(tokens.shape[1], device=x.device)[None, :] < target_lengths.to(x.device)[:, None]
        return torch.where(valid, picked, 0.0).sum(1)

    @torch.no_grad()
    def beam_search(self, x, lengths=None, target_lengths=None, beam_size: int = 4):
        """Beam search for the most probable target of each row (fixed output length, so no end symbol).

        Keeps the ``beam_size`` highest-scoring prefixes (score: summed log-probability) of every row, extends each
        by every token, and keeps the best ``beam_size`` of those. Rows past their target length extend each beam by
        a dummy token 0 at no cost. Returns tokens [B, S_out] and their scores [B]; ``beam_size=1`` is greedy.
        """
        require_positive(beam_size=beam_size)
        batch, beams, classes = x.shape[0], beam_size, self.output_size
        if target_lengths is None:
            target_lengths = lengths if lengths is not None else torch.full((batch,), x.shape[1])
        target_lengths = target_lengths.to(x.device)
        memory = self.encode(x, lengths).repeat(beams)
        scores = x.new_full((batch, beams), float("-inf"))
        scores[:, 0] = 0.0  # the beams start identical: keep one
        previous = torch.full((batch * beams,), self.start_token, dtype=torch.long, device=x.device)
        query = x.new_zeros(batch * beams, self.hidden_size)
        state = memory.decoder_state
        finished = x.new_full((classes,), float("-inf"))
        finished[0] = 0.0
        parents, tokens = [], []
        for i in range(int(target_lengths.max())):
            logits, query, state = self.step(memory, previous, query, state)
            log_probs = logits.log_softmax(-1).view(batch, beams, classes)
            log_probs = torch.where((i >= target_lengths).view(batch, 1, 1), finished, log_probs)
            scores, best = (scores.unsqueeze(-1) + log_probs).view(batch, beams * classes).topk(beams, dim=1)
            parent, token = best // classes, best % classes
            rows = (torch.arange(batch, device=x.device).unsqueeze(1) * beams + parent).view(-1)
            query, previous = query[rows], token.view(-1)
            state = map_state(lambda s: s.index_select(1, rows), state)
            parents.append(parent)
            tokens.append(token)
        beam = torch.zeros(batch, 1, dtype=torch.long, device=x.device)  # topk sorts: beam 0 is the best
        sequence = []
        for parent, token in zip(reversed(parents), reversed(tokens)):
            sequence.append(token.gather(1, beam))
            beam = parent.gather(1, beam)
        return torch.cat(sequence[::-1], dim=1), scores[:, 0]

    def generate(self, x, lengths=None, target_lengths=None, beam_size: int = 1) -> torch.Tensor:
        """Free-running decoding: greedy for ``beam_size`` 1, else beam search. Tokens [B, S_out]."""
        if beam_size == 1:
            return self.greedy(x, lengths, target_lengths)
        return self.beam_search(x, lengths, target_lengths, beam_size)[0]


def build_family(key: str, factory: Callable[..., nn.Module], input_size: int, output_size: int, **sizes) -> nn.Module:
    """Build the encoder or decoder network from its partial config; the Seq2Seq's sizes replace the family's own,
    and their own size keys are dropped."""
    if not callable(factory):
        raise ConfigError(key, "must be a recurrent model config with _partial_: true (e.g. the node of model=lstm)")
    if isinstance(factory, partial):
        keywords = dict(factory.keywords)
        if keywords.pop("param_budget", None) is not None:
            raise ConfigError(f"{key}.param_budget", "set model.param_budget instead: it sizes encoder and decoder")
        for name in SIZE_KEYS:
            keywords.pop(name, None)
        factory = partial(factory.func, *factory.args, **keywords)
    try:
        return factory(input_size=input_size, output_size=output_size, **sizes)
    except ConfigError as error:
        raise error.with_prefix(key) from None
