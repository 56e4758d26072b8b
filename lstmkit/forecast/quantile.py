"""Quantile forecasts: the quantile levels of a prediction interval, and the pinball loss that trains them."""
from __future__ import annotations

import torch


def levels(interval: float) -> tuple[float, float, float]:
    """(lower, median, upper) quantile levels of a central interval of nominal coverage `interval` (0.8: 0.1, 0.5,
    0.9)."""
    tail = (1 - interval) / 2
    return (tail, 0.5, 1 - tail)


def pinball(pred: torch.Tensor, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of quantile predictions `pred` (B, h, Q) for targets `y` (B, h) at levels `q` (Q,):
    max(q * e, (q - 1) * e) with e = y - pred, whose minimizer is the q-quantile of y."""
    e = y[..., None] - pred  # (B, h, Q)
    return torch.maximum(q * e, (q - 1) * e).mean()
