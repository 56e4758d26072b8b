"""The linear-map protocol that every weight structure implements, and the helpers the engine calls."""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lstmkit.maps.native import NativeRecurrent


class LinearMap(nn.Module):
    """A linear map `(..., in_features) -> (..., out_features)` with the adjoint the BPTT engine needs.

    Subclasses implement `forward`, `transpose`, `to_dense`, `from_dense` and `flops`.
    `weight_grads` has a generic autograd implementation; a map may override it with a closed form.
    """

    in_features: int
    out_features: int
    # whether `vjp` beats autograd through `forward` over many rows; if so the engine differentiates the hoisted
    # input product with it (lstmkit/engine/hoisted.py). Measured per map: true for grouped (no regrouping copies).
    closed_form_backward: bool = False
    # whether forward(x) is x @ to_dense().T up to float rounding, so ONNX export may run the dense matrix
    # (lstmkit/engine/onnx.py); false for a map that also rounds its input (the quantized maps)
    dense_is_exact: bool = True

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        raise NotImplementedError

    def transpose(self, g: Tensor) -> Tensor:  # (..., out) -> (..., in): the adjoint, g @ W
        raise NotImplementedError

    def to_dense(self) -> Tensor:  # (out, in), the matrix W with forward(x) == x @ W.T
        raise NotImplementedError

    @classmethod
    def from_dense(cls, weight: Tensor, **options) -> "LinearMap":
        raise NotImplementedError

    def flops(self, rows: int) -> int:
        """Multiply-adds of `forward` on `rows` input rows."""
        raise NotImplementedError

    def reference(self) -> Tensor:
        """A tensor with the dtype and device this map's inputs must have: its first parameter, unless overridden
        (a quantized map stores no floating-point parameter), or else its first sub-map's."""
        p = next(self.parameters(), None)
        return p if p is not None else next(m.reference() for m in self.children() if isinstance(m, LinearMap))

    def dense_weight(self) -> Tensor | None:
        """The (out, in) matrix itself where the map stores one (a Dense map), else None."""
        return None

    def native_recurrent(self, weight_hr: "Map | None") -> "NativeRecurrent | None":
        """How the native loop runs this map as a layer's W_hh with projection `weight_hr` (lstmkit/maps/native.py);
        None where it can't (the default): the layer then runs the fused engine."""
        return None

    def int8_form(self) -> tuple[Tensor, Tensor] | None:
        """(q (out, in) int8, scale (out,) float32) with forward(x) ≈ x (diag(scale) q)ᵀ computed with activations
        quantized per row (the native int8 loop's format), where the map is that; else None (the default)."""
        return None

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor | None, ...]:
        """Gradients of sum(forward(x) * g) for each of `self.parameters()`, in one call over all rows."""
        params = tuple(self.parameters())
        with torch.enable_grad():
            y = self.forward(x.detach())
            return torch.autograd.grad(y, params, g, allow_unused=True)


    def add_to(self, x: Tensor, out: Tensor) -> None:
        """out += forward(x), without autograd; a map may fuse the sum into its product (one pass over out)."""
        out += self.forward(x)

    def cast(self, dtype: torch.dtype) -> "LinearMap":
        """This map computing in `dtype` (autocast, lstmkit/autocast.py): a shallow copy whose floating parameters
        and buffers are cast through autograd, so gradients reach the originals in their own dtype. A map whose ops
        lack `dtype` returns lstmkit.maps.cast.OwnDtype(self) instead."""
        return _cast_copy(self, dtype)

    def vjp(self, x: Tensor, g: Tensor, input_grad: bool = True,
            weight_grads: bool = True) -> tuple[Tensor | None, tuple[Tensor | None, ...]]:
        """(dL/dx, dL/d parameters) for y = forward(x) and dL/dy = g, each only where asked (else None):
        `transpose` and `weight_grads`, which a composite map may compute sharing their common part."""
        dx = self.transpose(g) if input_grad else None
        return dx, (self.weight_grads(x, g) if weight_grads else (None,) * len(tuple(self.parameters())))


