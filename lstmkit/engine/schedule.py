"""The packed layout every engine path walks: rows of all steps stacked, step t holding batch_sizes[t] rows.

A padded (T, B, ...) batch is the special case batch_sizes = [B] * T. Sequences are sorted longest first
(as in a PackedSequence), so a step's rows are a prefix of the previous step's rows.
"""
from __future__ import annotations

from itertools import accumulate

from torch import Tensor


def resolve(batch_sizes: list[int] | None, x: Tensor, h0: Tensor) -> list[int]:
    """The step sizes of a layer call: `batch_sizes`, or for None (a padded batch: x (T*B, I), h0 (B, P))
    [B] * T. None keeps T symbolic for the paths that need no list (the native op, ONNX export)."""
    if batch_sizes is not None:
        return batch_sizes
    B = h0.shape[0]
    return [B] * (x.shape[0] // B)


def steps(batch_sizes: list[int], reverse: bool) -> list[tuple[int, int, int]]:
    """(t, row offset, rows) of every step, in the order the forward pass processes them."""
    starts = [0, *accumulate(batch_sizes)][:-1]
    order = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
    return [(t, starts[t], batch_sizes[t]) for t in order]
