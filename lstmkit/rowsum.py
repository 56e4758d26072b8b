"""Σ_n a[n] ⊙ b[n] over many rows, in chunks: the weight gradient of a diagonal map, of the peepholes.

`(a * b).sum(0)` on (T·B, ...) rows first writes the whole product, a fresh tensor of tens of MB whose pages the
OS must fault in, then reads it back: measured 8x slower at (4096, 4, 512) than the same sum over chunks of
rows whose product stays in cache.
"""
from __future__ import annotations

from torch import Tensor

CHUNK_ELEMENTS = 2 ** 16  # elements of one chunk's product (256 KB in float32)


def sum_of_products(a: Tensor, b: Tensor) -> Tensor:
    """Σ_n a[n] * b[n] (broadcasting after the first dim) for a (N, ...) and b (N, ...)."""
    out_shape = (a[:1] * b[:1]).shape[1:]
    rows = max(1, CHUNK_ELEMENTS // max(1, out_shape.numel()))
    total = a.new_zeros(out_shape)
    for n0 in range(0, a.shape[0], rows):
        total += (a[n0:n0 + rows] * b[n0:n0 + rows]).sum(0)
    return total
