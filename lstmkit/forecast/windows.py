"""Windows of past values into model inputs: scaled per series, centred on the window's level, calendar features.

A window ending at origin t (the first step to forecast) holds the L values y[t-L:t] and nothing after them: each
value becomes (y - level) / scale, where level is the mean of the window's last season (its last value without
a season) and scale the series' mean absolute seasonal difference over the training history (the MASE scale).
Each step also gets its seasonal difference (y_t - y_{t-m}) / scale (so the window reads m values more), and
where the series has a season of m steps, sin and cos of its position in the season. The
targets are the next h values as corrections to the seasonal naive forecast a (the value one season before,
from the window): (y[t+k] - a[k]) / scale, so a model that learns nothing forecasts what seasonal naive does;
`unscale` maps predictions back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lstmkit.forecast.series import Series


def seasonal_scale(values: np.ndarray, m: int) -> float:
    """mean |y_t - y_{t-m}| (the in-sample seasonal naive's error: the MASE denominator); 1 for a flat series."""
    m = m if len(values) > m else 1
    if len(values) < 2:
        return 1.0
    scale = float(np.mean(np.abs(values[m:] - values[:-m])))
    return scale if scale > 0 else 1.0


def num_features(period: int) -> int:
    return 2 + 2 * (period > 1)  # the value, its seasonal difference; sin, cos of the season position


@dataclass(frozen=True)
class Batch:
    """Windows of one or several series, ready for the model."""

    x: torch.Tensor  # (L, B, F) time-major inputs
    y: torch.Tensor | None  # (B, h) scaled targets; None when forecasting past the end
    anchor: torch.Tensor  # (B, h) the seasonal naive forecast the targets are corrections to
    scale: torch.Tensor  # (B,) its series' scale

    def unscale(self, pred: torch.Tensor) -> torch.Tensor:
        """(B, h, Q) scaled predictions -> the series' units."""
        return pred * self.scale[:, None, None] + self.anchor[:, :, None]


def seasonal_naive(past: np.ndarray, m: int, h: int) -> np.ndarray:
    """(h,) y[t+k] forecast as the value whole seasons before it, y[t+k-m*(k//m+1)], from `past` = y[..t]."""
    k = np.arange(h)
    return past[len(past) - m * (k // m + 1) + k]


def window(series: Series, origin: int, L: int, scale: float, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(L, F) inputs for the window that ends before `origin`, and its (h,) anchor; reads only
    values[origin-L-m:origin]."""
    m = series.period
    if origin < L + m:
        raise ValueError(f"series {series.name!r}: a window of {L} steps with seasonal differences needs {L + m} "
                         f"values before its origin; given {origin}")
    past = series.values[origin - L - m:origin]  # (L + m,): the window and the season before it
    level = float(past[-m:].mean())
    columns = [(past[m:] - level) / scale, (past[m:] - past[:-m]) / scale]  # centred values, seasonal differences
    if series.period > 1:
        angle = 2 * np.pi * series.season_position(np.arange(origin - L, origin)) / m  # (L,)
        columns += [np.sin(angle), np.cos(angle)]
    return np.stack(columns, axis=1), seasonal_naive(past, m, h)  # (L, F), (h,)


def batch(pieces: list[tuple[Series, int, float]], L: int, h: int, targets: bool = True) -> Batch:
    """The windows (series, origin, scale) as one Batch; with `targets`, values[origin:origin+h] as y."""
    xs, ys, anchors, scales = [], [], [], []
    for series, origin, scale in pieces:
        x, anchor = window(series, origin, L, scale, h)
        xs.append(x)
        anchors.append(anchor)
        scales.append(scale)
        if targets:
            ys.append((series.values[origin:origin + h] - anchor) / scale)  # (h,)
    x = torch.tensor(np.stack(xs, axis=1), dtype=torch.float32)  # (L, B, F)
    y = torch.tensor(np.stack(ys), dtype=torch.float32) if targets else None  # (B, h)
    return Batch(x, y, torch.tensor(np.stack(anchors), dtype=torch.float32),
                 torch.tensor(scales, dtype=torch.float32))


def origins(n: int, L: int, h: int, m: int) -> range:
    """Every origin with a full window (and the season before it) and h targets after it, in n values."""
    return range(L + m, n - h + 1)
