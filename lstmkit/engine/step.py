"""One time step's elementwise part for the engines whose time loop is in Python (bptt.py, inference.py).

The native kernel (lstmkit/csrc/step.cpp, the operators torch.ops.lstmkit.step_forward / step_backward: one pass
over the gates, vectorized, the math of cell.h) where the extension runs the tensors (CPU float32/float64), else
lstmkit.cell's PyTorch ops (CUDA, other dtypes, no compiler). Both write into buffers the caller owns, so the loop allocates nothing per step.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cell import lstm_pointwise, lstm_pointwise_backward
from lstmkit.engine.build import extension


def _kernel(like: Tensor, *tensors: Tensor | None):
    """The extension when it runs these tensors (CPU float32/float64 matrices with contiguous rows), else None."""
    if like.device.type != "cpu" or like.dtype not in (torch.float32, torch.float64):
        return None
    if any(t is not None and (t.stride(-1) != 1 or t.dtype != like.dtype) for t in tensors):
        return None
    return extension()


def step_forward(gates: Tensor, c_prev: Tensor, peephole: Tensor | None, c: Tensor, h: Tensor) -> None:
    """gates (rows, 4H): the pre-activations, overwritten with the activated gates i, f, g, o; c_prev (rows, H).
    Writes c_t into c (rows, H), which may be c_prev itself, and h_t into h (rows, H)."""
    kernel = _kernel(gates, c_prev, c, h, peephole if peephole is None else peephole.contiguous())
    if kernel is not None:
        torch.ops.lstmkit.step_forward(gates, c_prev, None if peephole is None else peephole.contiguous(), c, h)
        return
    if c is c_prev:  # the inference loop: everything in place
        h.copy_(lstm_pointwise(gates, c, peephole, inplace=True)[0])
        return
    h_t, c_t, ifgo = lstm_pointwise(gates, c_prev, peephole)
    torch.cat(ifgo, dim=1, out=gates)
    c.copy_(c_t)
    h.copy_(h_t)


def step_backward(dh: Tensor, dc: Tensor, acts: Tensor, c: Tensor, c_prev: Tensor, peephole: Tensor | None,
                  d_gates: Tensor) -> None:
    """dh = dL/dh_t (rows, H); dc = dL/dc_t (rows, H), overwritten with dL/dc_{t-1}; acts (rows, 4H), c and
    c_prev (rows, H) as step_forward left them. Writes dL/da (rows, 4H) into d_gates."""
    kernel = _kernel(acts, dh, dc, c, c_prev, d_gates)
    if kernel is not None:
        torch.ops.lstmkit.step_backward(dh, dc, acts, c, c_prev, None if peephole is None else peephole.contiguous(),
                                        d_gates)
        return
    d_a, dc_prev = lstm_pointwise_backward(dh, dc, acts, c, c_prev, peephole)
    d_gates.copy_(d_a)
    dc.copy_(dc_prev)


def new_buffer(like: Tensor, *sizes: int) -> Tensor:
    """like.new_empty(sizes), on the CPU from the extension's pool of large blocks where it is large (empty_large,
    csrc/pool.h): the loop's (T·B, 4H) buffers are tens of MB, and a fresh one otherwise takes a page fault per
    page, which the kernel zeroes, on first write."""
    kernel = _kernel(like)
    return kernel.empty_large(list(sizes), like) if kernel is not None else like.new_empty(sizes)
