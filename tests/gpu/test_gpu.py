"""Checks that need CUDA (``pytest -m gpu``); every test here is skipped where ``torch.cuda.is_available()`` is false.

The zoo forward and backward on a CUDA batch, mixed precision, the gpu and ddp trainer configs end to end, and the
hand-written and compiled cells against the fused kernel and the eager step on the GPU.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import get_class

from conftest import compose_config, read_record, run_cli
from rnnlab.bench.models import SEQUENCE_LAYOUT, Sizes, layout_inputs, model_configs, train_step
from rnnlab.conf_dir import group_options
from rnnlab.wiring import build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SIZES = Sizes(batch=8, length=12, hidden=16, input=4, output=3)
FAST = ["debug=fast", "data.train_size=256", "data.val_size=64", "data.test_size=64", "callbacks=minimal"]


@pytest.fixture
def full_precision_matmul():
    """Float32 matrix products and convolutions without TF32, so CUDA results compare at 1e-4."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.mark.parametrize("name", group_options("model"))
def test_every_model_runs_forward_and_backward_on_cuda(name):
    device = torch.device("cuda")
    for label, run in model_configs([name], SIZES.hidden, ["implementation=cell"]).items():
        model_class = get_class(run.cfg._target_)
        input_size, output_size = SIZES.input, SIZES.output
        inputs = {"x": torch.randn(SIZES.batch, SIZES.length, SIZES.input, device=device)}
        if getattr(model_class, "input_layout", SEQUENCE_LAYOUT) != SEQUENCE_LAYOUT:
            input_size, inputs = layout_inputs(model_class, SIZES, device)
            if run.task == "frames":  # a frame predictor outputs a frame per step, as rnnlab-bench builds it
                output_size = inputs["x"][0, 0].numel()
        torch.manual_seed(0)
        model = build_model(run.cfg, input_size, output_size).to(device).train()
        train_step(model, inputs)()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.is_cuda and torch.isfinite(g).all() for g in grads), label
        with torch.no_grad():
            outputs = model(**inputs)[0]
        assert outputs.is_cuda and torch.isfinite(outputs).all(), label


def run_completes(tmp_path, *overrides: str) -> dict:
    result = run_cli(tmp_path, *FAST, *overrides, f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_record(tmp_path / "run")
    assert record["status"] == "completed", record["error"]
    return record


def test_gpu_trainer_runs_on_the_gpu(tmp_path):
    record = run_completes(tmp_path, "trainer=gpu")
    assert record["env"]["device"] == torch.cuda.get_device_name(0)
    assert record["config"]["trainer"]["accelerator"] == "gpu"


def test_bf16_mixed_precision_run_completes(tmp_path):
    record = run_completes(tmp_path, "trainer=gpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=1")
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"


@pytest.mark.parametrize("devices", [1, 2])
def test_ddp_run_completes(tmp_path, devices):
    if devices > torch.cuda.device_count():
        pytest.skip(f"ddp on {devices} GPUs needs {devices}; this machine has {torch.cuda.device_count()}")
    record = run_completes(tmp_path, "trainer=ddp", f"trainer.devices={devices}")
    assert record["config"]["trainer"]["devices"] == devices


@pytest.mark.parametrize("name", ["lstm", "gru", "elman"])
def test_fused_kernel_and_hand_written_cell_agree_on_cuda(tmp_path, full_precision_matmul, name):
    cfg = compose_config(tmp_path, [f"model={name}", "model.implementation=fused", "model.num_layers=2"]).model
    torch.manual_seed(0)
    model = build_model(cfg, SIZES.input, SIZES.output).cuda()
    x = torch.randn(SIZES.batch, SIZES.length, SIZES.input, device="cuda")
    lengths = torch.randint(1, SIZES.length + 1, (SIZES.batch,))
    results = []
    for use_fused in (True, False):
        model.use_fused = use_fused
        model.zero_grad(set_to_none=True)
        outputs, _ = model(x, lengths)
        outputs.square().sum().backward()
        results.append((outputs.detach(), [p.grad.clone() for p in model.parameters()]))
    (fused, fused_grads), (cell, cell_grads) = results
    torch.testing.assert_close(cell, fused, rtol=0, atol=1e-4)
    for cell_grad, fused_grad in zip(cell_grads, fused_grads):
        torch.testing.assert_close(cell_grad, fused_grad, rtol=0, atol=1e-4)


@pytest.mark.parametrize("overrides", [["model=scrn"], ["model=elman", "model.implementation=cell"]])
def test_compiled_cell_agrees_with_eager_on_cuda(tmp_path, full_precision_matmul, overrides):
    cfg = compose_config(tmp_path, overrides).model
    x = torch.randn(SIZES.batch, SIZES.length, SIZES.input, device="cuda")
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, SIZES.input, SIZES.output, compile=compiled).cuda()
        outputs, _ = model(x)
        outputs.square().sum().backward()
        results.append((outputs.detach(), [p.grad for p in model.parameters()]))
    assert all(cell.step.compiled is not None for cell in model.cells)  # compiled, not fallen back to eager
    (eager, eager_grads), (compiled, compiled_grads) = results
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=0, atol=1e-4)
