"""Low-rank weights (F-LSTM, Kuchaiev & Ginsburg 2017): W ≈ W2·W1 of rank r, per matrix or on the joint [W_ih, W_hh]."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lstmkit import checks
from lstmkit.maps.compose import Compose
from lstmkit.maps.dense import Dense
from lstmkit.maps.structure import StructureSpec, init_uniform_


def check_rank(rank: int, in_features: int, out_features: int) -> None:
    if not 1 <= rank <= min(in_features, out_features):
        raise ValueError(f"rank must be in [1, min(in_features, out_features)] = [1, {min(in_features, out_features)}]"
                         f" for a ({out_features}, {in_features}) matrix, got {rank}")


class LowRankMap(Compose):
    """y = W2 (W1 x) with W1 (r, in) = `inner.weight`, W2 (out, r) = `outer.weight`: r·(in + out) parameters and
    multiply-adds per row instead of in·out. Forward, transpose and weight gradients are two GEMMs each (Compose).

    `outer` may be given to share W2 (the joint gate matrix, see `LowRank.build_pair`).
    Init: W1 and W2 alike, so that W2·W1's entries have variance 1/(3·fan_in) as U(-1/√in, 1/√in) has.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, outer: Dense | None = None,
                 fan_in: int | None = None, device=None, dtype=None):
        fan_in = fan_in or in_features  # in_x + in_h for the joint gate matrix
        check_rank(rank, fan_in, out_features)
        kw = {"device": device, "dtype": dtype}
        variance = (3 * fan_in * rank) ** -0.5  # r·variance² = 1/(3·fan_in)
        if outer is None:
            outer = Dense(rank, out_features, **kw)
            init_uniform_(outer.weight, variance)
        super().__init__(Dense(in_features, rank, **kw), outer)
        init_uniform_(self.inner.weight, variance)
        self.rank = rank

    @staticmethod
    def factors(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
        """The truncated SVD W ≈ U_r S_r V_rᵀ split evenly: W1 = S_r^½ V_rᵀ (r, in), W2 = U_r S_r^½ (out, r);
        the best rank-r approximation in Frobenius norm (Eckart-Young), exact at full rank. Batched over leading
        dims; r is cut to min(out, in) where it exceeds it."""
        U, S, Vh = torch.linalg.svd(weight.detach(), full_matrices=False)  # batched over leading dims
        root = S[..., :rank].sqrt()
        return root[..., :, None] * Vh[..., :rank, :], U[..., :rank] * root[..., None, :]

    @classmethod
    def from_dense(cls, weight: Tensor, rank: int) -> "LowRankMap":
        out_features, in_features = weight.shape
        m = cls(in_features, out_features, rank, device=weight.device, dtype=weight.dtype)
        w1, w2 = cls.factors(weight, rank)
        with torch.no_grad():
            m.inner.weight.copy_(w1)
            m.outer.weight.copy_(w2)
        return m

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


@dataclass(frozen=True)
class LowRank(StructureSpec):
    """W ≈ W2·W1 with rank `rank`: on one matrix (input=, recurrent=, projection=) or, as gates=, on the joint
    [W_ih, W_hh] (4H, I+P) = W2·[W1x, W1h]: the input and recurrent maps share W2 (F-LSTM)."""

    rank: int
    map_class = LowRankMap

    def __post_init__(self):
        checks.positive_int("rank", self.rank)

    def build_pair(self, in_x: int, in_h: int, out_features: int, *, device=None, dtype=None):
        kw = {"device": device, "dtype": dtype, "fan_in": in_x + in_h}
        w_ih = LowRankMap(in_x, out_features, self.rank, **kw)
        w_hh = LowRankMap(in_h, out_features, self.rank, outer=w_ih.outer, **kw)
        return w_ih, w_hh

    def pair_from_dense(self, weight_ih: Tensor, weight_hh: Tensor) -> tuple[LowRankMap, LowRankMap]:
        """The truncated SVD of the joint [W_ih, W_hh], its W1 split by columns into W1x and W1h."""
        joint = torch.cat((weight_ih, weight_hh), 1)  # (4H, I + P)
        w_ih, w_hh = self.build_pair(weight_ih.shape[1], weight_hh.shape[1], joint.shape[0], device=joint.device,
                                     dtype=joint.dtype)
        w1, w2 = LowRankMap.factors(joint, self.rank)
        with torch.no_grad():
            w_ih.outer.weight.copy_(w2)
            w_ih.inner.weight.copy_(w1[:, :weight_ih.shape[1]])
            w_hh.inner.weight.copy_(w1[:, weight_ih.shape[1]:])
        return w_ih, w_hh
