"""Counting work: LSTM FLOPs by formula, and the matrix products a function really makes, by observation."""
from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode


def lstm_flops(rows: int, input_size: int, hidden_size: int, proj_size: int = 0) -> int:
    """FLOPs of one LSTM layer's forward over `rows` (batch rows summed over steps; 1 multiply-add = 2 FLOPs).

    Gates: 2·4H·(I + R) per row, where R = P with a projection and H without (the recurrent input is r or h);
    projection: 2·H·P per row. The pointwise work is O(H) per row and is not counted. Training (forward +
    backward) is counted as 3x this: the backward makes two products of the forward's size per product.
    """
    recurrent = proj_size or hidden_size
    return rows * (2 * 4 * hidden_size * (input_size + recurrent) + 2 * hidden_size * proj_size)


def _mkn(name: str, args) -> tuple[int, int, int, int] | None:
    """(batch, M, K, N) of a matrix-product op call, or None for any other op."""
    if name == "aten::mm":
        (M, K), N, batch = args[0].shape, args[1].shape[1], 1
    elif name == "aten::addmm":
        (M, K), N, batch = args[1].shape, args[2].shape[1], 1
    elif name == "aten::bmm":
        (batch, M, K), N = args[0].shape, args[1].shape[2]
    elif name == "aten::baddbmm":
        (batch, M, K), N = args[1].shape, args[2].shape[2]
    elif name == "aten::mkldnn_linear":
        (M, K), N, batch = args[0].shape, args[1].shape[0], 1
    else:
        return None
    return batch, M, K, N


class ProductCounter(TorchDispatchMode):
    """Within `with ProductCounter() as pc:`, record every matrix product that reaches the dispatcher.

    `pc.products` maps (batch, M, K, N) to the number of calls of an (M, K) x (K, N) product.
    Work done inside one fused native op (e.g. oneDNN's LSTM kernel) is invisible here.
    """

    def __init__(self):
        super().__init__()
        self.products: Counter[tuple[int, int, int, int]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        mkn = _mkn(func._schema.name, args)
        if mkn is not None:
            self.products[mkn] += 1
        return func(*args, **(kwargs or {}))

    @property
    def calls(self) -> int:
        return sum(self.products.values())

    @property
    def flops(self) -> int:
        return sum(n * 2 * b * M * K * N for (b, M, K, N), n in self.products.items())
