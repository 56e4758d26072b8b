"""The native engine: the whole time loop of one layer and direction in C++ (lstmkit/csrc), for dense weights on CPU.

Built on first use by lstmkit/engine/build.py; where it cannot be, "auto" runs the PyTorch fused path.
"""
from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmkit import maps
from lstmkit.engine.bptt import fused_layer
from lstmkit.engine.build import available, extension  # noqa: F401 (re-exported)
from lstmkit.engine.schedule import resolve
from lstmkit.engine.inference import needs_grad
from lstmkit.maps import Map


def low_rank_factors(weight_hh: Map, weight_hr: Map | None) -> tuple[Tensor, Tensor] | None:
    """(U (4H, r), V (r, H)) of a low-rank W_hh = U V made of two dense maps (a LowRankMap, or the recurrent half
    of the joint low-rank gates) in a layer without projection; else None. The native loop runs it as an LSTMP
    whose projection r_t = V h_t only feeds the recurrence: W_hh = U, W_hr = V, the output h_t."""
    if weight_hr is not None or not isinstance(weight_hh, maps.Compose):
        return None
    inner, outer = weight_hh.inner, weight_hh.outer
    if not (isinstance(inner, maps.Dense) and isinstance(outer, maps.Dense)):
        return None
    return outer.weight, inner.weight


def is_diagonal(weight_hh: Map, weight_hr: Map | None) -> bool:
    """A diagonal W_hh of the four gates (a_q += u_q ⊙ h_{t-1}) in a layer without projection: the native loop adds
    it in its pointwise step, so a step's only product is W_ih x_t."""
    return weight_hr is None and isinstance(weight_hh, maps.DiagonalMap) and weight_hh.gates == 4


GROUP_UNITS = 16  # a grouped W_hh runs natively when each group's width is a multiple of the widest vector


