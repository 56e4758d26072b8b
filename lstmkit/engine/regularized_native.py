"""The native layer-normalized / zoned layer: regularized_bptt.py's loop, forward and backward, in C++.

The input product W_ih x is one call over all rows before the loop (a dense W_ih's product and its gradients by
the loop's GEMM, oneDNN's in float32); the time loop is lstmkit/csrc/layer_norm.cpp (ops lstmkit_ln::forward and
::backward, built with the native engine), whose step normalizes each row of it (LN_ih: the row is in cache there,
and one pass over the (N, 4H) rows is saved each way) and adds the bias; after the loop, in C++ too, dW_hh, db and
the three norms' gain and bias gradients come from one call over all rows each.
It runs CPU float32/float64 layers with a dense W_hh and no projection (`runs`); regularized.py sends the rest to
the fused Python loop.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit import maps
from lstmkit.engine import build
from lstmkit.engine.bptt import first_derivative_only
from lstmkit.engine.hoisted import input_product
from lstmkit.engine.regularized_cell import Norm, Regularization
from lstmkit.engine.schedule import resolve
from lstmkit.maps import Map

NAMESPACE = "lstmkit_ln"  # the ops' namespace in csrc/layer_norm.cpp (TORCH_LIBRARY)


def kernels():
    """torch.ops.lstmkit_ln, registered when the native engine's library loads; None where it is not built."""
    if build.extension() is None:
        return None
    return getattr(torch.ops, NAMESPACE)


def _dense_weight_hh(weight_hh: Map) -> Tensor | None:
    """W_hh (4H, H) where the map is that one dense tensor (so dW_hh = Σ_t da_t^T h_{t-1} is its gradient), else
    None."""
    form = maps.native_recurrent(weight_hh, None)
    tensors = maps.tensors(weight_hh)
    own = form is not None and form.kind == "dense" and len(tensors) == 1 and tensors[0] is form.weight_hh
    return form.weight_hh if own else None


def runs(x: Tensor, h0: Tensor, c0: Tensor, weight_hh: Map, bias: Tensor | None, weight_hr: Map | None,
         reg: Regularization) -> bool:
    """Whether the native loop runs this call: the extension built, no projection, a dense W_hh, every tensor on
    the CPU in x's dtype (float32 or float64), autocast off. Anything else runs the fused Python loop."""
    if weight_hr is not None or x.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu"):
        return False
    w = _dense_weight_hh(weight_hh)
    loop = [x, h0, c0, *(t for t in (w, bias, reg.cell_keep, reg.hidden_keep) if t is not None),
            *(t for n in (reg.norm_ih, reg.norm_hh, reg.norm_c) if n is not None for t in (n.weight, n.bias))]
    return (w is not None and all(t.device.type == "cpu" and t.dtype == x.dtype for t in loop)
            and kernels() is not None)


def _gain(norm: Norm | None) -> tuple[Tensor | None, Tensor | None, float]:
    return (None, None, 1e-5) if norm is None else (norm.weight.detach(), norm.bias.detach(), norm.eps)


def _mask(keep: Tensor | None) -> Tensor | None:
    return None if keep is None else keep.detach().contiguous()  # eval's expectation is an expanded (1, H) row


