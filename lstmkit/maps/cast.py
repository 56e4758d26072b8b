"""OwnDtype: a map run in its own dtype inside a layer that computes in another (autocast)."""
from __future__ import annotations

from torch import Tensor

from lstmkit.maps.base import LinearMap


class OwnDtype(LinearMap):
    """`inner` computing in its own dtype: inputs cast to it, results back to the caller's. `LinearMap.cast` of a map
    whose ops have no kernel in the autocast dtype (the FFT of a circulant map) or that keeps its own precision (a
    quantized map). Its parameters are inner's: their gradients arrive in inner's dtype."""

    def __init__(self, inner: LinearMap):
        super().__init__()
        self.inner = inner
        self.in_features, self.out_features = inner.in_features, inner.out_features
        self.closed_form_backward = inner.closed_form_backward

    def _own(self, t: Tensor) -> Tensor:
        return t.to(self.inner.reference().dtype)

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        return self.inner(self._own(x)).to(x.dtype)

    def transpose(self, g: Tensor) -> Tensor:  # (..., out) -> (..., in)
        return self.inner.transpose(self._own(g)).to(g.dtype)

    def to_dense(self) -> Tensor:
        return self.inner.to_dense()

    def flops(self, rows: int) -> int:
        return self.inner.flops(rows)

    def reference(self) -> Tensor:
        return self.inner.reference()

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor | None, ...]:
        return self.inner.weight_grads(self._own(x), self._own(g))

    def vjp(self, x: Tensor, g: Tensor, input_grad: bool = True,
            weight_grads: bool = True) -> tuple[Tensor | None, tuple[Tensor | None, ...]]:
        dx, dw = self.inner.vjp(self._own(x), self._own(g), input_grad, weight_grads)
        return (None if dx is None else dx.to(x.dtype)), dw

    def cast(self, dtype) -> "OwnDtype":
        return self
