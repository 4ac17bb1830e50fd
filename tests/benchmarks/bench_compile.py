"""Compiled vs uncompiled hand-written cells: forward+backward time ratio and first-call (compile) time.

    python tests/benchmarks/bench_compile.py [--models scrn,rhn] [--repeats 11]

One torch thread; batch 64, length 100, input 32, hidden 128 (rnnlab-bench's sizes). Per model, an uncompiled
model and a compiled copy (same weights; ``build_model(..., compile=True)``) are timed alternately on the same
batch with ``time.process_time`` (CPU clock); the ratio is the median of per-pair ratios (compiled / uncompiled).
Graphs: how many graphs Dynamo compiled on the first training step (0: the cell's ``run`` hands the sequence to a
whole-sequence kernel and never calls ``step``, so compile changes nothing). Compile time is the wall time of the
compiled model's first forward+backward minus an eager one (gcc runs in child processes, which the CPU clock of
this process does not see), with a fresh Inductor cache (cold).
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor_cold_"))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from rnnlab.bench.models import Sizes, model_configs, train_step  # noqa: E402
from rnnlab.wiring import build_model  # noqa: E402

ROWS = {  # label: (conf/model name, model overrides): every family with a RecurrentCell
    "lstm[implementation=cell]": ("lstm", {"implementation": "cell"}),
    "gru[implementation=cell]": ("gru", {"implementation": "cell"}),
    "elman[implementation=cell]": ("elman", {"implementation": "cell"}),
    "lstm[peepholes=true]": ("lstm", {"peepholes": True}),
    "scrn": ("scrn", {}),
    "indrnn": ("indrnn", {}),
    "rhn": ("rhn", {}),
    "clockwork_rnn": ("clockwork_rnn", {}),
    "leaky_rnn": ("leaky_rnn", {}),
    "ctrnn": ("ctrnn", {}),
    "mrnn": ("mrnn", {}),
    "second_order_rnn": ("second_order_rnn", {}),
    "jordan": ("jordan", {}),
    "deep_rnn": ("deep_rnn", {}),
    "drnn": ("drnn", {}),
    "orthogonal_rnn": ("orthogonal_rnn", {}),
    "goru": ("goru", {}),
    "urnn": ("urnn", {}),
    "eurnn": ("eurnn", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(ROWS))
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = Sizes()
    labels = args.models.split(",")
    configs = model_configs(sorted({ROWS[label][0] for label in labels}), sizes.hidden, [])
    torch.manual_seed(0)
    x = torch.randn(sizes.batch, sizes.length, sizes.input)
    start = time.perf_counter()
    torch.compile(lambda a: torch.tanh(a) * 2)(torch.randn(4))  # Inductor's one-time start-up, not any model's
    print(f"Inductor start-up (first compile in the process): {time.perf_counter() - start:.1f} s wall")
    print(f"torch {torch.__version__}, 1 thread, batch {sizes.batch} x length {sizes.length}, input {sizes.input}, "
          f"hidden {sizes.hidden}, median of {args.repeats} pairs")
    print("| model | eager ms | compiled ms | compiled / eager | graphs | compile s (wall) | max output diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in labels:
        name, overrides = ROWS[label]
        cfg = configs[name][2].copy()
        for key, value in overrides.items():
            OmegaConf.update(cfg, key, value, merge=False)
        torch.manual_seed(0)
        eager = build_model(cfg, sizes.input, sizes.output)
        torch.manual_seed(0)
        compiled = build_model(cfg, sizes.input, sizes.output, compile=True)
        eager_step, compiled_step = train_step(eager, {"x": x}), train_step(compiled, {"x": x})
        first_eager = time.perf_counter()
        eager_step()
        first_eager = time.perf_counter() - first_eager
        graphs_before = counters["stats"]["unique_graphs"]
        first_compiled = time.perf_counter()
        compiled_step()
        compile_s = time.perf_counter() - first_compiled - first_eager
        graphs = counters["stats"]["unique_graphs"] - graphs_before
        with torch.no_grad():
            diff = (eager(x)[0] - compiled(x)[0]).abs().max().item()  # no-grad: compiles the inference graph too
        eager_times, compiled_times = [], []
        for repeat in range(args.repeats + 1):  # the first pair is warm-up
            for step, times in ((eager_step, eager_times), (compiled_step, compiled_times)):
                started = time.process_time()
                step()
                if repeat:
                    times.append(time.process_time() - started)
        ratio = statistics.median(c / e for c, e in zip(compiled_times, eager_times))
        print(f"| {label} | {statistics.median(eager_times) * 1e3:.1f} | {statistics.median(compiled_times) * 1e3:.1f} "
              f"| {ratio:.2f} | {graphs} | {compile_s:.1f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
