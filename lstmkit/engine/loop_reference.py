"""The native loop's contract (lstmkit::lstm_forward) written out in PyTorch ops: its readable reference, and
the twice-differentiable path its autograd rule takes when a backward must itself be differentiated.

Takes the operands exactly as the op does (see lstmkit/engine/ops.py): the recurrent weight in its native form
(`kind`: a dense (4H, P) matrix, diagonals (4, H), or a block-diagonal matrix's rows (4H, P / groups)), x as the
input rows (N, I) with weight_ih, or as the input product already done (N, 4H) without it. With precision "bf16" the operands (x, the weights, h_0 and every
h_t that a product reads) are rounded to bf16 and the math runs in float32, as the op computes them.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cell import lstm_pointwise
from lstmkit.engine.schedule import Carry, resolve, steps


def recurrent_product(kind: str, weight_hh: Tensor, groups: int, h: Tensor) -> Tensor:
    """W_hh h_{t-1} for h (rows, P) -> (rows, 4H), W_hh in the native form of `kind`."""
    if kind == "diagonal":  # a_q += u_q ⊙ h_{t-1}: (rows, 1, H) * (4, H) -> (rows, 4H), gate-major
        return (h.unsqueeze(-2) * weight_hh).flatten(-2)
    if kind == "grouped":  # row q·H + j·(H/groups) + v reads only group j of h_{t-1}
        rows, c = h.shape[0], weight_hh.shape[1]
        blocks = weight_hh.view(4, groups, -1, c)  # (4, groups, H / groups, c)
        return torch.einsum("qjvk,rjk->rqjv", blocks, h.view(rows, groups, c)).reshape(rows, -1)  # (rows, 4H)
    return h @ weight_hh.t()  # dense (4H, P), also the low-rank factor U


def bf16_operand(t: Tensor | None) -> Tensor | None:
    """t rounded to bf16 and held in float32 (through autograd): an operand of the bf16 loop."""
    return None if t is None else t.to(torch.bfloat16).float()


def loop_reference(x: Tensor, weight_ih: Tensor | None, bias: Tensor | None, h0: Tensor, c0: Tensor,
                   weight_hh: Tensor, peephole: Tensor | None, weight_hr: Tensor | None, *,
                   batch_sizes: list[int] | None, reverse: bool, kind: str, groups: int, keep_h: bool,
                   precision: str = "input") -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(out (N, P), h_n (B, P), c_n (B, H), h_seq (N, H) or None): out holds r_t = W_hr h_t with a projection,
    else h_t; h_seq every h_t before the projection when `keep_h`. With precision "bf16", the op's dtypes too:
    out, h_n and h_seq bfloat16, c_n float32."""
    options = {"batch_sizes": batch_sizes, "reverse": reverse, "kind": kind, "groups": groups, "keep_h": keep_h}
    if precision != "bf16":
        return _loop(x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr, operand=lambda t: t, **options)
    x, weight_ih, h0, weight_hh, weight_hr = map(bf16_operand, (x, weight_ih, h0, weight_hh, weight_hr))
    bias, c0, peephole = (None if t is None else t.float() for t in (bias, c0, peephole))
    out, h_n, c_n, h_seq = _loop(x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr, operand=bf16_operand,
                                 **options)
    bf16 = torch.bfloat16
    return out.to(bf16), h_n.to(bf16), c_n, None if h_seq is None else h_seq.to(bf16)


def _loop(x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr, *, batch_sizes, reverse, kind, groups, keep_h,
          operand):
    """The loop of loop_reference, `operand` applied to each h_t (and r_t) as the next product reads it."""
    batch_sizes = resolve(batch_sizes, x, h0)
    gates_x = x if weight_ih is None else x @ weight_ih.t()  # (N, 4H)
    if bias is not None:
        gates_x = gates_x + bias
    schedule = steps(batch_sizes, reverse)
    state = Carry(h0, c0, schedule[0][2])  # the recurrent state r_t (h_t without a projection) and c_t
    outputs: list[Tensor] = [x] * len(batch_sizes)
    hiddens: list[Tensor] = [x] * len(batch_sizes)
    for t, start, rows in schedule:
        r, c = state.enter(rows)
        gates = gates_x[start:start + rows] + recurrent_product(kind, weight_hh, groups, r)  # G_t
        h, c, _ = lstm_pointwise(gates, c, peephole)
        h = operand(h)
        r = h if weight_hr is None else operand(h @ weight_hr.t())  # r_t = W_hr h_t
        state.leave(r, c)
        outputs[t], hiddens[t] = r, h
    h_n, c_n = state.final()  # (B, P), (B, H)
    return torch.cat(outputs), h_n, c_n, torch.cat(hiddens) if keep_h else None
