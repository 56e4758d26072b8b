"""The inference loop: the fused engine's forward without autograd, for when no gradient is needed.

`Recurrence` (bptt.py) saves every step's gates, cells and inputs for its backward and goes through autograd's
bookkeeping even under torch.no_grad(). This loop keeps nothing: the input product hoisted over all rows, then
per step one recurrent map call and the pointwise step in place (step.step_forward), into buffers
allocated once. It runs every map (dense, structured, sparse, quantized); fused_layer sends it every call that
needs no gradient (see `needs_grad`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit import maps
from lstmkit.engine.schedule import resolve, steps
from lstmkit.engine.step import new_buffer, step_forward
from lstmkit.maps import Map


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd would record a call on `tensors` (None entries ignored)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


@torch.no_grad()
def inference_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map,
                    bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr: Map | None = None,
                    reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """`fused_layer`'s contract, x (N, I) -> out (N, P), h_n (B, P), c_n (B, H), with no autograd history."""
    batch_sizes = resolve(batch_sizes, x, h0)
    gates_x = maps.apply(weight_ih, x)  # (N, 4H): the input half of every step in one product
    N, B, H, P = gates_x.shape[0], h0.shape[0], c0.shape[1], h0.shape[1]
    out = new_buffer(gates_x, N, P)
    gates = gates_x.new_empty(B, 4 * H)  # one step's gates, activated in place
    # the state of every sequence, updated in place on the rows that run: a sequence that has ended keeps its
    # final state in its row (forward in time); one that has not started keeps h0, c0 (backward in time)
    h = h0.clone(memory_format=torch.contiguous_format)  # (B, P)
    c = c0.clone(memory_format=torch.contiguous_format)  # (B, H)
    h_full = gates_x.new_empty(B, H) if weight_hr is not None else None  # h_t before the projection
    for t, start, rows in steps(batch_sizes, reverse):
        r = slice(start, start + rows)
        g = gates[:rows]  # (rows, 4H)
        torch.add(gates_x[r], 0 if bias is None else bias, out=g)  # + b here: cheaper than a new (N, 4H) tensor
        maps.add_to(weight_hh, h[:rows], g)  # G_t = W_ih x_t + b + R(h_{t-1}), summed in fused_layer's order
        cell = c[:rows]  # c_{t-1}, overwritten with c_t
        if weight_hr is None:
            step_forward(g, cell, peephole, cell, h[:rows])
        else:
            step_forward(g, cell, peephole, cell, h_full[:rows])
            h[:rows] = maps.apply(weight_hr, h_full[:rows])  # (rows, P)
        out[r] = h[:rows]
    return out, h, c
