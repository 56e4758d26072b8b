"""Dense: the plain weight matrix as a LinearMap module (the reference every structure is tested against)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lstmkit.maps.base import LinearMap


class Dense(LinearMap):
    """y = x W^T with W of shape (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, *, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        bound = 1.0 / math.sqrt(out_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight)

    def transpose(self, g: Tensor) -> Tensor:
        return g @ self.weight

    def to_dense(self) -> Tensor:
        return self.weight

    def dense_weight(self) -> Tensor:
        return self.weight

    @classmethod
    def from_dense(cls, weight: Tensor) -> "Dense":
        m = cls(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            m.weight.copy_(weight)
        return m

    def flops(self, rows: int) -> int:
        return rows * self.in_features * self.out_features

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor]:
        return (g.t() @ x,)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
