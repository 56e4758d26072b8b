"""Shared pieces of the forecast tests: a small seasonal series, a tiny config, a CSV writer."""
from __future__ import annotations

import numpy as np

from lstmkit.forecast.config import ForecastConfig
from lstmkit.forecast.series import Series

TINY = dict(hidden_size=8, epochs=3, patience=3, ensemble=2, seed=3)  # a model that trains in well under a second
FAST = ("--hidden", "8", "--epochs", "3", "--patience", "3", "--ensemble", "2", "--no-baselines")  # the flags


def seasonal(n: int = 120, m: int = 12, seed: int = 0, name: str = "s") -> Series:
    """A monthly series from 2000-01: a trend, a yearly sine and noise."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    values = 10 + 0.05 * t + 2 * np.sin(2 * np.pi * t / m) + rng.normal(0, 0.2, n)
    return Series(name, values, "M", "2000-01", m)


def tiny_config(**changes) -> ForecastConfig:
    return ForecastConfig(**{**TINY, **changes})


def write_csv(path, n: int = 120, columns=("a",), seed: int = 0) -> str:
    """A CSV with a monthly `date` column and one seasonal column per name in `columns`."""
    lines = ["date," + ",".join(columns)]
    series = [seasonal(n, seed=seed + i).values for i in range(len(columns))]
    for i in range(n):
        lines.append(f"{2000 + i // 12}-{i % 12 + 1:02d}-01," + ",".join(f"{s[i]:.4f}" for s in series))
    path.write_text("\n".join(lines) + "\n")
    return str(path)
