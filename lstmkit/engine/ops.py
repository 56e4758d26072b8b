"""The native loop as PyTorch operators: lstmkit::lstm_forward and lstmkit::lstm_backward (torch.library).

Typed schemas and fake kernels (output shapes from the inputs' shapes alone, so T and B may be symbolic) let
torch.compile, torch.export and torch.func see one opaque, well-described op per layer and direction; the kernels
call the C++ loop (lstmkit/csrc/lstm.cpp). The autograd rule is lstmkit/engine/op_autograd.py, the vmap rule
lstmkit/engine/op_vmap.py. Options cross the border by name (keyword-only), never by position.

lstm_forward(x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr, *, batch_sizes, reverse, kind, groups,
training, keep_h, precision="input") -> (out (N, P), h_n (B, P), c_n (B, H), acts (N, 4H), cells (N, H), h_seq (N, H)):
  x (N, I) with weight_ih (4H, I), or the input product already done, x (N, 4H), with weight_ih None;
  weight_hh/weight_hr in the native form of `kind` (lstmkit/maps/native.py); batch_sizes None for a padded batch
  (T = N / B). acts and cells (the activated gates and c_t of every row, for the backward) only when `training`,
  h_seq (every h_t before the projection) only with `keep_h` and a projection; else each is empty, (0,).
  precision "input": computed in the inputs' dtype (float32 or float64, all alike). "bf16": the operands x, the
  weights (packed per call) and h_t in bf16, given as float32 or bfloat16 (fp32 master weights under autocast, or a
  bf16 module's own), the cell, c_t and the products' sums in fp32, dense weights only (kind "dense", weight_ih
  given); out and h_n come as bfloat16, c_n, acts and cells as float32.
lstm_backward(...) -> the gradients for x, h0, c0, peephole, bias, weight_ih, weight_hh, weight_hr, each empty
  where not asked (`needs`) or absent, each in its operand's dtype. It writes dL/dgates over `acts` (and h_t over `cells` with a projection):
  with weight_ih None, `acts` then IS the gradient for x, and the first output is empty.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lstmkit.engine.build import extension

OPERANDS = ("x", "weight_ih", "bias", "h0", "c0", "weight_hh", "peephole", "weight_hr")
PRECISIONS = ("input", "bf16")


class Needs(NamedTuple):
    """Which gradients lstm_backward computes, by name (the order of its outputs)."""

    x: bool
    h0: bool
    c0: bool
    peephole: bool
    bias: bool
    weight_ih: bool
    weight_hh: bool
    weight_hr: bool


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def _or_empty(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


def _bf16(precision: str) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision == "bf16"


def _sizes(batch_sizes: list[int] | None, x: Tensor, h0: Tensor) -> list[int]:
    return [h0.shape[0]] * (x.shape[0] // h0.shape[0]) if batch_sizes is None else batch_sizes


def forward_kernel(x: Tensor, weight_ih: Tensor | None, bias: Tensor | None, h0: Tensor, c0: Tensor,
                   weight_hh: Tensor, peephole: Tensor | None, weight_hr: Tensor | None, *,
                   batch_sizes: list[int] | None, reverse: bool, kind: str, groups: int, training: bool, keep_h: bool,
                   precision: str = "input") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    loop = [_contiguous(t) for t in (x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr)]
    ext = extension()
    options = ext.LoopOptions(batch_sizes=_sizes(batch_sizes, x, h0), reverse=reverse, training=training,
                              keep_h=keep_h, diagonal=kind == "diagonal", groups=groups, bf16=_bf16(precision))
    out, h_n, c_n, acts, cells, h_seq = ext.forward(*loop, options)
    return out, h_n, c_n, _or_empty(acts, x), _or_empty(cells, x), _or_empty(h_seq, x)


# the op's CPU kernel is forward_kernel itself, which an eager call that records no gradient may run directly
# (lstmkit/engine/dispatch.py)
lstm_forward = torch.library.custom_op("lstmkit::lstm_forward", mutates_args=(), device_types="cpu")(forward_kernel)


@lstm_forward.register_fake
def _(x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr, *, batch_sizes, reverse, kind, groups, training,
      keep_h, precision="input"):
    N, (B, P), H = x.shape[0], h0.shape, c0.shape[1]
    bf16 = _bf16(precision)
    operand = {"dtype": torch.bfloat16} if bf16 else {}  # out, h_n and h_seq
    cell = {"dtype": torch.float32} if bf16 else {}  # c_n, acts and cells
    empty = x.new_empty(0, **cell)
    return (x.new_empty(N, P, **operand), x.new_empty(B, P, **operand), x.new_empty(B, H, **cell),
            x.new_empty(N, 4 * H, **cell) if training else empty, x.new_empty(N, H, **cell) if training else empty,
            x.new_empty(N, H, **operand) if keep_h and weight_hr is not None else x.new_empty(0, **operand))


@torch.library.custom_op("lstmkit::lstm_backward", mutates_args=("acts", "cells"), device_types="cpu")
def lstm_backward(d_out: Tensor, d_h_n: Tensor, d_c_n: Tensor, acts: Tensor, cells: Tensor, out: Tensor, x: Tensor,
                  weight_ih: Tensor | None, bias: Tensor | None, h0: Tensor, c0: Tensor, weight_hh: Tensor,
                  peephole: Tensor | None, weight_hr: Tensor | None, d_h_seq: Tensor | None, *,
                  batch_sizes: list[int] | None, reverse: bool, kind: str, groups: int, needs: list[bool],
                  precision: str = "input") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    loop = [_contiguous(t) for t in (x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr)]
    ext = extension()
    options = ext.LoopOptions(batch_sizes=_sizes(batch_sizes, x, h0), reverse=reverse, training=True, keep_h=False,
                              diagonal=kind == "diagonal", groups=groups, bf16=_bf16(precision))
    grads = ext.backward(d_out.contiguous(), d_h_n.contiguous(), d_c_n.contiguous(), acts, cells, out, *loop,
                         _contiguous(d_h_seq), options, ext.Needs(**dict(zip(Needs._fields, needs))))
    if weight_ih is None:  # the gradient for x is dL/dgates, written over acts (an op's output can't alias it)
        grads[0] = None
    return tuple(_or_empty(g if need else None, x) for g, need in zip(grads, needs))


@lstm_backward.register_fake
def _(d_out, d_h_n, d_c_n, acts, cells, out, x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr, d_h_seq, *,
      batch_sizes, reverse, kind, groups, needs, precision="input"):
    operands = (x if weight_ih is not None else None, h0, c0, peephole, bias, weight_ih, weight_hh, weight_hr)
    return tuple(t.new_empty(t.shape) if t is not None and need else x.new_empty(0)
                 for t, need in zip(operands, needs))
