"""The classical baselines: seasonal naive, ETS (statsmodels ETSModel) and ARIMA (statsmodels SARIMAX), each
refitted at every backtest origin on the history before it, with its own prediction interval."""
from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np

from lstmkit.forecast.method import Forecast, Method
from lstmkit.forecast.series import Series


class SeasonalNaive(Method):
    """y[t+k] = the value one season before (the last value without a season), an interval from the normal
    spread of the in-sample seasonal differences, widening with the number of seasons ahead (Hyndman & Athanasopoulos,
    Forecasting: Principles and Practice, 5.5)."""

    name = "seasonal_naive"

    def __init__(self, interval: float):
        self.z = NormalDist().inv_cdf(0.5 + interval / 2)

    def forecast(self, history: Series, h: int) -> Forecast:
        y, m = history.values, history.period
        k = np.arange(h)
        seasons = k // m + 1  # (h,) whole seasons back to the value repeated
        point = y[len(y) - m * seasons + k]
        sigma = float(np.sqrt(np.mean((y[m:] - y[:-m]) ** 2)))
        half = self.z * sigma * np.sqrt(seasons)
        return Forecast(point, point - half, point + half)


class StatsmodelsMethod(Method):
    """A statsmodels state-space model fitted by maximum likelihood; its forecast's mean and interval."""

    def __init__(self, interval: float):
        self.alpha = 1 - interval

    def fit(self, y: np.ndarray, m: int):
        raise NotImplementedError

    def forecast(self, history: Series, h: int) -> Forecast:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and frequency notices; the backtest's errors judge the fit
            return self.read(self.fit(history.values, history.period), len(history), h)


class ETS(StatsmodelsMethod):
    """Exponential smoothing with additive errors, an additive trend (damped or not, whichever has the lower AIC)
    and an additive season: ETS(A,A,A) or ETS(A,Ad,A)."""

    name = "ets"

    def fit(self, y: np.ndarray, m: int):
        import pandas as pd
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel
        fits = [ETSModel(pd.Series(y),  # a Series: statsmodels 0.15's ETS prediction needs an index
                         error="add", trend="add", damped_trend=damped, seasonal="add" if m > 1 else None,
                         seasonal_periods=m if m > 1 else None).fit(disp=False) for damped in (False, True)]
        return min(fits, key=lambda r: r.aic)

    def read(self, result, n: int, h: int) -> Forecast:
        prediction = result.get_prediction(start=n, end=n + h - 1)
        interval = np.asarray(prediction.pred_int(alpha=self.alpha))  # (h, 2)
        return Forecast(np.asarray(prediction.predicted_mean), interval[:, 0], interval[:, 1])


class ARIMA(StatsmodelsMethod):
    """SARIMAX(1,1,1)(0,1,1)m with a season (Box and Jenkins' airline model with an AR term), ARIMA(2,1,1)
    without one."""

    name = "arima"

    def fit(self, y: np.ndarray, m: int):
        from statsmodels.tsa.statespace.sarimax import SARIMAX
        if m > 1:
            return SARIMAX(y, order=(1, 1, 1), seasonal_order=(0, 1, 1, m)).fit(disp=False)
        return SARIMAX(y, order=(2, 1, 1), trend="n").fit(disp=False)

    def read(self, result, n: int, h: int) -> Forecast:
        prediction = result.get_forecast(h)
        interval = prediction.conf_int(alpha=self.alpha)  # (h, 2)
        return Forecast(np.asarray(prediction.predicted_mean), np.asarray(interval[:, 0]), np.asarray(interval[:, 1]))


BASELINES = (SeasonalNaive, ETS, ARIMA)
