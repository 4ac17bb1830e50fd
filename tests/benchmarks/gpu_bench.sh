#!/usr/bin/env bash
# GPU readiness of rnnlab in one go (about 5 minutes on one GPU): the CUDA tests, then the speed of the LSTM paths.
#   cd <rnnlab checkout> && . .venv/bin/activate && bash tests/benchmarks/gpu_bench.sh
# Prints pytest's summary, then for batch 64 x length 100, input 32, hidden 128 (rnnlab-bench's sizes), forward +
# backward of out.mean(): ms per batch, us per time step, tokens/s and the ratio to fused nn.LSTM (median of 20 steps,
# each paired with an nn.LSTM step, after 3 warm-up steps that include compilation). Exit status: pytest's.
set -uo pipefail
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch")' || exit 2
python -m pytest -m gpu -q tests/gpu
tests_status=$?
python - <<'EOF'
import torch
from omegaconf import OmegaConf

from rnnlab.bench.models import Reference, Row, Sizes, measure, model_configs, train_step
from rnnlab.wiring import build_model

sizes = Sizes()
device = torch.device("cuda")
x = torch.randn(sizes.batch, sizes.length, sizes.input, device=device)
reference = train_step(Reference(sizes.input, sizes.hidden, sizes.output).to(device), {"x": x})
configs = model_configs(["lstm", "scrn"], sizes.hidden, [])
ROWS = [  # label, conf/model name, model overrides, compile, autocast to bfloat16
    ("lstm implementation=fused (nn.LSTM)", "lstm", {"implementation": "fused"}, False, False),
    ("lstm implementation=cell (kernels.lstm_sequence)", "lstm", {"implementation": "cell"}, False, False),
    ("lstm implementation=cell compile=true", "lstm", {"implementation": "cell"}, True, False),
    ("lstm cell, bf16 autocast (step loop)", "lstm", {"implementation": "cell"}, False, True),
    ("lstm cell, bf16 autocast, compile=true", "lstm", {"implementation": "cell"}, True, True),
    ("lstm peepholes=true (step loop)", "lstm", {"peepholes": True}, False, False),
    ("lstm peepholes=true compile=true", "lstm", {"peepholes": True}, True, False),
    ("scrn", "scrn", {}, False, False),
    ("scrn compile=true", "scrn", {}, True, False),
]
print(f"\n{torch.cuda.get_device_name(0)}, torch {torch.__version__}; batch {sizes.batch} x length {sizes.length}, "
      f"input {sizes.input}, hidden {sizes.hidden}; the bf16 rows' nn.LSTM reference is under autocast too")
print(f"{'model':50s} {'ms/batch':>9s} {'us/step':>8s} {'tokens/s':>12s} {'x nn.LSTM':>9s}")
for label, name, overrides, compile_cells, bf16 in ROWS:
    cfg = configs[name].cfg.copy()
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    torch.manual_seed(0)
    model = build_model(cfg, sizes.input, sizes.output, compile=compile_cells).to(device).train()
    row = Row(model=label)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        measure(row, model, reference, {"x": x}, repeats=20, warmup=3)
    print(f"{label:50s} {row.batch_ms:9.2f} {row.step_ms * 1e3:8.1f} {row.tokens_per_s:12,.0f} {row.ratio:9.2f}",
          flush=True)
EOF
exit $tests_status
