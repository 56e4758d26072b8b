"""int8 × int8 → int32 matrix products on the CPU, with dynamic 8-bit activations: the kernels behind Int8Map.

Measured by `lstmkit bench --study compress` (the kernel table of BENCHMARKS.md) at (B × H) · (H × 4H):
  * "onednn", "fbgemm": PyTorch's packed dynamic linear (`torch.ops.quantized.linear_dynamic`): the activations
    are quantized per tensor to uint8 with a zero point, multiplied with VNNI instructions where the CPU has them
    and scaled back in one fused call; the fastest here. Packing builds a (deprecated) quantized tensor once.
  * "int_mm": `torch._int_mm` on int8 activations quantized per row (symmetric, scale max|x_b| / 127) by plain
    tensor ops; portable (any float dtype, any device PyTorch supports it on) and the fallback.
  * `torch._weight_int8pack_mm` (int8 weights, float activations) was 20 to 400 times slower than fp32 here,
    so it is not offered.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

KERNELS = ("auto", "onednn", "fbgemm", "int_mm")
PACKED = ("onednn", "fbgemm")


def kernel_name(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"int8 kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return kernel


def packed_available(kernel: str) -> bool:
    return kernel in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic")


def choose(kernel: str, x: Tensor) -> str:
    """The kernel for input x: a packed one needs float32 on the CPU; "auto" prefers onednn, then fbgemm."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return "int_mm"
    if kernel == "auto":
        return next((k for k in PACKED if packed_available(k)), "int_mm")
    if kernel in PACKED and not packed_available(kernel):
        raise RuntimeError(f"the {kernel} int8 kernel is not in this PyTorch build "
                           f"(engines: {torch.backends.quantized.supported_engines}); use kernel='auto'")
    return kernel


def prepack(kernel: str, weight: Tensor, scale: Tensor):
    """The packed form of int8 weight (out, in) with per-row scales (out,) for `packed_linear`."""
    previous = torch.backends.quantized.engine
    with warnings.catch_warnings():  # quantized tensors are deprecated; this one only carries int8 + scales
        warnings.simplefilter("ignore")
        q = torch._make_per_channel_quantized_tensor(weight.cpu(), scale.double().cpu(),
                                                     torch.zeros(len(scale), dtype=torch.long), 0)
        try:
            torch.backends.quantized.engine = kernel
            return torch.ops.quantized.linear_prepack(q, None)
        finally:
            torch.backends.quantized.engine = previous


def packed_linear(x: Tensor, packed) -> Tensor:
    """(N, in) float32 -> (N, out): quantize x (uint8, per tensor), int8 GEMM, scale back, in one call."""
    return torch.ops.quantized.linear_dynamic(x.contiguous(), packed, False)


def row_scales(x: Tensor) -> Tensor:
    """(N, 1): the symmetric per-row activation scales of the int_mm kernel, max|x_b| / 127."""
    return x.abs().amax(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny) / 127


def int_mm_linear(x: Tensor, weight: Tensor, scale: Tensor) -> Tensor:
    """(N, in) -> (N, out) with torch._int_mm: y = (q_x q_wᵀ) · s_x · s_w, exact in int32 before scaling."""
    sx = row_scales(x)
    qx = torch.round(x / sx).to(torch.int8)  # |x / sx| ≤ 127 by construction
    y = torch._int_mm(qx, weight.t())  # (N, out) int32
    return y.to(x.dtype).mul_(sx).mul_(scale.to(x.dtype))


def activation_error(kernel: str, x: Tensor) -> Tensor:
    """(N, 1): an upper bound δ_b on |x_bj − x̂_bj| of the kernel's activation quantization.

    int_mm: round to nearest on a grid covering [−max|x_b|, max|x_b|] exactly: half a step. The packed kernels:
    uint8 with scale s = (max(x, 0) − min(x, 0)) / 255 over the whole tensor and a zero point rounded to an
    integer, which shifts the grid by up to s/2, so an extreme value may clip by that much: one step s; and at
    least int_mm's (at most 255/254 of it), since "auto" maps run int_mm's format in the native int8 loop.
    """
    if kernel == "int_mm":
        return row_scales(x) / 2
    span = x.max().clamp_min(0) - x.min().clamp_max(0)
    return torch.maximum((span / 255).expand(x.shape[0], 1), row_scales(x) / 2)
