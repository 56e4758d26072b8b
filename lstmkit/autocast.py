"""Autocast as torch.nn.LSTM meets it: the dtype a call computes in, its weights cast through autograd, and the
dtypes torch.nn.LSTM and torch.nn.LSTMCell return (tests/test_autocast.py holds them equal to torch's)."""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from lstmkit.maps import Map

CASTS = (torch.float32, torch.bfloat16, torch.float16)  # the dtypes torch.autocast casts (float64 it leaves alone)
# the dtype of the operands the engine is running with on the CPU (their values already rounded to it, held in
# float32), while `engine` holds it; None outside
_OPERANDS: ContextVar[torch.dtype | None] = ContextVar("lstmkit_autocast_operands", default=None)
# whether the caller of the engine takes a layer's output in the operands' dtype where the native loop makes it so
_OPERAND_OUTPUTS: ContextVar[bool] = ContextVar("lstmkit_autocast_operand_outputs", default=False)


def compute_dtype(weight: Tensor) -> torch.dtype | None:
    """The dtype a layer whose weights are like `weight` computes in: the autocast dtype where autocast is on for
    their device and casts their dtype; else None (the call runs as without autocast)."""
    device_type = weight.device.type
    if weight.dtype not in CASTS or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def cast(m: Map | Tensor | None, dtype: torch.dtype) -> Map | Tensor | None:
    """m as the engine computes with it under autocast to `dtype`, through autograd (so gradients reach the original
    in its own dtype): on CUDA cast to `dtype` (a tensor's `.to`, a map's `cast`, lstmkit.maps.LinearMap.cast). On
    the CPU rounded to `dtype` and held in float32: the operands torch's bf16 kernels see, accumulated in float32
    as those accumulate; the native loop runs them with bf16 products (`operands` says so while `engine` holds),
    another engine in float32 (PyTorch's bf16 elementwise ops ran training 15x slower). A tensor's rounding passes
    its gradient through unrounded, so float32 weights get the float32 gradient of the rounded function."""
    if m is None:
        return None
    device_type = (m if isinstance(m, Tensor) else m.reference()).device.type
    if device_type == "cpu" and dtype != torch.float32 and isinstance(m, Tensor) and m.dtype == torch.float32:
        if torch._C._are_functorch_transforms_active():
            return _Rounded.apply(m, dtype)  # the form torch.func's transforms need
        if not (torch.is_grad_enabled() and m.requires_grad):
            return rounded(m, dtype)  # no graph to record
        return _RoundedEager.apply(m, dtype)
    steps = (dtype, torch.float32) if device_type == "cpu" and dtype != torch.float32 else (dtype,)
    for step in steps:
        m = m.to(step) if isinstance(m, Tensor) else m.cast(step)
    return m


class _Rounded(torch.autograd.Function):
    """t rounded to `dtype` and back to float32; the gradient passes through in float32 (straight through)."""

    @staticmethod
    def forward(t: Tensor, dtype: torch.dtype) -> Tensor:
        return rounded(t, dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class _RoundedEager(torch.autograd.Function):
    """_Rounded outside torch.func's transforms: with `ctx` in forward, Function.apply skips binding the arguments
    to forward's signature (inspect.signature at each call), 9 us a call against 23 (7 calls per layer and step)."""

    @staticmethod
    def forward(ctx, t: Tensor, dtype: torch.dtype) -> Tensor:
        return rounded(t, dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def rounded(t: Tensor, dtype: torch.dtype) -> Tensor:
    """float32 t rounded to `dtype` and held in float32: t.to(dtype).to(torch.float32), for bf16 on the CPU in one
    pass by the native extension where it is loaded (the same values), wherever nothing must see the ops
    (lstmkit/engine/dispatch.py: no compiler, tracer, transform, mode or profiler, a plain tensor)."""
    if dtype == torch.bfloat16 and t.dtype == torch.float32 and t.device.type == "cpu":
        from lstmkit.engine.build import extension  # here: the engine imports this module
        from lstmkit.engine.dispatch import kernel_may_run
        ext = extension() if kernel_may_run(t) else None
        if ext is not None:
            return ext.rounded_to_bf16(t)
    return t.to(dtype).to(torch.float32)


def operands() -> torch.dtype | None:
    """The dtype the engine's CPU operands are rounded to while `engine` runs them under autocast (bfloat16 or
    float16), else None: the native loop then runs its products in that precision where it can (bf16). None in
    code torch.compile traces (dynamo can't read a ContextVar): compiled, the float32 loop runs the rounded operands."""
    if torch.compiler.is_compiling():
        return None
    return _OPERANDS.get()


def operand_outputs() -> bool:
    """Whether the engine's caller takes a layer's output in the operands' dtype (bfloat16) where the native loop
    makes it so (`engine(..., operand_outputs=True)`): no round trip through float32 and back."""
    return _OPERAND_OUTPUTS.get()


@contextlib.contextmanager
def engine(device_type: str, operand_outputs: bool = False):
    """The context the engine runs in once everything is cast: autocast off, so that nothing casts twice, and on
    the CPU `operands` saying what the operands were rounded to. Entered with autocast on. With `operand_outputs`
    the caller takes a layer's output in the operands' dtype where the native loop makes it so."""
    token = _OPERANDS.set(torch.get_autocast_dtype(device_type) if device_type == "cpu" else None)
    outputs = _OPERAND_OUTPUTS.set(operand_outputs)
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        _OPERAND_OUTPUTS.reset(outputs)
        _OPERANDS.reset(token)


def _one_onednn_kernel(input_dtype: torch.dtype) -> bool:
    """Whether torch.nn.LSTM's CPU oneDNN path (ATen's use_mkldnn) takes an input of this dtype."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    return input_dtype == torch.float32 or (input_dtype == torch.bfloat16
                                            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def lstm_dtypes(device_type: str, dtype: torch.dtype, input_dtype: torch.dtype, cell_dtype: torch.dtype, *,
                packed: bool, projected: bool, empty: bool) -> tuple[torch.dtype, torch.dtype, torch.dtype]:
    """(output, h_n, c_n) dtypes torch.nn.LSTM returns under autocast to `dtype`. cuDNN, and on the CPU oneDNN (a
    padded, non-empty batch without projection and a float32 or bfloat16 input), cast everything: all `dtype`.
    Elsewhere ATen's per-step cell runs: its products autocast, its elementwise math promotes with c_0
    (`cell_dtype`: the given c_0's, else the input's), so c_n is promote(dtype, cell_dtype), and output and h_n
    are the same, unless the projection (a product) makes them `dtype`."""
    if device_type == "cuda" or (device_type == "cpu" and not (packed or projected or empty)
                                 and _one_onednn_kernel(input_dtype)):
        return dtype, dtype, dtype
    c = torch.promote_types(dtype, cell_dtype)
    return (dtype, dtype, c) if projected else (c, c, c)


def cell_dtype(device_type: str, dtype: torch.dtype, state_dtype: torch.dtype) -> torch.dtype:
    """The dtype of (h', c') torch.nn.LSTMCell returns under autocast to `dtype`: CUDA autocasts lstm_cell whole;
    elsewhere its products autocast and its elementwise math promotes with c (given, or zeros like the input)."""
    return dtype if device_type == "cuda" else torch.promote_types(dtype, state_dtype)
