"""Reduced-precision weights for inference: int8 (per-channel scales, dynamic activations), bf16, 16-bit fixed point.

Every map here stores its weights as buffers (no parameters: nothing to train) and refuses autograd with a clear
error; `to_dense()` is the dequantized fp32 matrix the map computes with, so `from_dense(W).to_dense()` shows the
weight rounding error and tests compare `forward` against it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lstmkit.maps import int8
from lstmkit.maps.base import LinearMap, int8_form
from lstmkit.maps.cast import OwnDtype
from lstmkit.maps.native import NativeRecurrent


class QuantizedMap(LinearMap):
    """An inference-only map: inputs and outputs are float32, the weights (out, in) are stored narrower."""

    weight: Tensor  # the stored weights, a buffer
    dense_is_exact = False  # forward rounds its input too (int8, bf16, fixed point)

    def __init__(self, weight: Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)

    def reference(self) -> Tensor:
        return torch.empty(0, device=self.weight.device)  # inputs are float32 on the weights' device

    def _inference_only(self, x: Tensor) -> None:
        if torch.is_grad_enabled() and (x.requires_grad or self.training):
            raise RuntimeError(f"{type(self).__name__} is inference-only: quantized weights have no gradient. "
                               "Call model.eval() and run under torch.no_grad(); fine-tune before quantizing")

    def cast(self, dtype: torch.dtype) -> LinearMap:
        return OwnDtype(self)  # its own precision: float32 inputs and outputs

    def transpose(self, g: Tensor) -> Tensor:
        raise RuntimeError(f"{type(self).__name__} is inference-only: backpropagation through quantized weights "
                           "is not supported; fine-tune before quantizing")

    def weight_grads(self, x: Tensor, g: Tensor):
        return self.transpose(g)

    def flops(self, rows: int) -> int:
        return rows * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Int8Map(QuantizedMap):
    """y ≈ x Wᵀ with W = diag(scale) · q: q (out, in) int8 in [-127, 127], scale (out,) = max_j |W_oj| / 127,
    symmetric per output channel. Activations are quantized dynamically (each call) to 8 bits and multiplied
    exactly in int32, then scaled back (see lstmkit.maps.int8 for the kernels and their activation formats).

    Error bound, per output y_bo, with Ŵ = to_dense() and δ_b the kernel's activation rounding error
    (|x_bj − x̂_bj| ≤ δ_b): |x_b Wᵀ − forward(x)_b| ≤ (scale_o / 2)·‖x_b‖₁ + δ_b·‖Ŵ_o‖₁ (weight rounding plus
    activation rounding; the int32 sum is exact), plus float32 rounding of the scaling. `error_bound` computes it.
    """

    def __init__(self, weight: Tensor, scale: Tensor, kernel: str = "auto"):
        super().__init__(weight)
        self.register_buffer("scale", scale)
        self.kernel = int8.kernel_name(kernel)
        self._packed: tuple = (None, None)  # (key, packed weight of the "onednn"/"fbgemm" kernels)

    @classmethod
    def from_dense(cls, weight: Tensor, kernel: str = "auto") -> "Int8Map":
        w = weight.detach().float()
        scale = w.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny) / 127  # (out,)
        return cls(torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale, kernel)

    def to_dense(self) -> Tensor:
        return self.weight.float() * self.scale[:, None]

    def _kernel(self, x: Tensor) -> str:
        return int8.choose(self.kernel, x)

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        self._inference_only(x)
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        kernel = self._kernel(x2)
        if kernel == "int_mm":
            y = int8.int_mm_linear(x2, self.weight, self.scale)
        else:
            key = (kernel, self.weight._version, self.scale._version, self.weight.data_ptr())
            if self._packed[0] != key:
                self._packed = (key, int8.prepack(kernel, self.weight, self.scale))
            y = int8.packed_linear(x2, self._packed[1])
        return y.view(*x.shape[:-1], self.out_features)

    NATIVE_KERNELS = ("auto", "int_mm")  # the kernels whose activation format (per row) the native int8 loop keeps

    def int8_form(self) -> tuple[Tensor, Tensor] | None:
        """(q, scale) for the native int8 loop, which quantizes activations per row as "int_mm" does: for kernel
        "auto" or "int_mm" (a kernel named otherwise keeps its own format, on the fused path)."""
        return (self.weight, self.scale) if self.kernel in self.NATIVE_KERNELS else None

    def native_recurrent(self, weight_hr: "LinearMap | Tensor | None") -> NativeRecurrent | None:
        """As W_hh, int8 in the native int8 loop (inference only), with no projection or an int8 one. Not where
        autograd would record the call on a module in training mode: that raises, on the fused path, as forward does."""
        hr = int8_form(weight_hr)
        recorded = torch.is_grad_enabled() and self.training
        if recorded or self.int8_form() is None or (weight_hr is not None and hr is None):
            return None
        return NativeRecurrent("dense", self.weight, None if hr is None else hr[0], scale_hh=self.scale,
                               scale_hr=None if hr is None else hr[1])

    def error_bound(self, x: Tensor) -> Tensor:
        """(..., out): the bound of the class docstring on |x Wᵀ − forward(x)| for this input and kernel."""
        x2 = x.reshape(-1, self.in_features).float()
        delta = int8.activation_error(self._kernel(x2), x2)  # (N, 1)
        dense = self.to_dense()
        bound = 0.5 * x2.abs().sum(1, keepdim=True) * self.scale + delta * dense.abs().sum(1)  # (N, out)
        exact = x2.abs() @ dense.abs().t()  # Σ_j |x_j Ŵ_oj|: float32 rounding of the scale-back, relative
        return (bound + 1e-5 * exact).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.kernel}"


class BFloat16Map(QuantizedMap):
    """y = x Wᵀ computed in bfloat16 (8-bit mantissa) with float32 accumulation and output: W stored as bf16
    (2 bytes a weight), x rounded to bf16 each call. Relative error per product about 2⁻⁸."""

    @classmethod
    def from_dense(cls, weight: Tensor) -> "BFloat16Map":
        return cls(weight.detach().to(torch.bfloat16))

    def to_dense(self) -> Tensor:
        return self.weight.float()

    def forward(self, x: Tensor) -> Tensor:
        self._inference_only(x)
        return nn.functional.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)


class Fixed16Map(QuantizedMap):
    """C-LSTM's 16-bit fixed-point datapath, simulated: weights, map inputs and map outputs in Q-format.

    Qm.n (here Q4.12 by default): a 16-bit two's-complement integer q standing for q · 2⁻ⁿ, with m = 16 − n
    integer bits counting the sign: Q4.12 covers [−8, 8 − 2⁻¹²] in steps of 2⁻¹² ≈ 2.4e-4. Values outside
    saturate (clamp), values inside round to nearest. The weights are stored as int16 (2 bytes a weight);
    forward rounds x to Q4.12, multiplies exactly (the 24-fraction-bit products, accumulated in float32, whose
    rounding is far below 2⁻¹²; the hardware keeps a wide accumulator) and rounds the sum once to Q4.12, as a
    MAC chain writing a 16-bit result does. The cell state, biases and the sigmoid/tanh stay float32 (C-LSTM
    also approximates those; that part is not simulated).
    """

    def __init__(self, weight: Tensor, frac_bits: int = 12):
        super().__init__(weight)
        self.frac_bits = frac_bits
        self._dense: tuple = (None, None)  # (key, the float32 weights forward multiplies with)

    @staticmethod
    def round_to(x: Tensor, frac_bits: int) -> Tensor:
        """x rounded and saturated to Q(16 − frac_bits).frac_bits, as float32 values."""
        step = 2.0 ** -frac_bits
        return torch.round(x / step).clamp(-2 ** 15, 2 ** 15 - 1) * step

    @classmethod
    def from_dense(cls, weight: Tensor, frac_bits: int = 12) -> "Fixed16Map":
        q = torch.round(weight.detach().float() * 2.0 ** frac_bits).clamp(-2 ** 15, 2 ** 15 - 1)
        return cls(q.to(torch.int16), frac_bits)

    def to_dense(self) -> Tensor:
        return self.weight.float() * 2.0 ** -self.frac_bits

    def forward(self, x: Tensor) -> Tensor:
        self._inference_only(x)
        key = (self.weight._version, self.weight.data_ptr())
        if self._dense[0] != key:
            self._dense = (key, self.to_dense())
        y = nn.functional.linear(self.round_to(x.float(), self.frac_bits), self._dense[1])
        return self.round_to(y, self.frac_bits).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, format=Q{16 - self.frac_bits}.{self.frac_bits}"


FORMATS = {"int8": Int8Map, "bf16": BFloat16Map, "fixed16": Fixed16Map}  # the `quantize` modes
