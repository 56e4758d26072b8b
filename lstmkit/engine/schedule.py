"""The packed layout every engine path walks: rows of all steps stacked, step t holding batch_sizes[t] rows.

A padded (T, B, ...) batch is the special case batch_sizes = [B] * T. Sequences are sorted longest first
(as in a PackedSequence), so a step's rows are a prefix of the previous step's rows.
"""
from __future__ import annotations

from itertools import accumulate


def steps(batch_sizes: list[int], reverse: bool) -> list[tuple[int, int, int]]:
    """(t, row offset, rows) of every step, in the order the forward pass processes them."""
    starts = [0, *accumulate(batch_sizes)][:-1]
    order = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
    return [(t, starts[t], batch_sizes[t]) for t in order]
