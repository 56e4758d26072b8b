"""Linear maps: the weight structures the engine runs (see ARCHITECTURE.md, "One idea carries it")."""
from lstmkit.maps.base import (LinearMap, Map, apply, apply_transpose, features, flops, tensors, to_dense,
                               weight_grads)
from lstmkit.maps.dense import Dense

__all__ = ["LinearMap", "Map", "Dense", "apply", "apply_transpose", "features", "flops", "tensors", "to_dense",
           "weight_grads"]
