"""The fused layer-normalized / zoned layer: the input half (with LN_ih) hoisted over all steps, BPTT by hand.

Forward: P = LN_ih(W_ih x) + b for all rows in one call (autograd differentiates it), then per step the recurrent
product, LN_hh, the gates, c̃_t, LN_c, h̃_t and the zoneout mix (lstmkit/engine/regularized_cell.py).
Backward walks time in reverse, one LN backward (ATen's native_layer_norm_backward) per norm and one R.transpose
per step; the gradients of R, W_hr and the LN gains and biases come after the loop from one call over all rows.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit import maps
from lstmkit.engine.bptt import first_derivative_only
from lstmkit.engine.hoisted import input_product
from lstmkit.engine.regularized_cell import Norm, Regularization, normalize
from lstmkit.engine.schedule import enter_in_place, resolve, steps
from lstmkit.engine.step import new_buffer
from lstmkit.maps import Map
from lstmkit.rowsum import sum_of_products

LN_BACKWARD = torch.ops.aten.native_layer_norm_backward.default


def _ln_forward(norm: Norm, a: Tensor, mean: Tensor, rstd: Tensor) -> Tensor:
    """LN(a) (rows, F), writing its mean and 1/std into mean, rstd (rows, 1) for the backward."""
    y, mu, rs = torch.native_layer_norm(a, a.shape[-1:], norm.weight, norm.bias, norm.eps)
    mean.copy_(mu.view(-1, 1))
    rstd.copy_(rs.view(-1, 1))
    return y


def _ln_backward(norm: Norm, dy: Tensor, a: Tensor, mean: Tensor, rstd: Tensor) -> Tensor:
    """dL/da for y = LN(a) and dL/dy = dy; the gain and bias gradients are summed after the loop."""
    return LN_BACKWARD(dy, a, a.shape[-1:], mean, rstd, norm.weight, norm.bias, [True, False, False])[0]


def _affine_grads(norm: Norm, dy: Tensor, a: Tensor, mean: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    """(dγ, dβ) = (Σ_n dy ⊙ â, Σ_n dy) over all rows, â = (a - mean) ⋅ rstd."""
    return sum_of_products(dy, (a - mean) * rstd), dy.sum(0)


class RegularizedRecurrence(torch.autograd.Function):
    """(P, h0, c0, d^c, d^h, *LN_hh and LN_c params, *tensors of R and of the projection) -> (out, h_n, c_n)."""

    @staticmethod
    def forward(ctx, cfg, gates_x: Tensor, h0: Tensor, c0: Tensor, keep_c: Tensor | None, keep_h: Tensor | None,
                *tensors: Tensor):
        batch_sizes, reverse, weight_hh, weight_hr, norm_hh, norm_c = cfg
        N, H = gates_x.shape[0], gates_x.shape[1] // 4
        B, P = h0.shape
        out = new_buffer(gates_x, N, P)
        acts = new_buffer(gates_x, N, 4 * H)  # activated gates i, f, g, o of every row
        cells_new = new_buffer(gates_x, N, H)  # c̃_t (LN_c's input)
        tanh_y = new_buffer(gates_x, N, H)  # tanh(LN_c(c̃_t))
        cells_prev = new_buffer(gates_x, N, H)  # c_{t-1}
        hiddens_prev = new_buffer(gates_x, N, P)  # h_{t-1}, the recurrent map's input
        rec = new_buffer(gates_x, N, 4 * H) if norm_hh else None  # W_hh h_{t-1}: LN_hh's input
        stats = gates_x.new_empty(4, N, 1)  # mean and 1/std of LN_hh, then of LN_c, per row
        h_n, c_n = h0.new_empty(B, P), c0.new_empty(B, H)
        schedule = steps(batch_sizes, reverse)
        h, c = h0[:schedule[0][2]], c0[:schedule[0][2]]
        for t, start, rows in schedule:
            r = slice(start, start + rows)
            h, c = enter_in_place(h, c, rows, h0, c0, h_n, c_n)
            hiddens_prev[r], cells_prev[r] = h, c
            a = maps.apply(weight_hh, h)  # (rows, 4H)
            if norm_hh:
                rec[r] = a
                a = _ln_forward(norm_hh, a, stats[0, r], stats[1, r])  # LN_hh(W_hh h_{t-1})
            gates = acts[r]
            torch.add(gates_x[r], a, out=gates)  # G_t = LN_ih(W_ih x_t) + b + LN_hh(W_hh h_{t-1})
            gates[:, :2 * H].sigmoid_()
            gates[:, 2 * H:3 * H].tanh_()
            gates[:, 3 * H:].sigmoid_()
            i, f, g, o = gates.chunk(4, dim=1)
            c_new = torch.addcmul(f * c, i, g, out=cells_new[r])  # c̃_t = f ⊙ c_{t-1} + i ⊙ g
            y = _ln_forward(norm_c, c_new, stats[2, r], stats[3, r]) if norm_c else c_new
            h_new = o * torch.tanh(y, out=tanh_y[r])  # h̃_t = o ⊙ tanh(LN_c(c̃_t))
            if weight_hr is not None:
                h_new = maps.apply(weight_hr, h_new)  # r̃_t = W_hr h̃_t, (rows, P)
            c = c_new if keep_c is None else keep_c[r] * c + (1 - keep_c[r]) * c_new  # c_t = d^c c_{t-1} + ...
            h = h_new if keep_h is None else keep_h[r] * h + (1 - keep_h[r]) * h_new  # h_t = d^h h_{t-1} + ...
            out[r] = h
        h_n[:h.shape[0]], c_n[:c.shape[0]] = h, c
        ctx.cfg = cfg
        ctx.save_for_backward(acts, cells_new, tanh_y, cells_prev, hiddens_prev, rec, stats, keep_c, keep_h)
        return out, h_n, c_n

    @staticmethod
    @first_derivative_only
    def backward(ctx, d_out: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        batch_sizes, reverse, weight_hh, weight_hr, norm_hh, norm_c = ctx.cfg
        acts, cells_new, tanh_y, cells_prev, hiddens_prev, rec, stats, keep_c, keep_h = ctx.saved_tensors
        H = cells_new.shape[1]
        B, P = d_h_n.shape
        d_gates = new_buffer(acts, *acts.shape)  # (N, 4H): dL/dG_t, also dL/d LN_hh(.)
        d_rec = new_buffer(acts, *acts.shape) if norm_hh else d_gates  # (N, 4H): dL/d(W_hh h_{t-1})
        d_y = new_buffer(acts, *cells_new.shape) if norm_c else None  # (N, H): dL/d LN_c(c̃_t)
        d_out_total = new_buffer(d_out, *d_out.shape) if weight_hr is not None else None  # (N, P): dL/dr̃_t
        d_h0, d_c0 = d_h_n.new_zeros(B, P), d_c_n.new_zeros(B, H)
        schedule = steps(batch_sizes, reverse)[::-1]
        dh, dc = d_h_n[:schedule[0][2]], d_c_n[:schedule[0][2]]
        for t, start, rows in schedule:
            r = slice(start, start + rows)
            if rows > dh.shape[0]:  # sequences [len(dh):rows] ended at step t: their gradient enters here
                dh, dc = torch.cat((dh, d_h_n[dh.shape[0]:rows])), torch.cat((dc, d_c_n[dc.shape[0]:rows]))
            elif rows < dh.shape[0]:  # (reverse direction) sequences [rows:] started from h0 at step t+1
                d_h0[rows:dh.shape[0]], d_c0[rows:dc.shape[0]] = dh[rows:], dc[rows:]
                dh, dc = dh[:rows], dc[:rows]
            dh = dh + d_out[r]  # dL/dh_t: from the output and from step t+1
            dh_new = dh if keep_h is None else (1 - keep_h[r]) * dh  # dL/dh̃_t (r̃_t): h_t = d h_{t-1} + (1-d) h̃_t
            dc_new = dc if keep_c is None else (1 - keep_c[r]) * dc  # dL/dc̃_t from c_t = d c_{t-1} + (1-d) c̃_t
            if weight_hr is not None:
                d_out_total[r] = dh_new
                dh_new = maps.apply_transpose(weight_hr, dh_new)  # r̃_t = W_hr h̃_t  =>  dh̃_t = W_hr^T dr̃_t
            i, f, g, o = acts[r].chunk(4, dim=1)
            ty = tanh_y[r]
            da_o = dh_new * ty * o * (1 - o)  # h̃ = o ⊙ tanh(y), σ' = σ(1 - σ)
            dy = dh_new * o * (1 - ty * ty)  # tanh' = 1 - tanh²
            if norm_c:
                d_y[r] = dy
                dy = _ln_backward(norm_c, dy, cells_new[r], stats[2, r], stats[3, r])  # y = LN_c(c̃_t)
            dc_new = dc_new + dy
            da_i = dc_new * g * i * (1 - i)  # c̃ = f ⊙ c_{t-1} + i ⊙ g
            da_f = dc_new * cells_prev[r] * f * (1 - f)
            da_g = dc_new * i * (1 - g * g)
            dc = dc_new * f if keep_c is None else dc_new * f + keep_c[r] * dc  # dL/dc_{t-1}
            torch.cat((da_i, da_f, da_g, da_o), dim=1, out=d_gates[r])
            if norm_hh:  # G_t = ... + LN_hh(a), a = W_hh h_{t-1}
                d_rec[r] = _ln_backward(norm_hh, d_gates[r], rec[r], stats[0, r], stats[1, r])
            d_prev = maps.apply_transpose(weight_hh, d_rec[r])  # W_hh^T dL/da
            dh = d_prev if keep_h is None else d_prev + keep_h[r] * dh  # dL/dh_{t-1}
        d_h0[:dh.shape[0]], d_c0[:dc.shape[0]] = dh, dc

        # after the loop, once over all N rows
        needs = ctx.needs_input_grad
        d_norms = [*(_affine_grads(norm_hh, d_gates, rec, stats[0], stats[1]) if norm_hh else ()),
                   *(_affine_grads(norm_c, d_y, cells_new, stats[2], stats[3]) if norm_c else ())]
        n_norms, n_hh = len(d_norms), len(maps.tensors(weight_hh))
        d_weights: list[Tensor | None] = [None] * (len(needs) - 6 - n_norms)
        if any(needs[6 + n_norms:6 + n_norms + n_hh]):
            d_weights[:n_hh] = maps.weight_grads(weight_hh, hiddens_prev, d_rec)  # Σ_t da_t^T h_{t-1}
        if weight_hr is not None and any(needs[6 + n_norms + n_hh:]):
            h_full = acts[:, 3 * H:] * tanh_y  # (N, H): h̃_t = o ⊙ tanh(y_t), recomputed
            d_weights[n_hh:] = maps.weight_grads(weight_hr, h_full, d_out_total)  # Σ_t dr̃_t^T h̃_t
        return (None, d_gates if needs[1] else None, d_h0 if needs[2] else None, d_c0 if needs[3] else None,
                None, None, *d_norms, *d_weights)


def regularized_fused_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map,
                            weight_hh: Map, bias: Tensor | None = None, peephole: Tensor | None = None,
                            weight_hr: Map | None = None, reverse: bool = False, *,
                            regularization: Regularization) -> tuple[Tensor, Tensor, Tensor]:
    """regularized_reference_layer's contract, run by the hand-written BPTT above (peephole must be None)."""
    reg = regularization
    batch_sizes = resolve(batch_sizes, x, h0)
    gates_x = normalize(reg.norm_ih, input_product(weight_ih, x))  # (N, 4H): LN_ih of every step in one call
    if bias is not None:
        gates_x = gates_x + bias
    cfg = (batch_sizes, reverse, weight_hh, weight_hr, reg.norm_hh, reg.norm_c)
    return RegularizedRecurrence.apply(cfg, gates_x, h0, c0, reg.cell_keep, reg.hidden_keep, *reg.tensors(),
                                       *maps.tensors(weight_hh), *maps.tensors(weight_hr))
