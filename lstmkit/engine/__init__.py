"""The time loop: a readable reference, the fused hand-written BPTT and the native C++ loop, behind one dispatch."""
from __future__ import annotations

import torch

from lstmkit.engine.bptt import fused_layer
from lstmkit.engine.native import auto_layer, native_layer
from lstmkit.engine.onnx import onnx_layer
from lstmkit.engine.reference import reference_layer

# "auto": native where it runs (compiled, CPU, float32/float64, dense W_hh and W_hr), else fused
IMPLEMENTATIONS = {"auto": auto_layer, "fused": fused_layer, "native": native_layer, "reference": reference_layer}


def layer_function(impl: str):
    """The per-layer, per-direction function for `impl` (see IMPLEMENTATIONS); under `torch.onnx.export`, whatever
    `impl`, the graph-emitting `onnx_layer`."""
    try:
        run = IMPLEMENTATIONS[impl]
    except KeyError:
        raise ValueError(f"impl must be one of {sorted(IMPLEMENTATIONS)}, got {impl!r}") from None
    return onnx_layer if torch.onnx.is_in_onnx_export() else run


__all__ = ["auto_layer", "fused_layer", "native_layer", "reference_layer", "onnx_layer", "layer_function",
           "IMPLEMENTATIONS"]
