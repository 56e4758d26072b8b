"""The packed layout every engine path walks: rows of all steps stacked, step t holding batch_sizes[t] rows.

A padded (T, B, ...) batch is the special case batch_sizes = [B] * T. Sequences are sorted longest first
(as in a PackedSequence), so a step's rows are a prefix of the previous step's rows.
"""
from __future__ import annotations

from itertools import accumulate

import torch
from torch import Tensor


def resolve(batch_sizes: list[int] | None, x: Tensor, h0: Tensor) -> list[int]:
    """The step sizes of a layer call: `batch_sizes`, or for None (a padded batch: x (T*B, I), h0 (B, P))
    [B] * T. None keeps T symbolic for the paths that need no list (the native op, ONNX export)."""
    if batch_sizes is not None:
        return batch_sizes
    B = h0.shape[0]
    T = x.shape[0] // B
    if isinstance(T, torch.SymInt) and T.node.maybe_as_int() is None and torch.compiler.is_exporting():
        raise ValueError("this layer runs a Python loop over time (its weights have no native form: e.g. circulant, "
                         "shared/coupled gates, sparse, a structured projection, or the native engine is off), which "
                         "torch.export can only trace at a fixed sequence length: export without a Dim on the time "
                         "axis, or use a structure the native loop runs (dense, low-rank, diagonal, grouped)")
    return [B] * T


def steps(batch_sizes: list[int], reverse: bool) -> list[tuple[int, int, int]]:
    """(t, row offset, rows) of every step, in the order the forward pass processes them."""
    starts = [0, *accumulate(batch_sizes)][:-1]
    order = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
    return [(t, starts[t], batch_sizes[t]) for t in order]


def enter_in_place(h: Tensor, c: Tensor, rows: int, h0: Tensor, c0: Tensor, h_n: Tensor, c_n: Tensor):
    """The state (h, c) entering a step of `rows` rows, for the fused loops that write the final states into
    preallocated h_n (B, P), c_n (B, H): sequences [rows:] that ended at the previous step leave their state there;
    (reverse direction) sequences [len(h):rows] start here from (h0, c0)."""
    if rows < h.shape[0]:
        h_n[rows:h.shape[0]], c_n[rows:h.shape[0]] = h[rows:], c[rows:]
        return h[:rows], c[:rows]
    if rows > h.shape[0]:
        return torch.cat((h, h0[h.shape[0]:rows])), torch.cat((c, c0[c.shape[0]:rows]))
    return h, c


class Carry:
    """The state (h, c) a loop in PyTorch ops carries along the walk, rows of the running sequences first.

    `enter(rows)` gives the state entering a step of `rows` rows: forward in time, sequences [rows:] ended at the
    previous step and keep their final state aside; backward in time, sequences [len(h):rows] start here, from
    (h0, c0). `final()` gives (h_n (B, P), c_n (B, H)) once the walk is done."""

    def __init__(self, h0: Tensor, c0: Tensor, first_rows: int):
        self.h0, self.c0 = h0, c0
        self.h, self.c = h0[:first_rows], c0[:first_rows]
        self.done: list[tuple[Tensor, Tensor]] = []  # final states of sequences that ended early, latest first

    def enter(self, rows: int) -> tuple[Tensor, Tensor]:
        h, c = self.h, self.c
        if rows < h.shape[0]:
            self.done.append((h[rows:], c[rows:]))
            h, c = h[:rows], c[:rows]
        elif rows > h.shape[0]:
            h, c = torch.cat((h, self.h0[h.shape[0]:rows])), torch.cat((c, self.c0[c.shape[0]:rows]))
        return h, c

    def leave(self, h: Tensor, c: Tensor) -> None:
        """The state a step leaves: (rows, P) and (rows, H)."""
        self.h, self.c = h, c

    def final(self) -> tuple[Tensor, Tensor]:
        done = self.done[::-1]
        return torch.cat((self.h, *(h for h, _ in done))), torch.cat((self.c, *(c for _, c in done)))
