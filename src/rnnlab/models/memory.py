"""Memory-augmented networks: the end-to-end memory network (MemN2N) and the recurrent memory network (RMN)."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice, require_positive

TYINGS = ("adjacent", "layerwise")
ENCODINGS = ("position", "bow")


def position_encoding(words: torch.Tensor, size: int) -> torch.Tensor:
    """Sukhbaatar et al. 2015 section 4.1: l_kj = (1 - j/J) - (k/d)(1 - 2j/J), j = 1..J words, k = 1..d dims.

    ``words`` [..., L] bool marks the real words (a prefix of each row; J = their count). Returns [..., L, d], zero
    at padded words.
    """
    count = words.sum(-1, keepdim=True).clamp(min=1).unsqueeze(-1).to(torch.float32)  # J: [..., 1, 1]
    j = torch.arange(1, words.shape[-1] + 1, device=words.device, dtype=torch.float32)[:, None]  # [L, 1]
    k = torch.arange(1, size + 1, device=words.device, dtype=torch.float32) / size  # [d]
    weights = (1 - j / count) - k * (1 - 2 * j / count)
    return weights * words.unsqueeze(-1)


class MemN2N(nn.Module):
    """End-to-end memory network (Sukhbaatar, Szlam, Weston & Fergus 2015) answering a query about a story.

    Sentences x_i (``story`` [B, S, L]) and the query q ([B, L_q]) are word ids in [0, input_size), -1 padding
    (after the last word of a sentence and after the last sentence of a story).
    With embedding matrices A^k, C^k (V x d, d = ``hidden_size``) and B, for hops k = 1..K (``hops``):

        m_i^k = sum_j l_j * A^k x_ij + T_A^k(i)       c_i^k = sum_j l_j * C^k x_ij + T_C^k(i)   (memories, sec. 4.1)
        u^1   = sum_j l_j * B q_j
        p^k   = softmax_i(u^k . m_i^k)                 o^k = sum_i p_i^k c_i^k                   (eqs. 1-2)
        u^k+1 = u^k + o^k            (adjacent)        u^k+1 = H u^k + o^k    (layerwise)         (sec. 2.2)
        a^    = softmax(W u^K+1)                                                                  (eq. 3)

    ``encoding``: ``position`` l_j from :func:`position_encoding`, ``bow`` l_j = 1 (bag of words). ``temporal``
    adds T_A(i), T_C(i) (learned, ``memory_size`` x d), i the sentence's age (0 = the story's last sentence); only
    the ``memory_size`` most recent sentences are memories (the paper's 50). ``tying``: ``adjacent``: A^k+1 = C^k,
    B = A^1 and W^T = C^K (K + 1 embedding matrices; W is separate when output_size != input_size); ``layerwise``:
    one A and one C for every hop, separate B, W and the linear map H. No biases, as in the paper; linear start and
    random-noise training (section 4.2) are not implemented.

    ``forward(x, lengths, state=None, story=..., query=...)``: x and lengths (the flat story + query) are accepted
    for the common interface and unused. Returns logits [B, 1, output_size] (one answer per story, read by
    ``rnnlab.tasks.memory.MemoryTask``) and the final controller state u^K+1 as [1, B, d].
    """

    input_layout = "story [batch, sentences, words] and query [batch, words]: word ids, -1 padding"
    batch_keys = ("story", "query")

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        hops: int = 3,
        tying: str = "adjacent",
        encoding: str = "position",
        temporal: bool = True,
        memory_size: int = 50,
    ):
        super().__init__()
        require_positive(
            input_size=input_size, output_size=output_size, hidden_size=hidden_size, hops=hops, memory_size=memory_size
        )
        require_choice("tying", tying, TYINGS)
        require_choice("encoding", encoding, ENCODINGS)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size
        self.hops = hops
        self.tying = tying
        self.encoding = encoding
        self.temporal = temporal
        self.memory_size = memory_size
        count = hops + 1 if tying == "adjacent" else 3  # adjacent: E_0..E_K; layerwise: A, C, B
        self.embeddings = nn.ParameterList(
            nn.Parameter(torch.randn(input_size, hidden_size) * 0.1) for _ in range(count)
        )
        times = (hops + 1 if tying == "adjacent" else 2) if temporal else 0
        self.times = nn.ParameterList(nn.Parameter(torch.randn(memory_size, hidden_size) * 0.1) for _ in range(times))
        self.hop_map = nn.Linear(hidden_size, hidden_size, bias=False) if tying == "layerwise" else None  # H
        tied = tying == "adjacent" and output_size == input_size
        self.answer = None if tied else nn.Linear(hidden_size, output_size, bias=False)  # W

    def matrices(self, hop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(A^k, C^k, T_A^k, T_C^k) of hop k = ``hop`` + 1 (T_* None without ``temporal``)."""
        a, c = (hop, hop + 1) if self.tying == "adjacent" else (0, 1)
        times = (self.times[a], self.times[c]) if self.temporal else (None, None)
        return self.embeddings[a], self.embeddings[c], *times

    def query_matrix(self) -> torch.Tensor:
        return self.embeddings[0] if self.tying == "adjacent" else self.embeddings[2]

    def answer_weight(self) -> torch.Tensor:
        """W [output_size, d]."""
        return self.embeddings[-1] if self.answer is None else self.answer.weight

    @classmethod
    def example_inputs(cls, batch_size: int, input_size: int) -> dict:
        """Random stories of 1-4 sentences of 2-5 words, queries of 3 words, and their flat one-hot form."""
        generator = torch.Generator().manual_seed(0)
        sentences = torch.randint(1, 5, (batch_size,), generator=generator)
        words = torch.randint(2, 6, (batch_size, 4), generator=generator)
        story = torch.randint(0, input_size, (batch_size, 4, 5), generator=generator)
        real = (torch.arange(5) < words[..., None]) & (torch.arange(4)[:, None] < sentences[:, None, None])
        story = story.masked_fill(~real, -1)
        query = torch.randint(0, input_size, (batch_size, 3), generator=generator)
        flat = [torch.cat([story[b][story[b] >= 0], query[b]]) for b in range(batch_size)]
        lengths = torch.tensor([len(f) for f in flat])
        x = nn.utils.rnn.pad_sequence([nn.functional.one_hot(f, input_size).float() for f in flat], batch_first=True)
        return {"x": x, "lengths": lengths, "story": story, "query": query}

    def embed(self, words: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """sum_j l_j * matrix[x_j] over the last dim of ``words`` [..., L] (ids, -1 padding): [..., d]."""
        real = words >= 0
        vectors = matrix[words.clamp(min=0)]  # [..., L, d]
        if self.encoding == "position":
            weights = position_encoding(real, self.hidden_size).to(vectors.dtype)
        else:
            weights = real.unsqueeze(-1).to(vectors.dtype)
        return (weights * vectors).sum(-2)

    def read(self, story: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The final controller state u^K+1 [B, d] and each hop's attention p^k [B, S] (0 on non-memories)."""
        sentence = (story >= 0).any(-1)  # [B, S]
        age = sentence.sum(-1, keepdim=True) - 1 - torch.arange(story.shape[1], device=story.device)  # 0 = last
        memory = sentence & (age < self.memory_size)
        age = age.clamp(0, self.memory_size - 1)
        u = self.embed(query, self.query_matrix())
        attention = []
        for hop in range(self.hops):
            a, c, time_a, time_c = self.matrices(hop)
            m, out = self.embed(story, a), self.embed(story, c)  # [B, S, d]
            if self.temporal:
                m, out = m + time_a[age], out + time_c[age]
            scores = torch.einsum("bsd,bd->bs", m, u).masked_fill(~memory, torch.finfo(m.dtype).min)
            p = torch.softmax(scores, dim=-1) * memory  # exactly 0 off the memories (and for a story with none)
            o = torch.einsum("bs,bsd->bd", p, out)
            u = (u if self.hop_map is None else self.hop_map(u)) + o
            attention.append(p)
        return u, attention

    def forward(
        self,
        x: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        state=None,
        story: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ):
        if story is None or query is None:
            raise ValueError("MemN2N reads story [batch, sentences, words] and query [batch, words] word ids")
        if state is not None:
            raise ValueError("MemN2N carries no state between batches; pass state=None")
        u, _ = self.read(story, query)
        logits = nn.functional.linear(u, self.answer_weight())
        return logits.unsqueeze(1), u.unsqueeze(0)


class RecurrentMemoryNetwork(nn.Module):
    """Recurrent memory network (Tran, Bisazza & Monz 2016): an LSTM, then a memory block (MB) at every step.

    The LSTM (``num_layers``, torch's fused kernel) gives h_t; the MB attends over the ``memory_size`` = n most
    recent inputs x_i, i in {t-n+1, ..., t} (fewer at the start of a stream), with age a = t - i:

        m_i = M x_i + T_M(a)          c_i = C x_i + T_C(a)          (input / output memory; T only if ``temporal``)
        p_t = softmax_i(m_i . h_t)    s_t = sum_i p_ti c_i          (Tran et al. eqs. 3-4)
        z_t = sigma(W_z s_t + U_z h_t + b_z)      r_t = sigma(W_r s_t + U_r h_t + b_r)
        h'_t = (1 - z_t) * h_t + z_t * tanh(W s_t + U (r_t * h_t) + b)             (the MB's GRU-style gating)
        y_t = W_o h'_t + b_o

    Weights: ``memory_in`` M and ``memory_out`` C (F -> H, no bias), ``time_in`` T_M / ``time_out`` T_C [n, H]
    (row a), ``gate_s`` [W_z; W_r; W] with [b_z; b_r; b] (H -> 3H), ``gate_h`` [U_z; U_r] (H -> 2H), ``candidate_h``
    U (H -> H), readout H -> C. Inputs older than n steps reach h'_t only through the LSTM.

    Shapes: x [B, T, F], outputs [B, T, C] (padded steps read a zero h'); state (h, c, past, seen): the LSTM's
    h, c [layers, B, H], the last n - 1 inputs ``past`` [n - 1, B, F] (oldest first) and ``seen`` [n - 1, B]
    (1 where that input exists), so a carried state continues the memory window across batches.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        memory_size: int = 15,
        temporal: bool = True,
    ):
        super().__init__()
        require_positive(
            input_size=input_size, output_size=output_size, hidden_size=hidden_size, num_layers=num_layers,
            memory_size=memory_size,
        )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {dropout!r}")
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.memory_size = memory_size
        self.temporal = temporal
        self.lstm = nn.LSTM(
            input_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.memory_in = nn.Linear(input_size, hidden_size, bias=False)
        self.memory_out = nn.Linear(input_size, hidden_size, bias=False)
        if temporal:
            self.time_in = nn.Parameter(torch.randn(memory_size, hidden_size) * 0.1)
            self.time_out = nn.Parameter(torch.randn(memory_size, hidden_size) * 0.1)
        self.gate_s = nn.Linear(hidden_size, 3 * hidden_size)
        self.gate_h = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.candidate_h = nn.Linear(hidden_size, hidden_size, bias=False)
        self.readout = nn.Linear(hidden_size, output_size)

    def attend(
        self, window: torch.Tensor, seen: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory read s [B, T, H] and attention p [B, T, n] (column n - 1 - a: age a) of each step.

        window: [B, n - 1 + T, F], the n - 1 carried inputs then this batch's; seen: [B, n - 1 + T] bool, which of
        them exist; hidden: [B, T, H], the LSTM's h_t. Step t reads window rows t .. t + n - 1.
        """
        n, steps = self.memory_size, hidden.shape[1]
        m, c = self.memory_in(window), self.memory_out(window)  # [B, n - 1 + T, H]
        # offset k = 0..n-1 of step t's window is window row t + k, of age n - 1 - k: n shifted slices, each one
        # batched product over all steps (cheaper than an unfolded [B, T, H, n] copy, forward and backward)
        scores = torch.stack([(hidden * m[:, k : k + steps]).sum(-1) for k in range(n)], dim=-1)  # [B, T, n]
        if self.temporal:
            scores = scores + hidden @ self.time_in.flip(0).T  # column n - 1 - a holds age a
        seen = torch.stack([seen[:, k : k + steps] for k in range(n)], dim=-1)
        p = torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1)
        s = sum(p[..., k : k + 1] * c[:, k : k + steps] for k in range(n))
        if self.temporal:
            s = s + p @ self.time_out.flip(0)
        return s, p

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        batch, steps, _ = x.shape
        n = self.memory_size
        if state is None:
            lstm_state = None
            past = x.new_zeros(n - 1, batch, x.shape[-1])
            seen = torch.zeros(n - 1, batch, dtype=torch.bool, device=x.device)
        else:
            h0, c0, past, seen = state
            lstm_state, seen = (h0, c0), seen.bool()
        if lengths is None:
            hidden, (h, c) = self.lstm(x, lstm_state)
            lengths = torch.full((batch,), steps, dtype=torch.long, device=x.device)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            hidden, (h, c) = self.lstm(packed, lstm_state)
            hidden, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=steps)
            lengths = lengths.to(x.device)
        window = torch.cat([past.transpose(0, 1), x], dim=1)  # [B, n - 1 + T, F]
        # every step of x counts as seen: windows look back only, so padding (at the end) never reaches a valid step
        seen = torch.cat([seen.T, torch.ones(batch, steps, dtype=torch.bool, device=x.device)], dim=1)
        s, _ = self.attend(window, seen, hidden)
        s_zr, s_candidate = self.gate_s(s).split([2 * self.hidden_size, self.hidden_size], dim=-1)
        z, r = torch.sigmoid(s_zr + self.gate_h(hidden)).chunk(2, dim=-1)
        candidate = torch.tanh(s_candidate + self.candidate_h(r * hidden))
        mixed = (1 - z) * hidden + z * candidate
        valid = torch.arange(steps, device=x.device)[None, :] < lengths[:, None]
        outputs = self.readout(mixed.masked_fill(~valid.unsqueeze(-1), 0.0))
        # the last n - 1 inputs of each sequence: window rows length .. length + n - 2
        rows = lengths[:, None] + torch.arange(n - 1, device=x.device)[None, :]  # [B, n - 1]
        past = window.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1])).transpose(0, 1)
        seen = seen.gather(1, rows).T
        return outputs, (h, c, past, seen.to(x.dtype))