class DenseInputProduct(torch.autograd.Function):
    """(x (N, I), W (4H, I)) -> x W^T (N, 4H), the products forward and backward by lstmkit_ln::matmul."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return kernels().linear(x.contiguous(), weight.contiguous())

    @staticmethod
    @first_derivative_only
    def backward(ctx, g: Tensor):
        x, weight = ctx.saved_tensors
        dx = kernels().matmul(g, weight) if ctx.needs_input_grad[0] else None  # dx = g W
        dw = kernels().matmul(g.t(), x) if ctx.needs_input_grad[1] else None  # dW = g^T x
        return dx, dw


def _input_product(weight_ih: Map, x: Tensor) -> Tensor:
    if isinstance(weight_ih, Tensor):  # dense: the loop's GEMM, as the native engine's weight gradients
        return DenseInputProduct.apply(x, weight_ih)
    return input_product(weight_ih, x)


class NativeRegularizedRecurrence(torch.autograd.Function):
    """(W_ih x, bias, h0, c0, d^c, d^h, *(γ, β) of LN_ih, LN_hh, LN_c, W_hh) -> (out, h_n, c_n), in packed rows."""

    @staticmethod
    def forward(ctx, cfg, gates_x: Tensor, bias: Tensor | None, h0: Tensor, c0: Tensor, keep_c: Tensor | None,
                keep_h: Tensor | None, *tensors: Tensor):
        batch_sizes, reverse, weight_hh, norm_ih, norm_hh, norm_c = cfg
        w = _dense_weight_hh(weight_hh).detach().contiguous()
        (g_ih, b_ih, eps_ih), (g_hh, b_hh, eps_hh), (g_c, b_c, eps_c) = _gain(norm_ih), _gain(norm_hh), _gain(norm_c)
        keep_c, keep_h = _mask(keep_c), _mask(keep_h)
        out, h_n, c_n, acts, rec, c_new, cells, tanh_y, stats, h_prev = kernels().forward(
            gates_x.contiguous(), None if bias is None else bias.detach().contiguous(), h0.contiguous(), c0.contiguous(), w, g_ih, b_ih, g_hh, b_hh, g_c, b_c,
            keep_c, keep_h, batch_sizes=batch_sizes, reverse=reverse, eps_ih=eps_ih, eps_hh=eps_hh, eps_c=eps_c)
        ctx.cfg = cfg
        ctx.save_for_backward(gates_x, acts, rec, c_new, cells, tanh_y, stats, h_prev, c0, w, keep_c, keep_h)
        return out, h_n, c_n

    @staticmethod
    @first_derivative_only
    def backward(ctx, d_out: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        batch_sizes, reverse, weight_hh, norm_ih, norm_hh, norm_c = ctx.cfg
        gates_x, acts, rec, c_new, cells, tanh_y, stats, h_prev, c0, w, keep_c, keep_h = ctx.saved_tensors
        needs = ctx.needs_input_grad  # cfg, W_ih x, bias, h0, c0, d^c, d^h, *norms' (γ, β), W_hh
        d_x, d_h0, d_c0, d_bias, d_w, *d_norms = kernels().backward(
            d_out.contiguous(), d_h_n.contiguous(), d_c_n.contiguous(), gates_x, acts, rec, c_new, cells, tanh_y,
            stats, c0, w, _gain(norm_ih)[0], _gain(norm_hh)[0], _gain(norm_c)[0], keep_c, keep_h, h_prev,
            batch_sizes=batch_sizes, reverse=reverse, bias_grad=needs[2], weight_grad=needs[-1])
        d_norms = [g for n, k in zip((norm_ih, norm_hh, norm_c), (0, 2, 4)) if n is not None for g in d_norms[k:k + 2]]
        return (None, d_x if needs[1] else None, d_bias if needs[2] else None, d_h0 if needs[3] else None,
                d_c0 if needs[4] else None, None, None, *d_norms, d_w if needs[-1] else None)


def regularized_native_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map,
                             weight_hh: Map, bias: Tensor | None = None, peephole: Tensor | None = None,
                             weight_hr: Map | None = None, reverse: bool = False, *,
                             regularization: Regularization) -> tuple[Tensor, Tensor, Tensor]:
    """regularized_fused_layer's contract where `runs` holds (peephole and weight_hr None), run by the C++ loop."""
    reg = regularization
    batch_sizes = resolve(batch_sizes, x, h0)
    gates_x = _input_product(weight_ih, x)  # (N, 4H): W_ih x of every step in one call
    cfg = (batch_sizes, reverse, weight_hh, reg.norm_ih, reg.norm_hh, reg.norm_c)
    norms = [t for n in (reg.norm_ih, reg.norm_hh, reg.norm_c) if n is not None for t in (n.weight, n.bias)]
    return NativeRegularizedRecurrence.apply(cfg, gates_x, bias, h0, c0, reg.cell_keep, reg.hidden_keep, *norms,
                                             *maps.tensors(weight_hh))
