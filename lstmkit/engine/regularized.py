"""The engine of layer-normalized and zoned layers: the reference loop, the fused hand-written BPTT or its native
(C++) loop, by impl.

Each takes the per-layer contract of lstmkit.engine plus a keyword `regularization` (regularized_cell.py). "auto"
and "fused" run the native loop where it can (regularized_native.runs: CPU float32/float64, dense W_hh, no
projection), else the fused Python loop. Under torch.compile, torch.export and torch.func's transforms both
(in-place buffers, an autograd.Function with a first derivative only) give way to the reference loop: plain ops
that every tracer and transform knows.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.engine.regularized_bptt import regularized_fused_layer
from lstmkit.engine.regularized_cell import Regularization
from lstmkit.engine.regularized_native import regularized_native_layer, runs
from lstmkit.engine.regularized_reference import refuse_peephole, regularized_reference_layer
from lstmkit.maps import Map


def regularized_auto_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map,
                           weight_hh: Map, bias: Tensor | None = None, peephole: Tensor | None = None,
                           weight_hr: Map | None = None, reverse: bool = False, *,
                           regularization: Regularization) -> tuple[Tensor, Tensor, Tensor]:
    """The native loop where it runs, else the fused loop; under a tracer or a torch.func transform the reference
    loop."""
    refuse_peephole(peephole)
    run = regularized_fused_layer
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        run = regularized_reference_layer
    elif runs(x, h0, c0, weight_hh, bias, weight_hr, regularization):
        run = regularized_native_layer
    return run(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, None, weight_hr, reverse,
               regularization=regularization)


IMPLEMENTATIONS = {"auto": regularized_auto_layer, "fused": regularized_auto_layer,
                   "reference": regularized_reference_layer}


def regularized_layer_function(impl: str, what: str):
    """The per-layer function of a layer with `what` ("layer_norm=True", "cell_zoneout=0.1", ...) for `impl`;
    raises, naming what is in the way, where `impl` or the context (ONNX export) has no such form."""
    if torch.onnx.is_in_onnx_export():
        raise RuntimeError(f"ONNX's LSTM operator has no layer norm or zoneout; this LSTM has {what}. Export it "
                           "with torch.export (which runs lstmkit's reference loop), or without these options")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"an LSTM with {what} runs on impl='auto', 'fused' or 'reference' (the first two run "
                         f"lstmkit's native layer-norm loop where they can; torch's kernel has no layer norm or "
                         f"zoneout); given impl={impl!r}")
    return IMPLEMENTATIONS[impl]
