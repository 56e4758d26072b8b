"""Sparse weights (pruning): W ⊙ M with a 0/1 mask M chosen by magnitude, unstructured or load-balanced (ESE).

Training runs the masked dense product, so the gradient of every pruned weight is exactly zero; inference at
high sparsity runs a CSR sparse product (torch.sparse.mm), which the compress benchmark measures against dense.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmkit import checks
from lstmkit.maps.base import LinearMap
from lstmkit.maps.structure import StructureSpec, divides, init_uniform_

MODES = ("unstructured", "balanced")

# Inference uses the CSR product from this sparsity on, per number of input rows: measured by
# `lstmkit bench --study compress` (BENCHMARKS.md, the sparse sweep). A per-step product (rows = batch) gains
# from about 75 % sparsity; the hoisted input product over all T·B rows only from about 90 %.
CSR_MIN_SPARSITY = ((512, 0.75), (math.inf, 0.9))  # (up to this many rows, minimum sparsity)


def check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a number in [0, 1) (the fraction of weights set to zero), "
                         f"got {sparsity!r}")
    return float(sparsity)


def magnitude_mask(weight: Tensor, sparsity: float, mode: str = "unstructured", block: int = 1) -> Tensor:
    """The bool mask (out, in) keeping the largest |W|: round((1 - sparsity)·n) of the n entries.

    unstructured: the largest of the whole matrix. balanced: rows in blocks of `block` consecutive rows, every
    block keeping the same number of its largest entries, so that parallel workers owning blocks get equal work
    (ESE's load-balance-aware pruning, Han et al. 2017). Ties keep the earlier entry.
    """
    check_sparsity(sparsity)
    if mode not in MODES:
        raise ValueError(f"pruning mode must be one of {', '.join(MODES)}, got {mode!r}")
    out_features = weight.shape[0]
    checks.positive_int("block", block)
    if mode == "balanced":
        divides("block", block, "out_features", out_features)
    groups = weight.detach().abs().reshape(out_features // block if mode == "balanced" else 1, -1)  # (blocks, n)
    keep = round((1 - sparsity) * groups.shape[1])
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(1, groups.topk(keep, dim=1, sorted=False).indices, True)
    return mask.view(weight.shape)


def use_csr(sparsity: float, rows: int) -> bool:
    """Whether the CSR product beats the dense one for `rows` input rows (see CSR_MIN_SPARSITY)."""
    return sparsity >= next(s for limit, s in CSR_MIN_SPARSITY if rows <= limit)


class SparseMap(LinearMap):
    """y = x (W ⊙ M)ᵀ: weight W (out, in) a parameter, mask M (out, in) a bool buffer (saved in the state dict).

    The mask is applied in forward, transpose, to_dense and weight_grads, so a pruned weight has no effect and
    its gradient is zero: optimizer steps keep the effective weights W ⊙ M pruned (Adam's moments of a pruned
    entry stay zero, and a stored value left from before pruning is masked). `prune_(sparsity)` re-prunes by
    the magnitude of the effective weights. Without autograd (inference, the engine's time loop), the masked
    matrix is used, and in eval mode cached until the weight or the mask changes, in CSR form at high sparsity.
    """

    def __init__(self, in_features: int, out_features: int, sparsity: float = 0.0, mode: str = "unstructured",
                 block: int = 1, *, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.mode, self.block = in_features, out_features, mode, block
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        init_uniform_(self.weight, 1 / (3 * in_features))
        self.register_buffer("mask", magnitude_mask(self.weight, sparsity, mode, block))
        self._cache: tuple = (None, None)  # (key, masked dense or CSR matrix)
        self._nnz: tuple = (None, 0)  # (key, nonzeros)

    def train(self, mode: bool = True) -> "SparseMap":
        self._cache = (None, None)
        return super().train(mode)

    @property
    def nonzeros(self) -> int:
        """The kept entries (cached until the mask changes)."""
        key = (self.mask._version, self.mask.data_ptr())
        if self._nnz[0] != key:
            self._nnz = (key, int(self.mask.count_nonzero()))
        return self._nnz[1]

    @property
    def sparsity(self) -> float:
        """The fraction of pruned entries."""
        return 1.0 - self.nonzeros / self.mask.numel()

    @torch.no_grad()
    def prune_(self, sparsity: float) -> None:
        """Prune to `sparsity` by the magnitude of W ⊙ M (pruned entries stay pruned) and zero what is pruned."""
        self.mask.copy_(magnitude_mask(self.weight * self.mask, sparsity, self.mode, self.block))
        self.weight.mul_(self.mask)

    def _masked(self, csr: bool = False) -> Tensor:
        """W ⊙ M without autograd history. Training mode: computed afresh (the weights change every step). Eval
        mode: cached until the weight or the mask changes (seen by their version counters, so not a change made
        through `.data`: call `train()` then `eval()` to refresh), as a CSR matrix if `csr`."""
        if self.training:
            with torch.no_grad():
                return self.weight * self.mask  # (out, in)
        key = (self.weight._version, self.mask._version, self.weight.data_ptr(), self.weight.dtype, csr)
        if self._cache[0] != key:
            with torch.no_grad(), warnings.catch_warnings():  # "sparse CSR is in beta": measured, not assumed
                warnings.simplefilter("ignore", UserWarning)
                w = self.weight * self.mask  # (out, in)
                self._cache = (key, w.to_sparse_csr() if csr else w)
        return self._cache[1]

    def _autograd(self) -> bool:
        return torch.is_grad_enabled() and self.weight.requires_grad

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        if self._autograd():
            return nn.functional.linear(x, self.weight * self.mask)  # dW = (gᵀx) ⊙ M
        rows = x.numel() // self.in_features
        if self.training or not use_csr(self.sparsity, rows):  # training: the weights change every step
            return nn.functional.linear(x, self._masked())
        y = torch.sparse.mm(self._masked(csr=True), x.reshape(rows, self.in_features).t())  # (out, rows)
        return y.t().reshape(*x.shape[:-1], self.out_features)

    def transpose(self, g: Tensor) -> Tensor:  # (..., out) -> (..., in)
        return g @ (self.weight * self.mask if self._autograd() else self._masked())

    def to_dense(self) -> Tensor:
        return self.weight * self.mask

    @classmethod
    def from_dense(cls, weight: Tensor, sparsity: float = 0.0, mode: str = "unstructured",
                   block: int = 1) -> "SparseMap":
        """W with its smallest entries pruned (see `magnitude_mask`)."""
        m = cls(weight.shape[1], weight.shape[0], 0.0, mode, block, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            m.weight.copy_(weight)
        m.prune_(sparsity)
        return m

    def flops(self, rows: int) -> int:
        """Multiply-adds of the sparse product: rows · nonzeros."""
        return rows * self.nonzeros

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor]:
        return ((g.t() @ x) * self.mask,)  # d(W ⊙ M) / dW = M

    def extra_repr(self) -> str:
        block = f", block={self.block}" if self.mode == "balanced" else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"sparsity={self.sparsity:.3f}, mode={self.mode}{block}")


@dataclass(frozen=True)
class Sparse(StructureSpec):
    """A magnitude-pruned matrix at `sparsity` (see `magnitude_mask`); `build` prunes the random init."""

    sparsity: float
    mode: str = "unstructured"
    block: int = 1
    map_class = SparseMap

    def __post_init__(self):
        check_sparsity(self.sparsity)
        if self.mode not in MODES:
            raise ValueError(f"pruning mode must be one of {', '.join(MODES)}, got {self.mode!r}")
