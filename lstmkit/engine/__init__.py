"""The time loop: a readable reference, the fused hand-written BPTT and the native C++ loop, behind one dispatch."""
from __future__ import annotations

import torch

from lstmkit.engine.aten import aten_layer
from lstmkit.engine.bptt import fused_layer
from lstmkit.engine.native import auto_layer, native_layer
from lstmkit.engine.onnx import onnx_layer
from lstmkit.engine.reference import reference_layer

# "auto": native where it runs (compiled, CPU, float32/float64, dense W_hh and W_hr), else fused; on CUDA, a module
# of dense layers without peepholes runs torch's own kernel instead (lstmkit/engine/aten.py)
IMPLEMENTATIONS = {"auto": auto_layer, "fused": fused_layer, "native": native_layer, "reference": reference_layer}
# impl="aten": torch's own kernel for the whole module (aten.forward), so no per-layer function (aten_layer raises)
MODULE_IMPLEMENTATIONS = {"aten": aten_layer}


def layer_function(impl: str):
    """The per-layer, per-direction function for `impl` (see IMPLEMENTATIONS; MODULE_IMPLEMENTATIONS' raises);
    under `torch.onnx.export`, whatever `impl`, the graph-emitting `onnx_layer`."""
    try:
        run = IMPLEMENTATIONS[impl] if impl in IMPLEMENTATIONS else MODULE_IMPLEMENTATIONS[impl]
    except KeyError:
        raise ValueError(f"impl must be one of {sorted([*IMPLEMENTATIONS, *MODULE_IMPLEMENTATIONS])}, "
                         f"got {impl!r}") from None
    return onnx_layer if torch.onnx.is_in_onnx_export() else run


__all__ = ["auto_layer", "fused_layer", "native_layer", "reference_layer", "aten_layer", "onnx_layer",
           "layer_function", "IMPLEMENTATIONS", "MODULE_IMPLEMENTATIONS"]
