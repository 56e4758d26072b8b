"""Linear maps: the weight structures the engine runs (see ARCHITECTURE.md, "One idea carries it")."""
from lstmkit.maps.base import (LinearMap, Map, apply, apply_transpose, features, flops, tensors, to_dense,
                               weight_grads)
from lstmkit.maps.dense import Dense
from lstmkit.maps.spec import MapSpec

__all__ = ["LinearMap", "Map", "MapSpec", "Dense", "apply", "apply_transpose", "features", "flops", "tensors", "to_dense",
           "weight_grads"]
