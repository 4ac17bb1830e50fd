"""The cost of each learning rule as the network grows: seconds of training per data point, and its fitted exponent.

For the comparison of training methods (survey Table II): BPTT costs O(N^2) per step (O(T N) memory), RTRL O(N^4)
per step (O(N^3) memory), the block update (bu) and the Green's function method (gf) O(N^3) per step (O(N^3)
memory). ``measure_costs`` times one training batch of each rule on random data (per-step regression targets, so
every step carries a loss) and fits t ~ N^k by least squares in log-log. Small N is dominated by per-step
overheads, so the exponent of the last pair of sizes is reported too.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Iterable

import torch

from rnnlab.data.base import TaskSpec
from rnnlab.models.elman import Elman
from rnnlab.models.gated import LSTM
from rnnlab.tasks.sequence import SequenceTask
from rnnlab.training.rules import RULES, SETTINGS_OF_RULE


def time_per_data_point(
    rule: str,
    hidden_size: int,
    model: str = "lstm",
    seq_len: int = 32,
    batch_size: int = 16,
    input_size: int = 2,
    repeats: int = 3,
    **settings,
) -> float:
    """Median wall seconds of one training batch (forward, gradient, updates) over ``repeats`` batches, divided by
    the batch's data points (``batch_size * seq_len`` steps). ``model``: ``elman`` or ``lstm``; ``settings`` are
    further ``training`` keys (``k1``, ``update_every``, ``block``). One warm-up batch is not timed."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    network = {"elman": Elman, "lstm": LSTM}[model](input_size, 1, hidden_size=hidden_size)
    spec = TaskSpec(kind="regression", per_step=True, metric="mse")
    task = SequenceTask(network, spec, optimizer=None, training=SETTINGS_OF_RULE[rule](**settings))
    optimizer = torch.optim.SGD(task.parameters(), lr=1e-3)
    batch = {
        "inputs": torch.randn(batch_size, seq_len, input_size, generator=generator),
        "lengths": torch.full((batch_size,), seq_len),
        "targets": torch.randn(batch_size, seq_len, 1, generator=generator),
    }

    def update(objective: torch.Tensor, loss: torch.Tensor, count: int) -> bool:
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
        return True

    def train_batch() -> None:
        if rule != "bptt":  # a manual rule (rnnlab.training.rules), run without Lightning
            task.strategy.run(task, batch, update)
            return
        outputs, _ = network(batch["inputs"], batch["lengths"])
        loss, count = task.loss_and_count(outputs, batch["targets"], batch["lengths"])
        update(loss, loss, count)

    train_batch()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        train_batch()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / (batch_size * seq_len)


def fitted_exponent(sizes: Iterable[float], times: Iterable[float]) -> float:
    """k of the least-squares fit log t = k log N + c."""
    xs = [math.log(n) for n in sizes]
    ys = [math.log(t) for t in times]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread


def measure_costs(
    rules: Iterable[str] = RULES, sizes: Iterable[int] = (4, 8, 16, 32), model: str = "lstm", **kwargs
) -> dict[str, dict]:
    """For each rule: ``sizes``, ``seconds_per_point`` (``time_per_data_point`` at each size, ``kwargs`` passed on),
    ``exponent`` (fitted over all sizes) and ``exponent_last_pair`` (between the two largest sizes)."""
    sizes = list(sizes)
    results = {}
    for rule in rules:
        seconds = [time_per_data_point(rule, size, model=model, **kwargs) for size in sizes]
        results[rule] = {
            "sizes": sizes,
            "seconds_per_point": seconds,
            "exponent": fitted_exponent(sizes, seconds),
            "exponent_last_pair": fitted_exponent(sizes[-2:], seconds[-2:]),
        }
    return results
