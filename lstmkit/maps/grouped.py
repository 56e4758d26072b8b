"""Grouped weights (G-LSTM, Kuchaiev & Ginsburg 2017): k independent groups, a block-diagonal matrix run as one bmm."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmkit import checks
from lstmkit.maps.base import LinearMap
from lstmkit.maps.compose import Compose
from lstmkit.maps.dense import Dense
from lstmkit.maps.lowrank import LowRankMap
from lstmkit.maps.native import GROUP_UNITS, NativeRecurrent
from lstmkit.maps.structure import StructureSpec, divides, init_uniform_


def by_group(t: Tensor, groups: int, gates: int) -> Tensor:
    """(N, out) -> (k, N, gates·h): the output features each group owns, gate-major (see GroupedMap's layout)."""
    k, q, h = groups, gates, t.shape[-1] // (gates * groups)
    return t.reshape(-1, q, k, h).permute(2, 0, 1, 3).reshape(k, -1, q * h)


class GroupedMap(LinearMap):
    """Block-diagonal W: inputs and outputs split into k groups, each group's outputs computed from its own
    inputs by its own block: in·out/k parameters and multiply-adds per row, all k blocks in one bmm.

    Layout: the output is `gates` stacked row blocks of H = out/gates rows ([i; f; g; o] of a gate matrix:
    gates=4; a projection: gates=1). Group j owns rows j·H/k..(j+1)·H/k of EACH block, so the hidden units
    j·H/k..(j+1)·H/k are a small LSTM of their own, and inputs j·in/k..(j+1)·in/k.
    weight (k, gates·h, c) with h = H/k, c = in/k: group j's block, its rows gate-major.
    Init U(-1/√c, 1/√c): each output sees c inputs.
    """

    def __init__(self, in_features: int, out_features: int, groups: int, gates: int = 4, *, device=None,
                 dtype=None):
        super().__init__()
        checks.positive_int("groups", groups)
        checks.positive_int("gates", gates)
        divides("gates", gates, "out_features", out_features)
        divides("groups", groups, "out_features / gates", out_features // gates)
        divides("groups", groups, "in_features", in_features)
        self.in_features, self.out_features, self.groups, self.gates = in_features, out_features, groups, gates
        c, h = in_features // groups, out_features // (gates * groups)
        self.weight = nn.Parameter(torch.empty(groups, gates * h, c, device=device, dtype=dtype))
        init_uniform_(self.weight, 1 / (3 * c))

    closed_form_backward = True

    def _blocks(self):
        """(group j, gate p, W_j's rows of gate p (h, c), the output columns they give, the input columns they read)
        for every block of the block-diagonal W."""
        k, q = self.groups, self.gates
        c, h = self.in_features // k, self.out_features // (q * k)
        for j in range(k):
            for p in range(q):
                col = p * k * h + j * h  # gate p's block of H = k·h outputs, group j's h of them
                yield j, p, self.weight[j, p * h:(p + 1) * h], slice(col, col + h), slice(j * c, (j + 1) * c)

    def _by_blocks(self, t: Tensor) -> bool:
        """Whether to run one product per group and gate on column blocks of `t` as they lie (no regrouping
        copy): faster than the bmm for many rows (the hoisted input product over all T·B rows), slower for one
        step's; without autograd only (in-place products into views)."""
        grad = torch.is_grad_enabled() and (t.requires_grad or self.weight.requires_grad)
        return t[..., 0].numel() >= 1024 and not grad

    def forward(self, x: Tensor) -> Tensor:
        k, q, lead = self.groups, self.gates, x.shape[:-1]
        if self._by_blocks(x):
            x = x.reshape(-1, self.in_features)
            y = x.new_empty(x.shape[0], self.out_features)
            for _, _, w, out_cols, in_cols in self._blocks():
                y[:, out_cols].addmm_(x[:, in_cols], w.t(), beta=0)
            return y.reshape(*lead, self.out_features)
        xs = x.reshape(-1, k, self.in_features // k).transpose(0, 1)  # (k, N, c)
        y = torch.bmm(xs, self.weight.transpose(1, 2))  # (k, N, gates·h)
        return y.view(k, -1, q, y.shape[-1] // q).permute(1, 2, 0, 3).reshape(*lead, self.out_features)

    def transpose(self, g: Tensor) -> Tensor:
        if self._by_blocks(g):
            g2 = g.reshape(-1, self.out_features)
            x = g2.new_empty(g2.shape[0], self.in_features)
            for _, p, w, out_cols, in_cols in self._blocks():
                x[:, in_cols].addmm_(g2[:, out_cols], w, beta=0 if p == 0 else 1)  # Σ over the gates
            return x.reshape(*g.shape[:-1], self.in_features)
        xs = torch.bmm(by_group(g, self.groups, self.gates), self.weight)  # (k, N, c)
        return xs.transpose(0, 1).reshape(*g.shape[:-1], self.in_features)

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor]:
        """dW_j = g_jᵀ x_j, one product per group and gate on column blocks of g and x as they lie: regrouping
        the (T·B, out) g first (by_group) would copy all of it, slower here than the products themselves."""
        k, q = self.groups, self.gates
        x, g = x.reshape(-1, self.in_features), g.reshape(-1, self.out_features)
        dw = g.new_empty(k, q * (self.out_features // (q * k)), self.in_features // k)
        with torch.no_grad():  # closed form: no graph through it (and out= takes none)
            for j, p, w, out_cols, in_cols in self._blocks():
                torch.mm(g[:, out_cols].t(), x[:, in_cols], out=dw[j, p * w.shape[0]:(p + 1) * w.shape[0]])
        return (dw,)

    def to_dense(self) -> Tensor:
        k, q = self.groups, self.gates
        w = self.weight.view(k, q, -1, self.in_features // k)  # (k, gates, h, c)
        eye = torch.eye(k, dtype=w.dtype, device=w.device)
        return torch.einsum("jqhc,jl->qjhlc", w, eye).reshape(self.out_features, self.in_features)

    @classmethod
    def from_dense(cls, weight: Tensor, groups: int, gates: int = 4) -> "GroupedMap":
        """The diagonal blocks, off-diagonal blocks dropped: the least-squares block-diagonal fit."""
        out_features, in_features = weight.shape
        m = cls(in_features, out_features, groups, gates, device=weight.device, dtype=weight.dtype)
        rows = by_group(weight.detach().t(), groups, gates).view(groups, groups, -1, out_features // groups)
        with torch.no_grad():
            m.weight.copy_(rows.diagonal(dim1=0, dim2=1).permute(2, 1, 0))  # group j's rows, its own columns
        return m

    def flops(self, rows: int) -> int:
        return rows * self.in_features * self.out_features // self.groups

    def native_recurrent(self, weight_hr: Tensor | None) -> NativeRecurrent | None:
        """The blocks' rows (4H, H / groups) in gate-major order, row q·H + u holding unit u's gate q on its own group
        of h_{t-1}, through autograd; when each group is whole vectors of units and there is no projection."""
        k, c = self.groups, self.in_features // self.groups
        if not (weight_hr is None and self.gates == 4 and self.in_features * 4 == self.out_features
                and c % GROUP_UNITS == 0):
            return None
        rows = self.weight.view(k, 4, -1, c).permute(1, 0, 2, 3).reshape(self.out_features, c)
        return NativeRecurrent("grouped", rows, groups=k)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}, "
                f"gates={self.gates}")


class MixedGroupedMap(Compose):
    """Groups preceded by a dense in×in projection that mixes them: W = BlockDiag·M (the paper's G-LSTM followed by
    LSTMP's dense projection, folded into the map so that the groups exchange features without proj_size).

    Per group j, W's rows are B_j M_j with M_j = M's rows of group j (c, in): a rank-c factor of those rows,
    so the least-squares fit is a truncated SVD per group (one batched SVD).
    Init: M ~ U(-√(3/in), √(3/in)) (unit gain), the blocks U(-1/√c, 1/√c).
    """

    def __init__(self, in_features: int, out_features: int, groups: int, gates: int = 4, *, device=None,
                 dtype=None):
        kw = {"device": device, "dtype": dtype}
        blocks = GroupedMap(in_features, out_features, groups, gates, **kw)
        mix = Dense(in_features, in_features, **kw)
        init_uniform_(mix.weight, 1 / in_features)
        super().__init__(mix, blocks)

    @classmethod
    def from_dense(cls, weight: Tensor, groups: int, gates: int = 4) -> "MixedGroupedMap":
        out_features, in_features = weight.shape
        m = cls(in_features, out_features, groups, gates, device=weight.device, dtype=weight.dtype)
        c = in_features // groups
        rows = by_group(weight.t(), groups, gates).transpose(1, 2)  # (k, gates·h, in): the rows of each group
        w1, w2 = LowRankMap.factors(rows, c)  # (k, r, in), (k, gates·h, r)
        r = w1.shape[1]  # c, or gates·h when a group has fewer rows than inputs
        with torch.no_grad():
            m.inner.weight.zero_().view(groups, c, in_features)[:, :r].copy_(w1)
            m.outer.weight.zero_()[:, :, :r].copy_(w2)
        return m


@dataclass(frozen=True)
class Grouped(StructureSpec):
    """G-LSTM groups: `groups` independent blocks (block-diagonal); `mix=True` puts a dense projection that mixes
    the groups before them (MixedGroupedMap). `gates`: row blocks of the output, 4 for W_ih and W_hh, 1 for the
    projection W_hr (`projection=Grouped(k, gates=1)`)."""

    groups: int
    mix: bool = False
    gates: int = 4

    def __post_init__(self):
        checks.positive_int("groups", self.groups)
        checks.positive_int("gates", self.gates)

    @property
    def map_class(self) -> type[LinearMap]:
        return MixedGroupedMap if self.mix else GroupedMap

    def options(self) -> dict:
        return {"groups": self.groups, "gates": self.gates}
