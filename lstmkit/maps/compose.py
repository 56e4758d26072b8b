"""Compose: the product of two maps, y = outer(inner(x)), with its adjoint and weight gradients by the chain rule."""
from __future__ import annotations

from torch import Tensor

from lstmkit.maps.base import LinearMap
from lstmkit.maps.native import NativeRecurrent


class Compose(LinearMap):
    """W = W_outer · W_inner (out, in), both LinearMap modules (a low-rank pair, a depthwise then pointwise conv).

    Parameters are the inner map's, then the outer map's; an outer map may be shared with another Compose
    (the joint low-rank gates share W2), and its gradient then accumulates from both.
    """

    def __init__(self, inner: LinearMap, outer: LinearMap):
        super().__init__()
        if inner.out_features != outer.in_features:
            raise ValueError(f"outer.in_features must equal inner.out_features={inner.out_features}, "
                             f"got {outer.in_features}")
        self.inner, self.outer = inner, outer
        self.in_features, self.out_features = inner.in_features, outer.out_features

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., mid) -> (..., out)
        return self.outer(self.inner(x))

    def transpose(self, g: Tensor) -> Tensor:  # (AB)ᵀ g = Bᵀ (Aᵀ g)
        return self.inner.transpose(self.outer.transpose(g))

    def to_dense(self) -> Tensor:
        return self.outer.to_dense() @ self.inner.to_dense()  # (out, mid) @ (mid, in)

    def flops(self, rows: int) -> int:
        return self.inner.flops(rows) + self.outer.flops(rows)

    def native_recurrent(self, weight_hr: Tensor | None) -> NativeRecurrent | None:
        """Two dense factors W_hh = U V in a layer without projection run as the loop's low-rank kind."""
        U, V = self.outer.dense_weight(), self.inner.dense_weight()
        return NativeRecurrent("low-rank", U, V) if weight_hr is None and U is not None and V is not None else None

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor | None, ...]:
        # sum(A(B(x)) * g): A's gradients at (B x, g), B's at (x, Aᵀ g)
        return (*self.inner.weight_grads(x, self.outer.transpose(g)), *self.outer.weight_grads(self.inner(x), g))

    def vjp(self, x: Tensor, g: Tensor, input_grad: bool = True, weight_grads: bool = True):
        # the outer map's adjoint Aᵀ g once, for both the input gradient and the inner map's weight gradients
        g_mid = self.outer.transpose(g)
        dx = self.inner.transpose(g_mid) if input_grad else None
        if not weight_grads:
            return dx, (None,) * len(tuple(self.parameters()))
        return dx, (*self.inner.weight_grads(x, g_mid), *self.outer.weight_grads(self.inner(x), g))
