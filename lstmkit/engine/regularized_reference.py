"""The readable loop of a layer-normalized or zoned layer: `regularized_step` once per time step, autograd backward."""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.engine.regularized_cell import Regularization, regularized_step
from lstmkit.engine.schedule import Carry, resolve, steps
from lstmkit.maps import Map


def regularized_reference_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map,
                                weight_hh: Map, bias: Tensor | None = None, peephole: Tensor | None = None,
                                weight_hr: Map | None = None, reverse: bool = False, *,
                                regularization: Regularization) -> tuple[Tensor, Tensor, Tensor]:
    """reference_layer's contract plus `regularization`: x (N, I) -> out (N, P), h_n (B, P), c_n (B, H)."""
    refuse_peephole(peephole)
    batch_sizes = resolve(batch_sizes, x, h0)
    schedule = steps(batch_sizes, reverse)
    state = Carry(h0, c0, schedule[0][2])
    outputs: list[Tensor] = [x] * len(batch_sizes)
    for t, start, rows in schedule:
        r = slice(start, start + rows)
        h, c = regularized_step(x[r], *state.enter(rows), weight_ih, weight_hh, bias, weight_hr, regularization, r)
        state.leave(h, c)
        outputs[t] = h
    h_n, c_n = state.final()  # (B, P), (B, H)
    return torch.cat(outputs), h_n, c_n


def refuse_peephole(peephole: Tensor | None) -> None:
    if peephole is not None:
        raise ValueError("layer norm and zoneout are written for the LSTM without peepholes (as haste's "
                         "LayerNormLSTM); given peephole weights: construct the LSTM with peephole=False")
