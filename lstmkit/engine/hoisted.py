"""The input product of all time steps at once, P = W_ih x over all T·B rows, differentiated in closed form.

Autograd through a structured map's forward records every reshape and copy it makes (a grouped map's
regrouping of a (T·B, 4H) tensor costs more than its products); this Function instead runs the forward with
no graph and, backward, the map's own adjoint and weight gradients (the protocol's `vjp`: its
`transpose` and `weight_grads`, sharing their common part), as the recurrent map gets them in bptt.py.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmkit import maps
from lstmkit.maps import Map


class InputProduct(torch.autograd.Function):
    """apply(m, x, *maps.tensors(m)) -> m(x)"""

    @staticmethod
    def forward(ctx, m: Map, x: Tensor, *weights: Tensor) -> Tensor:
        ctx.m = m
        ctx.save_for_backward(x)
        with torch.no_grad():
            return maps.apply(m, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dx, dw = maps.vjp(ctx.m, x, g, input_grad=needs[1], weight_grads=any(needs[2:]))
        return None, dx, *dw


def input_product(m: Map, x: Tensor) -> Tensor:
    """(N, in) -> (N, out): m(x), with the map's closed-form backward where it says that is faster."""
    if isinstance(m, Tensor) or not m.closed_form_backward or not (torch.is_grad_enabled() and (
            x.requires_grad or any(t.requires_grad for t in maps.tensors(m)))):
        return maps.apply(m, x)
    return InputProduct.apply(m, x, *maps.tensors(m))
