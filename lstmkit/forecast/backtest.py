"""The rolling-origin backtest: K origins one horizon apart over the end of each series; at each, every method
forecasts h steps from the history before it, and the errors are pooled over the origins and series."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from lstmkit.forecast.method import Forecast, Method
from lstmkit.forecast.metrics import errors, summarize
from lstmkit.forecast.series import Series
from lstmkit.forecast.windows import seasonal_scale


def test_origins(n: int, h: int, K: int) -> list[int]:
    """The K origins (index of the first forecast step) in a series of n values: the last K*h values are
    forecast, h at a time, the last forecast ending at the series' end."""
    return [n - (K - k) * h for k in range(K)]


@dataclass
class Result:
    """One method's backtest."""

    name: str
    metrics: dict = field(default_factory=dict)  # mae, smape, mase, coverage
    seconds: float = 0.0  # fitting and forecasting, every origin (the LSTM's training included)
    forecasts: list[tuple[str, int, Forecast]] = field(default_factory=list)  # (series, origin, forecast)
    failed: str = ""  # why the method could not forecast (then no metrics)


def run_method(method: Method, series: list[Series], h: int, K: int, seconds: float = 0.0) -> Result:
    """`method`'s forecasts at every origin of every series, and their metrics. A method that raises at an origin
    is reported as failed (naming the series and origin), never scored on the origins it managed."""
    result, terms = Result(method.name, seconds=seconds), []
    start = time.perf_counter()
    for s in series:
        for origin in test_origins(len(s), h, K):
            history = s.head(origin)
            try:
                forecast = method.forecast(history, h)
            except Exception as e:  # noqa: BLE001: a library's fit failing is a result to report, not a crash
                result.failed = f"{s.name} at origin {origin}: {type(e).__name__}: {e}"
                return result
            if not all(np.isfinite(a).all() for a in (forecast.point, forecast.lower, forecast.upper)):
                result.failed = f"{s.name} at origin {origin}: a non-finite forecast"
                return result
            result.forecasts.append((s.name, origin, forecast))
            terms.append(errors(s.values[origin:origin + h], forecast.point, forecast.lower, forecast.upper,
                                seasonal_scale(history.values, s.period)))
    result.seconds += time.perf_counter() - start
    result.metrics = summarize(terms)
    return result
