"""lstmkit.forecast.backtest, metrics, baselines: origins, pooled metrics and the baselines' forecasts by hand."""
import numpy as np
import pytest

from lstmkit.forecast.backtest import run_method, test_origins as origins_of
from lstmkit.forecast.baselines import ARIMA, ETS, SeasonalNaive
from lstmkit.forecast.method import Forecast, Method
from lstmkit.forecast.metrics import errors, summarize
from lstmkit.forecast.series import Series
from forecast_helpers import seasonal


def test_origins_cover_the_last_K_horizons():
    assert origins_of(100, 12, 4) == [52, 64, 76, 88]
    assert origins_of(30, 5, 1) == [25]


def test_metrics_by_hand():
    actual = np.array([1.0, 2, 3, 4])
    point = np.array([1.0, 3, 2, 8])
    lower, upper = point - 0.5, point + 2
    m = summarize([errors(actual, point, lower, upper, scale=2.0)])
    assert m["mae"] == pytest.approx(1.5)  # (0 + 1 + 1 + 4) / 4
    assert m["smape"] == pytest.approx((0 + 200 / 5 + 200 / 5 + 800 / 12) / 4)  # 200 |e| / (|y| + |f|)
    assert m["mase"] == pytest.approx(0.75)  # mae / scale
    assert m["coverage"] == pytest.approx(0.5)  # 1 in [0.5, 3]; 2 not in [2.5, 5]; 3 in [1.5, 4]; 4 not in [7.5, 10]
    zero = summarize([errors(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), 1.0)])
    assert zero["smape"] == 0.0 and zero["coverage"] == 1.0


def test_metrics_pool_every_step_of_every_forecast():
    a = errors(np.array([1.0, 1]), np.array([2.0, 2]), np.zeros(2), np.full(2, 3.0), scale=1.0)
    b = errors(np.array([1.0]), np.array([5.0]), np.full(1, 2.0), np.full(1, 6.0), scale=4.0)  # 1 not in [2, 6]
    m = summarize([a, b])
    assert m["mae"] == pytest.approx(2.0) and m["mase"] == pytest.approx(1.0)  # (1 + 1 + 1) / 3
    assert m["coverage"] == pytest.approx(2 / 3)


class Recorder(Method):
    """Forecasts the last value plus one; records the histories it was shown."""

    name = "recorder"

    def __init__(self):
        self.seen = []

    def forecast(self, history, h):
        self.seen.append(history.values.copy())
        point = np.full(h, history.values[-1] + 1)
        return Forecast(point, point - 1, point + 1)


def test_run_method_shows_each_origin_only_its_past_and_scores_by_hand():
    y = np.array([0.0, 2, 1, 3, 2, 7, 3, 5, 4, 6])
    s = Series("s", y, period=2)
    method = Recorder()
    result = run_method(method, [s], h=2, K=3)
    assert [len(v) for v in method.seen] == [4, 6, 8]
    assert all(np.array_equal(v, y[:len(v)]) for v in method.seen)
    assert [o for _, o, _ in result.forecasts] == [4, 6, 8]
    # forecasts 4, 4 | 8, 8 | 6, 6 against 2, 7 | 3, 5 | 4, 6: errors 2 3 | 5 3 | 2 0
    assert result.metrics["mae"] == pytest.approx(15 / 6)
    # each origin's scale is the in-sample seasonal naive MAE of its own history: 1, 7/4, 10/6 (the whole series'
    # would be 12/8)
    assert result.metrics["mase"] == pytest.approx(np.mean([2 / 1, 3 / 1, 5 / (7 / 4), 3 / (7 / 4), 2 / (10 / 6), 0]))
    assert result.metrics["coverage"] == pytest.approx(1 / 6)  # the interval is the point +- 1


class Broken(Method):
    name = "broken"

    def forecast(self, history, h):
        if len(history) > 5:
            raise np.linalg.LinAlgError("singular")
        return Forecast(np.zeros(h), np.zeros(h), np.zeros(h))


def test_a_failing_method_is_reported_not_scored():
    result = run_method(Broken(), [Series("s", np.arange(10.0))], h=2, K=3)
    assert result.failed == "s at origin 6: LinAlgError: singular" and result.metrics == {}


def test_seasonal_naive_point_and_interval():
    y = np.array([1.0, 5, 2, 6, 3, 7])  # seasonal differences all 1
    f = SeasonalNaive(0.8).forecast(Series("s", y, period=2), 5)
    assert f.point.tolist() == [3, 7, 3, 7, 3]
    half = 1.2815515655446004 * 1.0 * np.sqrt([1, 1, 2, 2, 3])  # z_0.9 * rms difference * sqrt(seasons ahead)
    assert np.allclose(f.upper - f.point, half) and np.allclose(f.point - f.lower, half)


@pytest.mark.parametrize("cls", [ETS, ARIMA])
def test_ets_and_arima_forecast_a_clean_seasonal_trend(cls):
    s = seasonal(60)  # trend + yearly sine + noise of sd 0.2
    t = np.arange(60, 72)
    clean = 10 + 0.05 * t + 2 * np.sin(2 * np.pi * t / 12)
    f = cls(0.8).forecast(s, 12)
    assert np.abs(f.point - clean).mean() < 0.3
    assert (f.lower < f.point).all() and (f.point < f.upper).all()
