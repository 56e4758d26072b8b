"""Peak memory of one call (a training step): allocator events integrated on CPU, the allocator's peak on CUDA."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Bytes of the highest simultaneous allocation made during `fn()`, above what was allocated before it.

    Memory held before the call (weights, inputs) is not counted; everything the call allocates is,
    including the gradients it creates (so set `.grad = None` first to compare two models fairly).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return _cpu_peak_memory(fn)


def _cpu_peak_memory(fn: Callable[[], object]) -> int:
    """The profiler records each CPU allocation (+bytes) and free (-bytes) with a timestamp; the peak is the
    largest running sum. It sees what goes through PyTorch's allocator (every tensor, oneDNN's RNN
    workspace included) but not scratch memory a native library allocates on its own.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    running = peak = 0
    for _, nbytes in _cpu_memory_events(prof):
        running += nbytes
        peak = max(peak, running)
    return peak


def _cpu_memory_events(prof) -> list[tuple[int, int]]:
    """(time ns, +/- bytes) of every CPU allocation and free the profiler saw, in time order."""
    return sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and str(e.device_type()) == "DeviceType.CPU")