def is_grouped(weight_hh: Map, weight_hr: Map | None) -> bool:
    """A block-diagonal W_hh of the four gates (GroupedMap, G-LSTM) without projection, whose groups are whole
    vectors of hidden units: the loop's products then skip the zero blocks (see `grouped_rows`)."""
    return (weight_hr is None and type(weight_hh) is maps.GroupedMap and weight_hh.gates == 4
            and weight_hh.in_features * 4 == weight_hh.out_features
            and (weight_hh.in_features // weight_hh.groups) % GROUP_UNITS == 0)


def grouped_rows(weight_hh: maps.GroupedMap) -> Tensor:
    """(4H, H / groups): the blocks' rows in gate-major order, row q·H + u holding unit u's gate q on its own group
    of h_{t-1}; through autograd, so the loop's gradient for them reaches the map's weight."""
    k, c = weight_hh.groups, weight_hh.in_features // weight_hh.groups
    return weight_hh.weight.view(k, 4, -1, c).permute(1, 0, 2, 3).reshape(weight_hh.out_features, c)


def recurrent_kind(weight_hh: Map, weight_hr: Map | None) -> str | None:
    """How the native loop runs W_hh (and W_hr): "dense" (plain tensors), "low-rank" (U, V as W_hh, W_hr; see
    `low_rank_factors`), "diagonal" (see `is_diagonal`), "grouped" (see `is_grouped`), or None where it can't."""
    if isinstance(weight_hh, Tensor) and (weight_hr is None or isinstance(weight_hr, Tensor)):
        return "dense"
    if low_rank_factors(weight_hh, weight_hr) is not None:
        return "low-rank"
    if is_grouped(weight_hh, weight_hr):
        return "grouped"
    return "diagonal" if is_diagonal(weight_hh, weight_hr) else None


def supports(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map, bias: Tensor | None = None,
             peephole: Tensor | None = None, weight_hr: Map | None = None) -> bool:
    """Whether the native loop runs these inputs: CPU float32/float64, and a W_hh (and W_hr) of a
    `recurrent_kind`. A structured W_ih is fine: its product is then computed before the loop."""
    if recurrent_kind(weight_hh, weight_hr) is None:
        return False
    loop = [x, h0, c0, *maps.tensors(weight_hh), *maps.tensors(weight_hr),
            *(t for t in (bias, peephole) if t is not None)]
    if isinstance(weight_ih, Tensor):
        loop.append(weight_ih)
    return (x.dtype in (torch.float32, torch.float64)
            and all(isinstance(t, Tensor) and t.device.type == "cpu" and t.dtype == x.dtype for t in loop))


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


class NativeRecurrence(torch.autograd.Function):
    """`Recurrence` (lstmkit/engine/bptt.py) with both loops in C++, and the input product inside the loop.

    apply(cfg, x, h0, c0, peephole, bias, weight_ih, weight_hh, weight_hr) -> (out, h_n, c_n), cfg = (batch_sizes,
    reverse, kind, groups): x (N, I) with a dense weight_ih (4H, I); or, with weight_ih None, x is Recurrence's gates_x
    (N, 4H). `kind` is a `recurrent_kind`. With "low-rank", the projection r_t = W_hr h_t only feeds the recurrence
    (W_hh = U V, see `low_rank_factors`): h0 is r_0 (B, P), and out (N, H) and h_n (B, H) are h_t, not r_t. With
    "diagonal", weight_hh is the (4, H) diagonals u_q and the step adds u_q ⊙ h_{t-1} to the gates. With "grouped",
    weight_hh is the (4H, H / groups) rows of a block-diagonal W_hh (see `grouped_rows`).
    Inside the loop, W_ih x_t joins W_hh h_{t-1} in one register tile: no (N, 4H) buffer and no separate GEMM.
    Saves the activated gates and c_t of every row; h_{t-1} and c_{t-1} are read back from the output, the saved
    cells and (h0, c0) rather than stored twice. Backward writes dL/dgates over the saved gates (no second
    (N, 4H) buffer) and, with a projection, h_t over the saved cells; a second backward through the same graph
    (retain_graph=True) recomputes both first.
    """

    @staticmethod
    def forward(ctx, cfg, x: Tensor, h0: Tensor, c0: Tensor, peephole: Tensor | None, bias: Tensor | None,
                weight_ih: Tensor | None, weight_hh: Tensor, weight_hr: Tensor | None):
        loop = [_contiguous(t) for t in (x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr)]
        batch_sizes, reverse, kind, groups = cfg
        internal, diagonal = kind == "low-rank", kind == "diagonal"
        out, h_n, c_n, acts, cells, h_seq = extension().forward(*loop, batch_sizes, reverse, True, internal, diagonal,
                                                                groups)
        ctx.cfg, ctx.consumed = cfg, False
        ctx.save_for_backward(acts, cells, out, *loop)  # out: r_t, the recurrent input, even when internal
        if internal:
            ctx.last = last_rows(batch_sizes, reverse, out.device)
            return h_seq, h_seq.index_select(0, ctx.last), c_n
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        acts, cells, out, *loop = ctx.saved_tensors
        batch_sizes, reverse, kind, groups = ctx.cfg
        internal, diagonal = kind == "low-rank", kind == "diagonal"
        if ctx.consumed:  # an earlier backward wrote over the saved gates (and cells): run the forward again
            acts, cells = extension().forward(*loop, batch_sizes, reverse, True, False, diagonal, groups)[3:5]
        ctx.consumed = True
        needs = list(ctx.needs_input_grad[1:])  # x, h0, c0, peephole, bias, weight_ih, weight_hh, weight_hr
        d_h_seq = None
        if internal:  # the outputs are h_t: their gradients enter the loop as dL/dh_t, none as dL/dr_t
            d_h_seq = d_out.contiguous().index_add(0, ctx.last, d_h_n)
            d_out, d_h_n = out.new_zeros(out.shape), out.new_zeros(len(ctx.last), out.shape[1])
        grads = extension().backward(d_out.contiguous(), d_h_n.contiguous(), d_c_n.contiguous(), acts, cells, out,
                                     *loop, batch_sizes, reverse, needs, d_h_seq, diagonal, groups)
        return None, *(g if need else None for g, need in zip(grads, needs))


def last_rows(batch_sizes: list[int], reverse: bool, device) -> Tensor:
    """(B,) the row of each sequence's last step in the walk: where its final state is (see schedule.py)."""
    if reverse:  # the walk ends at t = 0, where sequence b is row b
        return torch.arange(batch_sizes[0], device=device)
    starts = [0, *accumulate(batch_sizes)]
    ascending = [-n for n in batch_sizes]  # batch_sizes is non-increasing
    lengths = [bisect_left(ascending, -b) for b in range(batch_sizes[0])]  # steps with more than b rows
    return torch.tensor([starts[n - 1] + b for b, n in enumerate(lengths)], device=device)


def native_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map,
                 bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr: Map | None = None,
                 reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """`fused_layer`'s contract, x (N, I) -> out (N, P), h_n (B, P), c_n (B, H), run by the native loop.
    Raises where that can't run (see `available` and `supports`); impl="auto" falls back instead."""
    batch_sizes = resolve(batch_sizes, x, h0)
    ext = extension()
    if ext is None:
        raise RuntimeError("the native engine is unavailable (LSTMKIT_NO_NATIVE is set, or its build failed: "
                           "see the warning); use impl='auto' or 'fused'")
    if not supports(x, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr):
        raise ValueError("the native engine runs CPU float32/float64 tensors with a dense weight_hh and weight_hr, "
                         "or without weight_hr a low-rank, diagonal or grouped weight_hh; use impl='auto' or 'fused'")
    if not isinstance(weight_ih, Tensor):  # a structured input map: its product for all rows at once, (N, 4H)
        x, weight_ih = maps.apply(weight_ih, x), None
    kind = recurrent_kind(weight_hh, weight_hr)
    if kind == "low-rank":  # W_hh = U V: the loop's recurrent state is r_t = V h_t, starting from V h_0
        weight_hh, weight_hr = low_rank_factors(weight_hh, weight_hr)
        h0 = h0 @ weight_hr.t()  # (B, r), through autograd: dL/dh_0 and V's share of it follow from dL/dr_0
    elif kind == "diagonal":  # through autograd: a bounded map's u = bound·tanh(w) passes dL/du on to w
        weight_hh = weight_hh.diagonals()
    groups = 1
    if kind == "grouped":  # its blocks' rows, through autograd
        groups, weight_hh = weight_hh.groups, grouped_rows(weight_hh)
    batch_sizes, internal = [int(n) for n in batch_sizes], kind == "low-rank"
    args = (x, h0, c0, peephole, bias, weight_ih, weight_hh, weight_hr)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return NativeRecurrence.apply((batch_sizes, reverse, kind, groups), *args)
    loop = (_contiguous(t) for t in (x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr))
    out, h_n, c_n, _, _, h_seq = ext.forward(*loop, batch_sizes, reverse, False, internal, kind == "diagonal", groups)
    if internal:
        return h_seq, h_seq.index_select(0, last_rows(batch_sizes, reverse, h_seq.device)), c_n
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
    native = (not one_row_no_grad and extension() is not None
              and supports(x, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr))
    return (native_layer if native else fused_layer)(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, peephole,
                                                     weight_hr, reverse)
