"""What one training step costs, measured so that a verdict can rest on it: the allocator's peak memory and the
FLOPs of the step, counted by torch (not the process's resident set, not wall time on a shared machine).

* :class:`AllocatorPeak`: the most memory torch's allocator held during a stretch of code, above what it held when
  the stretch began. CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the
  allocation and free events the CPU allocator reports to ``torch.profiler`` (``profile_memory=True``), summed in
  time order. Memory that bypasses torch's allocator (the Python heap, a library's private buffers) is not seen.
* :class:`StepFlops`: floating-point operations by ``torch.utils.flop_counter``'s formulas (matrix products
  and convolutions, forward and backward, 2 per multiply-add; elementwise work is not counted). torch has no
  formula for the fused RNN kernels (oneDNN's ``mkldnn_rnn_layer`` runs ``nn.LSTM`` on the CPU, cuDNN's
  ``_cudnn_rnn`` every fused family on CUDA); this module registers theirs, the same count the hand-written cells
  give (2 FLOPs per weight of each input and recurrent matrix per token, twice that for the backward), and the
  in-place products ``addmm_`` and ``baddbmm_``.

Both start and stop in separate calls, so a Lightning callback can open them at a batch's start and close them at
its end (:class:`rnnlab.record.RunStats`), and ``rnnlab-bench`` can wrap one step.
"""

from __future__ import annotations

import os
import warnings
from math import prod

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, register_flop_formula


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AllocatorPeak:
    """``start()`` ... ``stop() -> bytes``: the allocator's peak between the two calls above its level at start."""

    def __init__(self, device: torch.device):
        self.device = device
        self._profiler: torch.profiler.profile | None = None
        self._before = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no "gpuGetDeviceCount failed" on machines without a GPU
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            )
            self._profiler.__enter__()

    def stop(self) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self._before
        profiler, self._profiler = self._profiler, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            profiler.__exit__(None, None, None)
        events = sorted(
            (e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
        )
        live = peak = 0
        for event in events:
            live += event.nbytes()
            peak = max(peak, live)
        return peak

    def abandon(self) -> None:
        """Close an open CPU profiler without reading it (the measured stretch raised)."""
        if self._profiler is not None:
            profiler, self._profiler = self._profiler, None
            profiler.__exit__(None, None, None)


def _fused_rnn_flops(input_shape, matrices) -> int:
    """2 FLOPs per weight of every matrix for each token (a row of the [..., features] input)."""
    return 2 * prod(input_shape[:-1]) * sum(prod(shape) for shape in matrices if len(shape) == 2)


def _register(target, formula, get_raw: bool = False) -> None:
    if target not in flop_registry:  # a later torch may bring its own
        register_flop_formula(target, get_raw=get_raw)(formula)


# in-place products (the hand-written cells' backward accumulates with addmm_) count like their out-of-place forms
_register(torch.ops.aten.addmm_, flop_counter.addmm_flop, get_raw=True)  # already takes raw arguments
_register(torch.ops.aten.baddbmm_, flop_counter.baddbmm_flop, get_raw=True)
_register(torch.ops.aten.mkldnn_rnn_layer,
          lambda input, w_ih, w_hh, *args, **kwargs: _fused_rnn_flops(input, [w_ih, w_hh]))
_register(torch.ops.aten.mkldnn_rnn_layer_backward,
          lambda input, w_ih, w_hh, *args, **kwargs: 2 * _fused_rnn_flops(input, [w_ih, w_hh]))
_register(torch.ops.aten._cudnn_rnn, lambda input, weights, *args, **kwargs: _fused_rnn_flops(input, weights))
_register(torch.ops.aten._cudnn_rnn_backward,
          lambda input, weights, *args, **kwargs: 2 * _fused_rnn_flops(input, weights))


class _CountFlops(TorchDispatchMode):
    """Adds up ``flop_registry``'s formula of every op that has one. Unlike ``FlopCounterMode`` it tracks no modules,
    whose backward hooks break ``torch.autograd.grad`` on leaf tensors (the RTRL rule's per-step gradients)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


class StepFlops:
    """``start()`` ... ``stop() -> FLOPs`` counted between the two calls (see the module docstring)."""

    def __init__(self):
        self._mode: _CountFlops | None = None

    def start(self) -> None:
        self._mode = _CountFlops()
        self._mode.__enter__()

    def stop(self) -> int:
        mode, self._mode = self._mode, None
        mode.__exit__(None, None, None)
        return int(mode.total)

    def abandon(self) -> None:
        if self._mode is not None:
            self.stop()


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def resident_bytes(module: torch.nn.Module, optimizers) -> int:
    """Parameters and optimizer state (e.g. Adam's two moments): what the model holds between steps."""
    state = [value for optimizer in optimizers for entry in optimizer.state.values() for value in entry.values()]
    return tensor_bytes(module.parameters()) + tensor_bytes(state)
