"""The readable reference loop: `lstm_step` once per time step, backward left to autograd."""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cell import lstm_step
from lstmkit.engine.schedule import resolve, steps
from lstmkit.maps import Map


def reference_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map,
                    bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr: Map | None = None,
                    reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """One layer, one direction. x (N, I) packed rows; h0 (B, P); c0 (B, H) -> out (N, P), h_n (B, P), c_n (B, H)."""
    batch_sizes = resolve(batch_sizes, x, h0)
    schedule = steps(batch_sizes, reverse)
    h, c = h0[:schedule[0][2]], c0[:schedule[0][2]]
    outputs: list[Tensor] = [x] * len(batch_sizes)
    h_done, c_done = [], []  # final states of sequences that ended early, latest rows first
    for t, start, rows in schedule:
        if rows < h.shape[0]:  # forward in time: sequences [rows:] ended at the previous step
            h_done.append(h[rows:])
            c_done.append(c[rows:])
            h, c = h[:rows], c[:rows]
        elif rows > h.shape[0]:  # backward in time: sequences [len(h):rows] start here, from h0
            h = torch.cat((h, h0[h.shape[0]:rows]))
            c = torch.cat((c, c0[c.shape[0]:rows]))
        h, c = lstm_step(x[start:start + rows], h, c, weight_ih, weight_hh, bias, peephole, weight_hr)
        outputs[t] = h
    h_n = torch.cat((h, *reversed(h_done)))  # (B, P)
    c_n = torch.cat((c, *reversed(c_done)))  # (B, H)
    return torch.cat(outputs), h_n, c_n
