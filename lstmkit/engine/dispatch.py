"""Whether an eager call may run a native op's kernel itself, past torch.library's dispatcher.

Calling lstmkit::lstm_forward goes through the dispatcher (the autograd key, then the CPU kernel, each a hop back
into Python, and the check that no output aliases an input): 0.2-0.5 ms a call on this repo's 2-core CPU, where
that code is cold after a loop of megabytes. Measured in one process, bf16 inference, interleaved with
torch.nn.LSTM (op against the kernel called directly): T=128 B=8 H=128 1.35 -> 1.14 ms, T=64 B=32 H=256 7.55 ->
7.18, the same packed 6.42 -> 5.90, T=64 B=64 H=512 46.1 -> 45.6.

A call that records no gradient needs none of it, unless something must see the op itself: torch.compile and
torch.export (they trace it, with fake or functional tensors), torch.jit.trace, torch.func's transforms, a
TorchDispatchMode or TorchFunctionMode (FlopCounterMode, DebugMode, a `with torch.device(...)` block), the profiler
(whose trace lists the op), or a tensor subclass. There, and wherever a gradient is recorded, the op runs. The
kernel is the op's own CPU implementation, so both give the same bits (tests/test_dispatch.py).
"""
from __future__ import annotations

import torch
from torch import Tensor

PLAIN = (Tensor, torch.nn.Parameter)  # exact types: a subclass (FakeTensor, FunctionalTensor, DTensor) goes the op's way


def kernel_may_run(*tensors: Tensor | None) -> bool:
    """Whether a call on `tensors` (None entries ignored) may run the op's kernel directly: eager, no gradient
    recorded, plain tensors, and nothing (compiler, tracer, transform, mode, profiler) that must see the op."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing()
                or torch._C._are_functorch_transforms_active() or torch._C._len_torch_dispatch_stack()
                or torch._C._is_torch_function_mode_enabled() or torch._C._autograd._profiler_enabled()
                or torch.onnx.is_in_onnx_export()
                or (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))
                or any(t is not None and type(t) not in PLAIN for t in tensors))
