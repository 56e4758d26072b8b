"""The fused layer: input product hoisted out of the loop, and backpropagation through time written by hand.

Forward: G_t = P_t + R(h_{t-1}) with P = W_ih x + b computed for all steps at once (outside, by autograd).
Backward walks time in reverse, one `R.transpose` per step; the weight gradients of R and of the projection
come after the loop from ONE call over all T*B rows (see ARCHITECTURE.md).
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from lstmkit import maps
from lstmkit.engine.hoisted import input_product
from lstmkit.engine.inference import inference_layer, needs_grad
from lstmkit.engine.reference import reference_layer
from lstmkit.engine.transforms import differentiating_transform
from lstmkit.engine.schedule import enter_in_place, resolve, steps
from lstmkit.engine.step import new_buffer, step_backward, step_forward
from lstmkit.maps import Compose, Map
from lstmkit.rowsum import sum_of_products


def factors(m: Map) -> tuple[Map, Map] | None:
    """(inner, outer) of a composite recurrent map (a low-rank W2·W1, a mixed grouped map), whose middle
    inner(h_{t-1}) and its gradient the loop keeps rather than recomputing them for the weight gradients."""
    return (m.inner, m.outer) if isinstance(m, Compose) else None


SECOND_DERIVATIVES = (
    "lstmkit's fused engine (impl='fused', and the structures the native loop can't run: circulant, shared/coupled "
    "gates, sparse, quantized, a structured projection) has a first derivative only, and this backward was asked "
    "for its graph (create_graph=True, a gradient penalty): use impl='reference' (autograd through the readable "
    "loop) for this model, or a layer the default engine runs natively (dense, low-rank, diagonal, grouped)")


def first_derivative_only(backward):
    """A hand-written autograd.Function backward, run without grad; with create_graph=True (grad mode on in the
    backward) it refuses, since its gradients would carry no graph: a silent zero for a second derivative."""
    @functools.wraps(backward)
    def run(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(SECOND_DERIVATIVES)
        with torch.no_grad():
            return backward(ctx, *grads)
    return run


class Recurrence(torch.autograd.Function):
    """(P, h0, c0, peephole, *tensors of R and of the projection) -> (out, h_n, c_n), all in packed rows."""

    @staticmethod
    def forward(ctx, cfg, gates_x: Tensor, h0: Tensor, c0: Tensor, peephole: Tensor | None, *weights: Tensor):
        batch_sizes, reverse, weight_hh, weight_hr = cfg
        N, H = gates_x.shape[0], gates_x.shape[1] // 4
        B, P = h0.shape
        out = new_buffer(gates_x, N, P)
        acts = new_buffer(gates_x, N, 4 * H)  # activated gates i, f, g, o of every row
        cells = new_buffer(gates_x, N, H)  # c_t
        cells_prev = new_buffer(gates_x, N, H)  # c_{t-1}
        hiddens_prev = new_buffer(gates_x, N, P)  # h_{t-1}, the recurrent map's input
        h_n, c_n = h0.new_empty(B, P), c0.new_empty(B, H)
        h_buffer = gates_x.new_empty(B, H) if weight_hr is not None else None  # h_t before the projection
        chain = factors(weight_hh)
        mids = new_buffer(gates_x, N, chain[0].out_features) if chain else None  # (N, r): inner(h_{t-1})
        schedule = steps(batch_sizes, reverse)
        h, c = h0[:schedule[0][2]], c0[:schedule[0][2]]
        for t, start, rows in schedule:
            r = slice(start, start + rows)
            h, c = enter_in_place(h, c, rows, h0, c0, h_n, c_n)
            hiddens_prev[r], cells_prev[r] = h, c
            gates = acts[r]  # (rows, 4H): the pre-activations, then the activated gates
            if chain:  # R = outer ∘ inner: the middle kept for the weight gradients
                mids[r] = chain[0](h)
                torch.add(gates_x[r], chain[1](mids[r]), out=gates)
            else:
                torch.add(gates_x[r], maps.apply(weight_hh, h), out=gates)
            h_full = out[r] if weight_hr is None else h_buffer[:rows]  # (rows, H)
            step_forward(gates, c, peephole, cells[r], h_full)
            c = cells[r]
            h = h_full if weight_hr is None else maps.apply(weight_hr, h_full)  # (rows, P)
            if weight_hr is not None:
                out[r] = h
        h_n[:h.shape[0]], c_n[:c.shape[0]] = h, c
        ctx.cfg = cfg
        ctx.save_for_backward(acts, cells, cells_prev, hiddens_prev, peephole, mids)
        return out, h_n, c_n

    @staticmethod
    @first_derivative_only
    def backward(ctx, d_out: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        batch_sizes, reverse, weight_hh, weight_hr = ctx.cfg
        acts, cells, cells_prev, hiddens_prev, peephole, mids = ctx.saved_tensors
        chain = factors(weight_hh)
        d_mids = new_buffer(mids, *mids.shape) if chain else None  # (N, r): dL/d inner(h_{t-1})
        H = cells.shape[1]
        B, P = d_h_n.shape
        d_gates = new_buffer(acts, *acts.shape)  # (N, 4H)
        d_out_total = d_out.new_empty(d_out.shape) if weight_hr is not None else None  # (N, P): dL/dr_t
        d_h0, d_c0 = d_h_n.new_zeros(B, P), d_c_n.new_zeros(B, H)
        schedule = steps(batch_sizes, reverse)[::-1]
        dh = d_h_n[:schedule[0][2]]
        dc = d_c_n[:schedule[0][2]].clone(memory_format=torch.contiguous_format)  # updated in place by each step
        for t, start, rows in schedule:
            r = slice(start, start + rows)
            if rows > dh.shape[0]:  # sequences [len(dh):rows] ended at step t: their gradient enters here
                dh = torch.cat((dh, d_h_n[dh.shape[0]:rows]))
                dc = torch.cat((dc, d_c_n[dc.shape[0]:rows]))
            elif rows < dh.shape[0]:  # (reverse direction) sequences [rows:] started from h0 at step t+1
                d_h0[rows:dh.shape[0]], d_c0[rows:dc.shape[0]] = dh[rows:], dc[rows:]
                dh, dc = dh[:rows], dc[:rows]
            dh = dh + d_out[r]  # dL/dh_t: from the output and from step t+1
            if weight_hr is not None:
                d_out_total[r] = dh
                dh = maps.apply_transpose(weight_hr, dh)  # r_t = W_hr h_t  =>  dh_t = W_hr^T dr_t
            step_backward(dh, dc, acts[r], cells[r], cells_prev[r], peephole, d_gates[r])  # dc becomes dL/dc_{t-1}
            if chain:
                d_mids[r] = chain[1].transpose(d_gates[r])
                dh = chain[0].transpose(d_mids[r])  # dL/dh_{t-1} = R^T dG_t = inner^T outer^T dG_t
            else:
                dh = maps.apply_transpose(weight_hh, d_gates[r])  # dL/dh_{t-1} = R^T dG_t
        d_h0[:dh.shape[0]], d_c0[:dc.shape[0]] = dh, dc

        # after the loop, once over all N rows
        needs = ctx.needs_input_grad
        d_peephole = None
        if peephole is not None and needs[4]:
            d_peephole = torch.stack((
                sum_of_products(d_gates[:, :H], cells_prev),  # a_i += w_ci ⊙ c_{t-1}
                sum_of_products(d_gates[:, H:2 * H], cells_prev),  # a_f += w_cf ⊙ c_{t-1}
                sum_of_products(d_gates[:, 3 * H:], cells),  # a_o += w_co ⊙ c_t
            ))
        n_hh = len(maps.tensors(weight_hh))
        d_weights: list[Tensor | None] = [None] * (len(needs) - 5)
        if any(needs[5:5 + n_hh]):
            d_weights[:n_hh] = ((*chain[0].weight_grads(hiddens_prev, d_mids), *chain[1].weight_grads(mids, d_gates))
                                if chain else maps.weight_grads(weight_hh, hiddens_prev, d_gates))  # Σ dG_t^T h_{t-1}
        if weight_hr is not None and any(needs[5 + n_hh:]):
            h_full = acts[:, 3 * H:] * torch.tanh(cells)  # (N, H): h_t = o ⊙ tanh(c_t), recomputed
            d_weights[n_hh:] = maps.weight_grads(weight_hr, h_full, d_out_total)  # sum_t dr_t^T h_t
        return (None, d_gates if needs[1] else None, d_h0 if needs[2] else None, d_c0 if needs[3] else None,
                d_peephole, *d_weights)


def fused_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map,
                bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr: Map | None = None,
                reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as `reference_layer`: x (N, I) -> out (N, P), h_n (B, P), c_n (B, H).
    A call that needs no gradient runs the lean `inference_layer` instead (nothing saved, no autograd). Under
    torch.compile or torch.export it runs `reference_layer`: this loop's in-place step kernels and its
    autograd.Function don't trace, plain ops do (and the compiler fuses them); so it does under torch.func.grad,
    whose backward must carry a graph (see transforms.py)."""
    if torch.compiler.is_compiling() or differentiating_transform():
        return reference_layer(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr, reverse)
    batch_sizes = resolve(batch_sizes, x, h0)
    weights = (*maps.tensors(weight_ih), *maps.tensors(weight_hh), *maps.tensors(weight_hr))
    if not needs_grad(x, h0, c0, bias, peephole, *weights):
        return inference_layer(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr, reverse)
    if isinstance(weight_ih, Tensor) and bias is not None:  # dense: the bias added inside the GEMM
        gates_x = torch.addmm(bias, x, weight_ih.t())  # (N, 4H): the input half of every step in one product
    else:
        gates_x = input_product(weight_ih, x)
        if bias is not None:
            gates_x = gates_x + bias
    cfg = (batch_sizes, reverse, weight_hh, weight_hr)
    return Recurrence.apply(cfg, gates_x, h0, c0, peephole, *maps.tensors(weight_hh), *maps.tensors(weight_hr))
