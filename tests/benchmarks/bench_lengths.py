"""Variable-length batches on real data: packing against the padded batch run in segments
(``FusedRecurrentNetwork.run_segments``), with shuffled and with length-bucketed batches (``data.bucket``).

    python tests/benchmarks/bench_lengths.py ../shared/data   # JSB chorales (batch 32) and FSDD MFCC (batch 64)

Forward+backward of a 20k-parameter GRU and LSTM per batch, 1 thread, CPU time, mean over 30 training batches;
``padded`` runs the kernel over the padded batch without taking each sequence's state (a lower bound, not exact).
"""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn

from rnnlab.data.audio import FSDDDataModule, PolyphonicDataModule
from rnnlab.data.base import EpochShuffle, LengthBuckets, pad_collate
from rnnlab.models.budget import hidden_size_for_budget
from rnnlab.models.gated import GRU, LSTM


def batches(data, bucket: bool, count: int = 30) -> list[dict]:
    items = data.splits["train"]
    lengths = torch.tensor([len(items[i][0]) for i in range(len(items))])
    sampler = LengthBuckets(lengths, data.batch_size, 0) if bucket else EpochShuffle(len(items), 0)
    order = torch.tensor(list(sampler)).split(data.batch_size)[:count]
    collate = partial(pad_collate, per_step=data.task.per_step, kind=data.task.kind)
    return [collate([items[i] for i in batch.tolist()]) for batch in order]


def step(model, mode: str, batch: dict) -> None:
    x, lengths = batch["inputs"], batch["lengths"]
    model.zero_grad()
    if mode == "packed":
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = nn.utils.rnn.pad_packed_sequence(model.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        out = model.readout(hidden)
    elif mode == "segments":
        out, _ = model(x, lengths)
    else:
        out = model.readout(model.rnn(x)[0])
    out.square().mean().backward()


def main(data_dir: Path) -> None:
    torch.set_num_threads(1)
    datasets = {
        "jsb": PolyphonicDataModule(root=str(data_dir / "polyphonic"), corpus="jsb", batch_size=32),
        "fsdd": FSDDDataModule(root=str(data_dir / "fsdd"), cache_dir="/tmp/rnnlab-bench-cache", batch_size=64),
    }
    print("data  model  batches    padded/valid  lengths/batch  packed ms  segments ms  padded ms")
    for name, data in datasets.items():
        data.prepare_data()
        data.setup("fit")
        for cls in (GRU, LSTM):
            factory = partial(cls, input_size=data.input_size, output_size=data.output_size, implementation="fused")
            torch.manual_seed(0)
            model = factory(hidden_size=hidden_size_for_budget(factory, 20000))
            for bucket in (False, True):
                sample = batches(data, bucket)
                waste = sum(b["inputs"].shape[0] * b["inputs"].shape[1] for b in sample) / sum(
                    int(b["lengths"].sum()) for b in sample)
                distinct = statistics.mean(len(torch.unique(b["lengths"])) for b in sample)
                times = {}
                for mode in ("packed", "segments", "padded"):
                    step(model, mode, sample[0])
                    start = time.process_time()
                    for batch in sample:
                        step(model, mode, batch)
                    times[mode] = (time.process_time() - start) / len(sample) * 1e3
                print(f"{name:5} {cls.__name__:6} {'bucketed' if bucket else 'shuffled':9}  {waste:12.2f}  "
                      f"{distinct:13.1f}  {times['packed']:9.1f}  {times['segments']:11.1f}  {times['padded']:9.1f}",
                      flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
