"""What the weight structures share: the spec base (build, from_dense, repr), option checks, init and fitting."""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from lstmkit.maps.base import LinearMap
from lstmkit.maps.spec import MapSpec


class StructureSpec(MapSpec):
    """A MapSpec that is a frozen dataclass of options (its repr is the user-facing name, e.g. `LowRank(rank=64)`)
    and builds `map_class(in_features, out_features, **options)`.

    `from_dense(W)` is the map of this kind fitted to a trained (out, in) matrix; `pair_from_dense` fits the
    (input, recurrent) pair a `gates=` structure builds from [W_ih, W_hh].
    """

    map_class: type[LinearMap]

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def build(self, in_features: int, out_features: int, *, device=None, dtype=None) -> LinearMap:
        return self.map_class(in_features, out_features, **self.options(), device=device, dtype=dtype)

    def from_dense(self, weight: Tensor) -> LinearMap:
        return self.map_class.from_dense(weight, **self.options())

    def pair_from_dense(self, weight_ih: Tensor, weight_hh: Tensor) -> tuple[LinearMap, LinearMap]:
        return self.from_dense(weight_ih), self.from_dense(weight_hh)


def divides(what: str, k: int, size_name: str, size: int) -> None:
    """ValueError unless k divides size, naming both."""
    if size % k:
        raise ValueError(f"{what} must divide {size_name}={size}, got {k}")


def init_uniform_(t: Tensor, variance: float) -> Tensor:
    """U(-a, a) with variance a²/3 = `variance`, in place."""
    bound = math.sqrt(3 * variance)
    with torch.no_grad():
        return t.uniform_(-bound, bound)


def fit_entry_means_(m: LinearMap, weight: Tensor) -> LinearMap:
    """Least-squares fit of a map whose dense matrix copies each parameter into some entries (zeros elsewhere),
    such as a circulant block or a convolution: each parameter becomes the mean of the entries of `weight` it
    occupies. With A the (linear) map from parameters to `to_dense()`, that is Aᵀ W / Aᵀ 1, two vector-Jacobian
    products.
    """
    params = tuple(m.parameters())
    with torch.enable_grad():
        dense = m.to_dense()
        sums = torch.autograd.grad(dense, params, weight, retain_graph=True)
        counts = torch.autograd.grad(dense, params, torch.ones_like(weight))
    with torch.no_grad():
        for p, s, n in zip(params, sums, counts):
            p.copy_(s / n.clamp_min(1))  # entries that occupy nothing (padding) become 0
    return m
