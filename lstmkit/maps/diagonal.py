"""Diagonal recurrence (IndRNN-style): one diagonal per gate, a_q = u_q ⊙ h_{t-1}, optionally bounded."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmkit import checks
from lstmkit.maps.base import LinearMap
from lstmkit.maps.native import NativeRecurrent
from lstmkit.maps.structure import StructureSpec
from lstmkit.rowsum import sum_of_products

EDGE = 1 - 1e-6  # |u| / bound is kept below this when fitting a bounded diagonal (atanh(±1) is infinite)


class DiagonalMap(LinearMap):
    """W = [diag(u_i); diag(u_f); diag(u_g); diag(u_o)] (out, in) with out = gates·in: each hidden unit sees only
    its own previous value, so the recurrent map costs O(H) instead of O(H²) (needs P == H).

    `bound`: None keeps u = weight free; a positive float parametrizes u = bound·tanh(weight), so |u| < bound for
    any weight, which keeps the recurrence from exploding on long sequences.
    weight (gates, in); init U(-1, 1) (each output sees one input).
    """

    def __init__(self, in_features: int, out_features: int, bound: float | None = None, gates: int = 4, *,
                 device=None, dtype=None):
        super().__init__()
        checks.positive_int("gates", gates)
        if out_features != gates * in_features:
            raise ValueError(f"a diagonal map needs out_features == gates * in_features (one diagonal of size in per "
                             f"gate; for W_hh: P == H), expected out_features={gates * in_features} for "
                             f"in_features={in_features}, got out_features={out_features}")
        self.in_features, self.out_features, self.gates, self.bound = in_features, out_features, gates, bound
        self.weight = nn.Parameter(torch.empty(gates, in_features, device=device, dtype=dtype))
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def diagonals(self) -> Tensor:  # (gates, in): u
        return self.weight if self.bound is None else self.bound * torch.tanh(self.weight)

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., gates, in) -> (..., out)
        return (x.unsqueeze(-2) * self.diagonals()).flatten(-2)

    def native_recurrent(self, weight_hr: Tensor | None) -> NativeRecurrent | None:
        """The four gates' diagonals, added in the loop's pointwise step (no recurrent product); no projection.
        u = bound·tanh(w) is formed through autograd, so dL/dw follows from the loop's dL/du."""
        return NativeRecurrent("diagonal", self.diagonals()) if weight_hr is None and self.gates == 4 else None

    def add_to(self, x: Tensor, out: Tensor) -> None:  # out_q += u_q ⊙ x in one pass
        out.view(*out.shape[:-1], self.gates, self.in_features).addcmul_(x.unsqueeze(-2), self.diagonals())

    def transpose(self, g: Tensor) -> Tensor:  # Σ_q u_q ⊙ g_q
        return (g.unflatten(-1, (self.gates, self.in_features)) * self.diagonals()).sum(-2)

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor]:
        x = x.reshape(-1, 1, self.in_features)  # (N, 1, in)
        du = sum_of_products(g.reshape(-1, self.gates, self.in_features), x)  # Σ_n g_q ⊙ x, (gates, in)
        if self.bound is None:
            return (du,)
        return (du * self.bound * (1 - torch.tanh(self.weight) ** 2),)  # u = b·tanh(w): du/dw = b·(1 - tanh²)

    def to_dense(self) -> Tensor:
        eye = torch.eye(self.in_features, dtype=self.weight.dtype, device=self.weight.device)
        return (self.diagonals().unsqueeze(-1) * eye).reshape(self.out_features, self.in_features)

    @classmethod
    def from_dense(cls, weight: Tensor, bound: float | None = None, gates: int = 4) -> "DiagonalMap":
        """Each gate block's diagonal (the least-squares diagonal fit), clipped into (-bound, bound) if bounded."""
        out_features, in_features = weight.shape
        m = cls(in_features, out_features, bound, gates, device=weight.device, dtype=weight.dtype)
        u = weight.detach().reshape(gates, in_features, in_features).diagonal(dim1=1, dim2=2)  # (gates, in)
        with torch.no_grad():
            m.weight.copy_(u if bound is None else torch.atanh((u / bound).clamp(-EDGE, EDGE)))
        return m

    def flops(self, rows: int) -> int:
        return rows * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bound={self.bound}"


@dataclass(frozen=True)
class Diagonal(StructureSpec):
    """One diagonal per gate (recurrent=Diagonal(), with P == H): a_q = u_q ⊙ h_{t-1}. `bound`: |u| < bound via
    u = bound·tanh(w), None for free u. `gates`: diagonals stacked in the output (4 for a gate matrix)."""

    bound: float | None = None
    gates: int = 4
    map_class = DiagonalMap

    def __post_init__(self):
        checks.positive_int("gates", self.gates)
        if self.bound is not None and not self.bound > 0:
            raise ValueError(f"bound must be a positive float or None, got {self.bound!r}")
