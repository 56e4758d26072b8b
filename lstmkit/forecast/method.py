"""What every forecasting method returns, and the one method it answers: forecast h steps after a history."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lstmkit.forecast.series import Series


@dataclass(frozen=True)
class Forecast:
    """h steps ahead: the point forecast (the median for the LSTM) and a central prediction interval."""

    point: np.ndarray  # (h,)
    lower: np.ndarray  # (h,)
    upper: np.ndarray  # (h,)


class Method:
    """A forecasting method: `forecast(history, h)` sees the values before the origin and nothing after it."""

    name = "method"

    def forecast(self, history: Series, h: int) -> Forecast:
        raise NotImplementedError
