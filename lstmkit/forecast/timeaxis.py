"""Timestamps onto a regular axis (sorted, one value per step, gaps as missing values) and missing values filled."""
from __future__ import annotations

import numpy as np

# a step (days) -> pandas period alias, tried in order: the median gap between timestamps picks the first it fits
STEPS = ((1 / 24, "h"), (1, "D"), (7, "W"), (31, "M"), (92, "Q"), (366, "Y"))
MAX_MISSING = 0.2  # a series with a larger fraction of missing values is refused, not invented


def regular_axis(times, lines: np.ndarray, where: str):
    """(order, positions, freq, start): `times` (pandas DatetimeIndex, one per row; `lines` their file lines) sorted,
    each row's step on the regular axis from the first, the axis' period alias and first step. Two rows in one step
    (a duplicate timestamp, or two in one month for monthly data) are refused, naming their lines."""
    import pandas as pd

    order = np.argsort(times.values, kind="stable")
    times, lines = times[order], lines[order]
    gaps = np.diff(times.values).astype("timedelta64[s]").astype(np.float64) / 86400  # days
    if len(gaps) and gaps.min() == 0:
        i = int(np.argmin(gaps))
        raise ValueError(f"{where}: lines {lines[i]} and {lines[i + 1]} have the same time {times[i]}; expected one "
                         "value per time step")
    typical = float(np.median(gaps)) if len(gaps) else 1.0
    freq = next((alias for days, alias in STEPS if typical <= days * 1.001), "Y")
    periods = times.to_period(freq)
    positions = np.asarray([(p - periods[0]).n for p in periods])
    if len(positions) > 1 and np.diff(positions).min() == 0:
        i = int(np.argmin(np.diff(positions)))
        raise ValueError(f"{where}: lines {lines[i]} and {lines[i + 1]} fall in the same step ({periods[i]}) of "
                         f"the series' frequency ({freq}, from its median gap of {typical:g} days); expected "
                         "regular timestamps, one per step")
    return order, positions, freq, str(periods[0])


def on_axis(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(N,) values at their steps of a regular axis of N = last position + 1 steps; NaN where a step has none."""
    out = np.full(int(positions[-1]) + 1, np.nan)
    out[positions] = values
    return out


def fill_missing(values: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    """NaNs filled by linear interpolation between their neighbours (the nearest value at either end), and a note
    saying how many; more than MAX_MISSING of the series missing is refused."""
    missing = np.isnan(values)
    if not missing.any():
        return values, ""
    if missing.mean() > MAX_MISSING:
        raise ValueError(f"{where}: {int(missing.sum())} of {len(values)} values are missing; expected at most "
                         f"{MAX_MISSING:.0%} (missing values are filled by interpolation)")
    steps = np.arange(len(values))
    filled = np.interp(steps, steps[~missing], values[~missing])
    return filled, f"{where}: {int(missing.sum())} missing value(s) filled by linear interpolation"
