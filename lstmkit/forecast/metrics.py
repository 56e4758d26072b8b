"""Forecast accuracy: MAE, sMAPE, MASE and the coverage of the prediction interval, pooled over all forecasts."""
from __future__ import annotations

import numpy as np


def errors(actual: np.ndarray, point: np.ndarray, lower: np.ndarray, upper: np.ndarray, scale: float) -> dict:
    """Per-step terms of one forecast (arrays of h): absolute error, sMAPE term (percent), scaled error, covered."""
    e = np.abs(actual - point)
    denominator = np.abs(actual) + np.abs(point)
    smape = np.divide(200 * e, denominator, out=np.zeros_like(e), where=denominator > 0)  # 0/0: a perfect 0
    return {"ae": e, "smape": smape, "se": e / scale, "covered": (lower <= actual) & (actual <= upper)}


def summarize(terms: list[dict]) -> dict:
    """The metrics over the per-step terms of many forecasts: mae, smape (%), mase, coverage (fraction)."""
    pooled = {k: np.concatenate([t[k] for t in terms]) for k in terms[0]}
    return {"mae": float(pooled["ae"].mean()), "smape": float(pooled["smape"].mean()),
            "mase": float(pooled["se"].mean()), "coverage": float(pooled["covered"].mean())}
