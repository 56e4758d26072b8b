"""Shared gates: gates that share one weight block, and the coupled input-forget gate f = 1 − i (CIFG)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmkit.maps.base import LinearMap
from lstmkit.maps.structure import StructureSpec, divides, init_uniform_

GATES = ("i", "f", "g", "o")


class SharedGatesMap(LinearMap):
    """A gate matrix whose four H-row blocks [i; f; g; o] are drawn from fewer distinct blocks: gate q's rows are
    sign_q · W_{block_q}, with weight (n_blocks·H, in). One GEMM for the distinct blocks, then a gather.

    The coupled input-forget gate (CIFG) is layout i → +W_0, f → −W_0: since σ(−a) = 1 − σ(a), a_f = −a_i gives
    f = 1 − i exactly, provided the bias is coupled too (b_f = −b_i); `gate_bias` applies that tie (the layer
    calls it on the summed bias, see LSTM._direction) when `tie_bias` is set.
    Init U(-1/√in, 1/√in).
    """

    def __init__(self, in_features: int, out_features: int, layout: tuple[tuple[int, int], ...],
                 tie_bias: bool = False, *, device=None, dtype=None):
        super().__init__()
        divides("4 (the gates i, f, g, o)", 4, "out_features", out_features)
        blocks, signs = zip(*layout)
        n = max(blocks) + 1
        if len(layout) != 4 or sorted(set(blocks)) != list(range(n)) or set(signs) - {1, -1}:
            raise ValueError(f"layout must give (block, ±1) for each of the gates {GATES} using blocks 0..n-1, "
                             f"got {layout}")
        self.in_features, self.out_features, self.layout, self.tie_bias = in_features, out_features, layout, tie_bias
        H = out_features // 4
        self.weight = nn.Parameter(torch.empty(n * H, in_features, device=device, dtype=dtype))
        init_uniform_(self.weight, 1 / (3 * in_features))
        self.register_buffer("index", torch.tensor(blocks, device=device), persistent=False)  # gate -> block
        self.register_buffer("sign", torch.tensor(signs, device=device, dtype=dtype).view(4, 1), persistent=False)
        self.signed = -1 in signs

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.linear(x, self.weight)  # (..., n·H): the distinct blocks
        y = y.unflatten(-1, (-1, self.out_features // 4)).index_select(-2, self.index)  # (..., 4, H)
        return (y * self.sign if self.signed else y).flatten(-2)

    def _block_grads(self, g: Tensor) -> Tensor:
        """(..., 4H) -> (..., n·H): Σ over the gates of each block of sign_q · g_q (the gather's adjoint)."""
        g = g.unflatten(-1, (4, self.out_features // 4))
        if self.signed:
            g = g * self.sign
        out = g.new_zeros(*g.shape[:-2], self.weight.shape[0] // g.shape[-1], g.shape[-1])
        return out.index_add_(-2, self.index, g).flatten(-2)

    def transpose(self, g: Tensor) -> Tensor:
        return self._block_grads(g) @ self.weight

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor]:
        return (self._block_grads(g).t() @ x,)  # (n·H, N) @ (N, in)

    def _expand(self, blocks: Tensor) -> Tensor:
        """(n·H, ...) -> (4H, ...): gate q gets sign_q · its block."""
        b = blocks.view(-1, self.out_features // 4, *blocks.shape[1:]).index_select(0, self.index)  # (4, H, ...)
        return (self.sign.view(4, *[1] * (b.dim() - 1)) * b).reshape(self.out_features, *blocks.shape[1:])

    def _block_means(self, t: Tensor) -> Tensor:
        """(4H, ...) -> (n·H, ...): each block the mean of sign_q · t_q over its gates, the least-squares fit of t
        by `_expand` (CIFG: (t_i − t_f)/2)."""
        rows = self.sign.view(4, *[1] * t.dim()) * t.view(4, -1, *t.shape[1:])  # (4, H, ...)
        counts = torch.bincount(self.index).to(t.dtype).view(-1, *[1] * t.dim())  # gates per block
        return (rows.new_zeros(counts.shape[0], *rows.shape[1:]).index_add_(0, self.index, rows) / counts
                ).reshape(-1, *t.shape[1:])

    def to_dense(self) -> Tensor:
        return self._expand(self.weight)

    def gate_bias(self, bias: Tensor) -> Tensor:
        """The (4H,) bias the gates use: with `tie_bias` its least-squares fit by the layout (CIFG: b_f = −b_i),
        otherwise the bias itself."""
        return self._expand(self._block_means(bias)) if self.tie_bias else bias

    @classmethod
    def from_dense(cls, weight: Tensor, layout: tuple[tuple[int, int], ...],
                   tie_bias: bool = False) -> "SharedGatesMap":
        """The least-squares fit: each block is the mean of sign_q · W_q over its gates."""
        m = cls(weight.shape[1], weight.shape[0], layout, tie_bias, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            m.weight.copy_(m._block_means(weight.detach()))
        return m

    def flops(self, rows: int) -> int:
        return rows * self.weight.shape[0] * self.in_features

    def extra_repr(self) -> str:
        named = ", ".join(f"{q}={'-' if s < 0 else ''}W{blk}" for q, (blk, s) in zip(GATES, self.layout))
        return f"in_features={self.in_features}, out_features={self.out_features}, {named}"


@dataclass(frozen=True, init=False)
class SharedGates(StructureSpec):
    """Gates that share one weight block: SharedGates(("i", "f", "o")) stores one block for i, f and o and one for g
    (2H rows instead of 4H); several sets may be given, SharedGates(("i", "f"), ("g", "o")). Biases stay per gate
    unless `tie_bias`."""

    sets: tuple[tuple[str, ...], ...]
    tie_bias: bool = False
    map_class = SharedGatesMap

    def __init__(self, *sets: tuple[str, ...], tie_bias: bool = False):
        sets = tuple(tuple(s) for s in sets)
        names = [q for s in sets for q in s]
        if not sets or any(len(s) < 2 for s in sets) or set(names) - set(GATES) or len(set(names)) < len(names):
            raise ValueError(f"SharedGates takes sets of at least two of the gates {GATES}, each gate in one set "
                             f"at most, e.g. SharedGates(('i', 'f', 'o')); got {sets}")
        object.__setattr__(self, "sets", sets)
        object.__setattr__(self, "tie_bias", bool(tie_bias))

    def options(self) -> dict:
        groups = [*self.sets, *((q,) for q in GATES if all(q not in s for s in self.sets))]
        groups.sort(key=lambda s: min(GATES.index(q) for q in s))  # blocks numbered by their first gate
        block = {q: j for j, s in enumerate(groups) for q in s}
        return {"layout": tuple((block[q], 1) for q in GATES), "tie_bias": self.tie_bias}


@dataclass(frozen=True)
class Coupled(StructureSpec):
    """The coupled input-forget gate (CIFG), f = 1 − i: W_f = −W_i and b_f = −b_i, 3H rows instead of 4H.
    Use it as gates=Coupled() (W_ih and W_hh both coupled); on only one of them the other stays free, so f ≠ 1 − i."""

    map_class = SharedGatesMap

    def options(self) -> dict:
        return {"layout": ((0, 1), (0, -1), (1, 1), (2, 1)), "tie_bias": True}
