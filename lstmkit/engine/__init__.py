"""The time loop: a readable reference and the fused hand-written BPTT, behind one dispatch."""
from __future__ import annotations

from lstmkit.engine.bptt import fused_layer
from lstmkit.engine.reference import reference_layer

IMPLEMENTATIONS = {"fused": fused_layer, "reference": reference_layer, "auto": fused_layer}


def layer_function(impl: str):
    """The per-layer, per-direction function for `impl` (see IMPLEMENTATIONS)."""
    try:
        return IMPLEMENTATIONS[impl]
    except KeyError:
        raise ValueError(f"impl must be one of {sorted(IMPLEMENTATIONS)}, got {impl!r}") from None


__all__ = ["fused_layer", "reference_layer", "layer_function", "IMPLEMENTATIONS"]
