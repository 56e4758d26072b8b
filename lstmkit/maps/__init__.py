"""Linear maps: the weight structures the engine runs (see ARCHITECTURE.md, "One idea carries it")."""
from lstmkit.maps.base import (LinearMap, Map, add_to, apply, apply_transpose, features, flops, int8_form,
                               native_recurrent, tensors, to_dense, vjp, weight_grads)
from lstmkit.maps.circulant import Circulant, CirculantMap
from lstmkit.maps.compose import Compose
from lstmkit.maps.conv import Conv, Conv2dMap, SeparableConv2dMap
from lstmkit.maps.dense import Dense
from lstmkit.maps.diagonal import Diagonal, DiagonalMap
from lstmkit.maps.grouped import Grouped, GroupedMap, MixedGroupedMap
from lstmkit.maps.lowrank import LowRank, LowRankMap
from lstmkit.maps.shared import Coupled, SharedGates, SharedGatesMap
from lstmkit.maps.spec import MapSpec
from lstmkit.maps.structure import StructureSpec
from lstmkit.maps.base import reference
from lstmkit.maps.quantized import BFloat16Map, Fixed16Map, Int8Map, QuantizedMap
from lstmkit.maps.sparse import Sparse, SparseMap

__all__ = ["LinearMap", "Map", "MapSpec", "Dense", "apply", "apply_transpose", "features", "flops", "tensors", "to_dense",
           "weight_grads", "vjp", "add_to", "native_recurrent", "int8_form",
           "StructureSpec", "Compose", "LowRank", "LowRankMap", "Grouped", "GroupedMap", "MixedGroupedMap", "Diagonal",
           "DiagonalMap", "Circulant", "CirculantMap", "SharedGates", "Coupled", "SharedGatesMap", "Conv", "Conv2dMap",
           "SeparableConv2dMap"]
__all__ += ["reference", "QuantizedMap", "Int8Map", "BFloat16Map", "Fixed16Map", "Sparse", "SparseMap"]
