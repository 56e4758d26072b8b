"""The native engine: the whole time loop of one layer and direction in C++ (lstmkit/csrc), for dense weights on CPU.

Built on first use by lstmkit/engine/build.py; where it cannot be, "auto" runs the PyTorch fused path. It runs
float32 and float64, dense layers with bf16 operands: a bfloat16 module, or float32 under CPU autocast to bf16, and
int8 maps (`compress.quantize(model, "int8")`) in inference: the op lstmkit::lstm_forward_int8 (ops_int8.py).
"""
from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

import torch
from torch import Tensor

from lstmkit import autocast, maps
from lstmkit.engine import op_autograd, op_vmap, ops, ops_int8  # noqa: F401 (registers the ops and their rules)
from lstmkit.engine.bptt import fused_layer
from lstmkit.engine.build import available, extension  # noqa: F401 (re-exported)
from lstmkit.engine.dispatch import kernel_may_run
from lstmkit.engine.inference import needs_grad
from lstmkit.engine.reference import reference_layer
from lstmkit.engine.transforms import differentiating_transform
from lstmkit.maps import Map
from lstmkit.maps.native import NativeRecurrent


def native_form(weight_hh: Map, weight_hr: Map | None) -> NativeRecurrent | None:
    """How the native loop runs W_hh and W_hr: the map's own answer (lstmkit/maps/native.py), or None."""
    return maps.native_recurrent(weight_hh, weight_hr)


def _precision(form: NativeRecurrent | None, x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Map,
               bias: Tensor | None, peephole: Tensor | None) -> str | None:
    """The op's precision for these operands (lstmkit/engine/ops.py), or None where the native loop can't run them:
    "bf16" for a dense layer of bfloat16 tensors, or of float32 ones rounded to bf16 under autocast (`operands`);
    else "input" for float32 or float64 tensors all alike; "int8" for int8 maps' weights with float32 tensors when
    no gradient is asked for (a gradient through them raises on the fused path, as today)."""
    if form is None:
        return None
    if form.int8:  # eager only: under torch.export / compile the maps' own path (ONNX export refuses them by name)
        if torch.compiler.is_compiling():
            return None
        floats = [x, h0, c0, *(t for t in (bias, peephole) if t is not None)]
        if isinstance(weight_ih, Tensor):
            floats.append(weight_ih)
        cpu32 = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in floats)
        return "int8" if cpu32 and form.weight_hh.device.type == "cpu" and not needs_grad(*floats) else None
    loop = [x, h0, c0, form.weight_hh, *(t for t in (form.weight_hr, bias, peephole) if t is not None)]
    if isinstance(weight_ih, Tensor):
        loop.append(weight_ih)
    if not all(t.device.type == "cpu" and t.dtype == x.dtype for t in loop):
        return None
    dense = form.kind == "dense" and isinstance(weight_ih, Tensor)  # the bf16 loop's products: dense ones
    if x.dtype == torch.bfloat16:
        return "bf16" if dense else None
    if x.dtype not in (torch.float32, torch.float64):
        return None
    return "bf16" if dense and x.dtype == torch.float32 and autocast.operands() == torch.bfloat16 else "input"


def _runs(form: NativeRecurrent | None, x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Map, bias: Tensor | None,
          peephole: Tensor | None) -> bool:
    return _precision(form, x, h0, c0, weight_ih, bias, peephole) is not None


def supports(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map, bias: Tensor | None = None,
             peephole: Tensor | None = None, weight_hr: Map | None = None) -> bool:
    """Whether the native loop runs these inputs: CPU float32/float64, and a W_hh (and W_hr) with a native form, or
    bfloat16 with dense weights. A structured W_ih is fine: its product is then computed before the loop."""
    return _runs(native_form(weight_hh, weight_hr), x, h0, c0, weight_ih, bias, peephole)


def last_rows(batch_sizes: list[int] | None, reverse: bool, rows: int, batch: int, device) -> Tensor:
    """(B,) the row of each sequence's last step in the walk: where its final state is (see schedule.py);
    batch_sizes None is a padded batch of `rows` rows, `batch` a step."""
    if reverse:  # the walk ends at t = 0, where sequence b is row b
        return torch.arange(batch, device=device)
    if batch_sizes is None:
        return torch.arange(rows - batch, rows, device=device)
    starts = [0, *accumulate(batch_sizes)]
    ascending = [-n for n in batch_sizes]  # batch_sizes is non-increasing
    lengths = [bisect_left(ascending, -b) for b in range(batch_sizes[0])]  # steps with more than b rows
    return torch.tensor([starts[n - 1] + b for b, n in enumerate(lengths)], device=device)