def _cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A shallow copy of module with its floating tensors `.to(dtype)` and its sub-maps' `cast`."""
    new = copy.copy(module)
    floating = lambda t: t is not None and t.is_floating_point()  # noqa: E731
    new._parameters = {n: p.to(dtype) if floating(p) else p for n, p in module._parameters.items()}
    new._buffers = {n: b.to(dtype) if floating(b) else b for n, b in module._buffers.items()}
    new._modules = {n: None if m is None else m.cast(dtype) if isinstance(m, LinearMap) else _cast_copy(m, dtype)
                    for n, m in module._modules.items()}
    return new


# A map is either a LinearMap or a plain (out, in) weight tensor, which is the dense map: that keeps
# the dense layer's parameters where torch.nn.LSTM has them (weight_hh_l0, ...) with no wrapper.
Map = LinearMap | Tensor


def apply(m: Map, x: Tensor) -> Tensor:
    """(..., in) -> (..., out)"""
    return torch.nn.functional.linear(x, m) if isinstance(m, Tensor) else m(x)


def apply_transpose(m: Map, g: Tensor) -> Tensor:
    """(..., out) -> (..., in)"""
    return g @ m if isinstance(m, Tensor) else m.transpose(g)


def tensors(m: Map | None) -> tuple[Tensor, ...]:
    """The tensors a map's gradients are taken for."""
    if m is None:
        return ()
    return (m,) if isinstance(m, Tensor) else tuple(m.parameters())


def reference(m: Map) -> Tensor:
    """A tensor with the dtype and device the map's inputs must have."""
    return m if isinstance(m, Tensor) else m.reference()


def weight_grads(m: Map, x: Tensor, g: Tensor) -> tuple[Tensor | None, ...]:
    """Gradients of sum(apply(m, x) * g) for `tensors(m)`; x (N, in), g (N, out)."""
    if isinstance(m, Tensor):
        return (g.t() @ x,)  # dW = g^T x, (out, in): one GEMM over all N rows
    return m.weight_grads(x, g)


def add_to(m: Map, x: Tensor, out: Tensor) -> None:
    """out += apply(m, x), in place, without autograd: out (..., out_features)."""
    if isinstance(m, Tensor):
        out.addmm_(x, m.t())  # the sum inside the GEMM
    else:
        m.add_to(x, out)


def vjp(m: Map, x: Tensor, g: Tensor, input_grad: bool = True,
        weight_grads: bool = True) -> tuple[Tensor | None, tuple[Tensor | None, ...]]:
    """(dL/dx, dL/d tensors(m)) for y = apply(m, x) and dL/dy = g, x (N, in), g (N, out); None where not asked."""
    if isinstance(m, Tensor):
        return (g @ m if input_grad else None), ((g.t() @ x,) if weight_grads else (None,))
    return m.vjp(x, g, input_grad, weight_grads)


def features(m: Map) -> tuple[int, int]:
    """(in_features, out_features)"""
    if isinstance(m, Tensor):
        return m.shape[1], m.shape[0]
    return m.in_features, m.out_features


def to_dense(m: Map) -> Tensor:
    return m if isinstance(m, Tensor) else m.to_dense()


def native_recurrent(m: Map, weight_hr: Map | None) -> NativeRecurrent | None:
    """The native form of W_hh `m` with projection `weight_hr` (see lstmkit/maps/native.py), or None. A structured
    projection runs fused, but with a map W_hh that takes it (int8 W_hh with int8 W_hr)."""
    if isinstance(m, Tensor):
        return NativeRecurrent("dense", m, weight_hr) if weight_hr is None or isinstance(weight_hr, Tensor) else None
    return m.native_recurrent(weight_hr)


def int8_form(m: Map | None) -> tuple[Tensor, Tensor] | None:
    """The map's (int8 weight, per-row scales) where it is an int8 map the native loop runs (LinearMap.int8_form)."""
    return None if m is None or isinstance(m, Tensor) else m.int8_form()


def flops(m: Map, rows: int) -> int:
    if isinstance(m, Tensor):
        return rows * m.shape[0] * m.shape[1]
    return m.flops(rows)
