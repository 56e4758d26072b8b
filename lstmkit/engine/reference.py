"""The readable reference loop: `lstm_step` once per time step, backward left to autograd."""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cell import lstm_step
from lstmkit.engine.schedule import Carry, resolve, steps
from lstmkit.maps import Map


def reference_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map,
                    bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr: Map | None = None,
                    reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """One layer, one direction. x (N, I) packed rows; h0 (B, P); c0 (B, H) -> out (N, P), h_n (B, P), c_n (B, H)."""
    batch_sizes = resolve(batch_sizes, x, h0)
    schedule = steps(batch_sizes, reverse)
    state = Carry(h0, c0, schedule[0][2])
    outputs: list[Tensor] = [x] * len(batch_sizes)
    for t, start, rows in schedule:
        h, c = lstm_step(x[start:start + rows], *state.enter(rows), weight_ih, weight_hh, bias, peephole, weight_hr)
        state.leave(h, c)
        outputs[t] = h
    h_n, c_n = state.final()  # (B, P), (B, H)
    return torch.cat(outputs), h_n, c_n
