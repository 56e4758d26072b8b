"""MapSpec: how a user names a structure for a layer's weights (`recurrent=LowRank(rank=64)`), built per layer."""
from __future__ import annotations

from lstmkit.maps.base import LinearMap


class MapSpec:
    """A recipe for a LinearMap; `LSTM` calls `build` once per layer and direction and weight.

    `build_pair` is for structures of the joint gate matrix [W_ih, W_hh] (4H, I + P), such as F-LSTM's
    W ≈ W2·W1 over [x, h]: it returns the input map and the recurrent map, which may share parameters.
    """

    def build(self, in_features: int, out_features: int, *, device=None, dtype=None) -> LinearMap:
        raise NotImplementedError

    def build_pair(self, in_x: int, in_h: int, out_features: int, *, device=None,
                   dtype=None) -> tuple[LinearMap, LinearMap]:
        kw = {"device": device, "dtype": dtype}
        return self.build(in_x, out_features, **kw), self.build(in_h, out_features, **kw)