def native_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map,
                 bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr: Map | None = None,
                 reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """`fused_layer`'s contract, x (N, I) -> out (N, P), h_n (B, P), c_n (B, H), run by the native loop as the
    op lstmkit::lstm_forward (lstmkit/engine/ops.py), differentiated by its autograd rule (op_autograd.py).
    Raises where that can't run (see `available` and `supports`); impl="auto" falls back instead."""
    if not available():
        raise RuntimeError("the native engine is unavailable (LSTMKIT_NO_NATIVE is set, or its build failed: "
                           "see the warning); use impl='auto' or 'fused'")
    form = native_form(weight_hh, weight_hr)
    if not _runs(form, x, h0, c0, weight_ih, bias, peephole):
        raise ValueError("the native engine runs CPU float32/float64 tensors with a dense weight_hh and weight_hr, "
                         "or without weight_hr a low-rank, diagonal or grouped weight_hh, and bfloat16 tensors with "
                         "dense weights; use impl='auto' or 'fused'")
    if differentiating_transform():
        return reference_layer(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr, reverse)
    return _run(form, x, batch_sizes, h0, c0, weight_ih, bias, peephole, reverse)


def _run(form: NativeRecurrent, x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map,
         bias: Tensor | None, peephole: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    ih = maps.int8_form(weight_ih) if form.int8 else None
    if ih is None and (form.int8 or not isinstance(weight_ih, Tensor)):  # a structured input map (or dense beside
        x, weight_ih = maps.apply(weight_ih, x), None                   # int8): its product for all rows, (N, 4H)
    precision = _precision(form, x, h0, c0, weight_ih, bias, peephole)
    if precision == "int8":
        weight_ih, scale_ih = ih if ih is not None else (None, None)
        operands = (x, weight_ih, scale_ih, bias, h0, c0, form.weight_hh, form.scale_hh, peephole, form.weight_hr,
                    form.scale_hr)
        run = ops_int8.forward_int8_kernel if kernel_may_run(*operands) else ops_int8.lstm_forward_int8
        out, h_n, c_n, _ = run(*operands, batch_sizes=batch_sizes, reverse=reverse, keep_h=False)
        return out, h_n, c_n
    state = form.initial_state(h0)  # (B, P), or r_0 = V h_0 (B, r) for a low-rank W_hh
    operands = (x, weight_ih, bias, state, c0, form.weight_hh, peephole, form.weight_hr)
    training = needs_grad(*operands)
    run = ops.forward_kernel if kernel_may_run(*operands) else ops.lstm_forward  # the same kernel (dispatch.py)
    out, h_n, c_n, _, _, h_seq = run(*operands, batch_sizes=batch_sizes, reverse=reverse, kind=form.kind,
                                     groups=form.groups, training=training, keep_h=form.internal_projection,
                                     precision=precision)
    if precision == "bf16":  # out, h_n bfloat16 and c_n float32 from the op: the contract's dtype, x's (out stays
        # bfloat16 for a caller that takes it so: autocast.operand_outputs)
        return (out if autocast.operand_outputs() else out.to(x.dtype)), h_n.to(x.dtype), c_n.to(x.dtype)
    if form.internal_projection:  # the layer's outputs are h_t, which the loop kept; h_n is each sequence's last
        return h_seq, h_seq.index_select(0, last_rows(batch_sizes, reverse, x.shape[0], h0.shape[0], x.device)), c_n
    return out, h_n, c_n


def auto_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map,
               bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr: Map | None = None,
               reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The native loop where it runs (extension built, CPU, float32/float64, dense W_hh and W_hr), else fused.
    A call with one row in all that needs no gradient (token-by-token generation) goes to fused too: the product
    is then a matrix-vector one, and packing the weights for the native loop costs more than the product itself
    (measured on this repo's 2-core CPU at H = 512: 1.2 ms per token native, 0.6 ms fused)."""
    one_row_no_grad = x.shape[0] == 1 and not needs_grad(x, h0, c0, bias, peephole, *maps.tensors(weight_ih),
                                                         *maps.tensors(weight_hh), *maps.tensors(weight_hr))
    form = None if one_row_no_grad or not available() else native_form(weight_hh, weight_hr)
    if _runs(form, x, h0, c0, weight_ih, bias, peephole):
        if differentiating_transform():
            return reference_layer(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr, reverse)
        return _run(form, x, batch_sizes, h0, c0, weight_ih, bias, peephole, reverse)
    return fused_layer(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr, reverse)


def release_buffers() -> int:
    """Frees the large CPU buffers that the native engine keeps for reuse (lstmkit/csrc/pool.h: blocks of 4 MiB and
    more that earlier calls freed, at most 1 GiB of them, which spare the next call of the same shapes a fresh
    allocation's page faults); buffers in use stay. Returns the bytes freed: 0 without the extension."""
    ext = extension()
    return ext.pool_release() if ext is not None else 0
