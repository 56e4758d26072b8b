"""lstmkit.forecast.windows, model, quantile: inputs from the past only, targets and their scaling, pinball loss."""
import numpy as np
import pytest
import torch

from lstmkit.forecast.lstm import LSTMMethod, Shape, split
from lstmkit.forecast.quantile import levels, pinball
from lstmkit.forecast.series import Series
from lstmkit.forecast.windows import batch, origins, seasonal_naive, seasonal_scale, window
from forecast_helpers import seasonal, tiny_config


def test_seasonal_scale_is_the_in_sample_seasonal_naive_mae():
    y = np.array([1.0, 2, 4, 7, 11, 16])
    assert seasonal_scale(y, 2) == pytest.approx(np.mean([3, 5, 7, 9]))  # |y_t - y_{t-2}|
    assert seasonal_scale(y, 1) == pytest.approx(3.0)  # (1+2+3+4+5)/5
    assert seasonal_scale(np.full(5, 3.0), 1) == 1.0  # a flat series: no division by zero


def test_seasonal_naive_repeats_the_last_season_for_every_horizon():
    past = np.arange(10.0)  # ... 6 7 8 9
    assert seasonal_naive(past, 4, 6).tolist() == [6, 7, 8, 9, 6, 7]
    assert seasonal_naive(past, 1, 3).tolist() == [9, 9, 9]


def test_window_inputs_and_targets_by_hand():
    s = Series("s", np.arange(20.0) ** 1.5, "M", "2000-03", 4)
    L, h, o, scale = 6, 3, 14, 2.0
    x, anchor = window(s, o, L, scale, h)
    y = s.values
    level = y[o - 4:o].mean()
    assert np.allclose(x[:, 0], (y[o - L:o] - level) / scale)
    assert np.allclose(x[:, 1], (y[o - L:o] - y[o - L - 4:o - 4]) / scale)
    position = (2 + np.arange(o - L, o)) % 4  # March is month 2 of the year, taken mod the season of 4
    assert np.allclose(x[:, 2], np.sin(2 * np.pi * position / 4))
    assert np.allclose(x[:, 3], np.cos(2 * np.pi * position / 4))
    assert np.allclose(anchor, y[o - 4:o - 1])
    b = batch([(s, o, scale)], L, h)
    assert b.x.shape == (L, 1, 4) and b.y.shape == (1, h)
    assert torch.allclose(b.unscale(b.y[..., None])[0, :, 0].double(), torch.tensor(y[o:o + h]), rtol=1e-6)


def test_monthly_season_position_follows_the_calendar():
    s = Series("s", np.zeros(30), "M", "1958-03", 12)
    assert s.season_position(np.arange(12)).tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1]
    assert s.labels(np.array([0, 10])) == ["1958-03", "1959-01"]


def test_split_keeps_training_targets_before_the_validation_targets():
    s, shape = seasonal(100), Shape(window=24, horizon=12, period=12, interval=0.8)
    train, valid = split(s, shape)
    assert valid == list(range(100 - 12 - 11, 100 - 12 + 1))  # the last 12 origins whose targets fit
    assert max(train) + 12 <= valid[0] and min(train) == 24 + 12
    assert list(origins(100, 24, 12, 12)) == list(range(36, 89))


def test_forecast_never_reads_past_its_origin():
    """Windowing has no look-ahead: shuffling (or destroying) every value after the origin changes nothing."""
    s = seasonal(120)
    shape = Shape(window=24, horizon=12, period=12, interval=0.8)
    method = LSTMMethod(tiny_config(), shape).train([s.head(90)])
    origin = 100
    before = method.predict([(s, origin)])
    shuffled = s.values.copy()
    shuffled[origin:] = np.random.default_rng(1).permutation(shuffled[origin:]) * 7
    assert not np.allclose(shuffled[origin:], s.values[origin:])
    after = method.predict([(Series(s.name, shuffled, s.freq, s.start, s.period), origin)])
    assert np.array_equal(before, after)
    nan = s.values.copy()
    nan[origin:] = np.nan
    assert np.array_equal(before, method.predict([(Series(s.name, nan, s.freq, s.start, s.period), origin)]))
    # and the forecast depends on the past: change the last value before the origin
    past = s.values.copy()
    past[origin - 1] += 5
    assert not np.allclose(before, method.predict([(Series(s.name, past, s.freq, s.start, s.period), origin)]))


def test_training_never_sees_the_backtest_values():
    """The model trained on a history is the same whatever follows the history."""
    s = seasonal(120)
    shape = Shape(window=24, horizon=12, period=12, interval=0.8)
    a = LSTMMethod(tiny_config(), shape).train([s.head(90)])
    changed = Series(s.name, np.concatenate([s.values[:90], s.values[90:] * -3]), s.freq, s.start, s.period)
    b = LSTMMethod(tiny_config(), shape).train([changed.head(90)])
    assert np.array_equal(a.predict([(s, 90)]), b.predict([(s, 90)]))


def test_pinball_loss_by_hand():
    q = torch.tensor(levels(0.8))
    assert q.tolist() == pytest.approx([0.1, 0.5, 0.9])
    pred = torch.tensor([[[0.0, 1.0, 2.0]]])  # (B=1, h=1, Q=3)
    y = torch.tensor([[1.5]])
    # e = y - pred = 1.5, 0.5, -0.5 -> 0.1*1.5, 0.5*0.5, (0.9-1)*(-0.5)
    assert float(pinball(pred, y, q)) == pytest.approx((0.15 + 0.25 + 0.05) / 3)


def test_pinball_minimizer_is_the_quantile():
    y = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0))
    q = torch.tensor([0.1, 0.9])
    grid = torch.linspace(-2, 2, 401)
    losses = torch.stack([pinball(torch.full((4000, 1, 2), float(g)), y, q) for g in grid])  # per grid point
    best = [float(grid[torch.stack([pinball(torch.full((4000, 1, 1), float(g)), y, q[i:i + 1]) for g in grid])
                 .argmin()]) for i in range(2)]
    assert losses.shape == (401,)
    assert best == pytest.approx(torch.quantile(y, q).tolist(), abs=0.03)


def test_forecaster_output_shape_and_sorted_quantiles():
    shape = Shape(window=24, horizon=6, period=12, interval=0.8)
    method = LSTMMethod(tiny_config(horizon=6), shape)
    x = torch.randn(24, 5, shape.features)
    out = method.members[0].eval()(x)
    assert out.shape == (5, 6, 3)
    assert (out.diff(dim=-1) >= 0).all()


@pytest.mark.parametrize("structure", ["lowrank", "grouped", "diagonal", "circulant", "coupled"])
def test_every_structure_trains_and_forecasts(structure):
    s = seasonal(100)
    shape = Shape(window=24, horizon=12, period=12, interval=0.8)
    method = LSTMMethod(tiny_config(structure=structure, epochs=1, ensemble=1), shape).train([s.head(80)])
    pred = method.predict([(s, 100)])
    assert pred.shape == (1, 12, 3) and np.isfinite(pred).all()
    dense = LSTMMethod(tiny_config(ensemble=1), shape).members[0].state_dict()
    assert set(method.members[0].state_dict()) != set(dense)  # the structure's own parameters, not dense ones


def test_calibration_widens_the_interval_to_cover_the_validation_windows():
    """Conformalized quantile regression: widen is the (1 + 1/n) * 80 % quantile of max(lower - y, y - upper) on
    the validation windows, and the widened interval covers at least 80 % of them."""
    s = seasonal(110)
    shape = Shape(window=24, horizon=12, period=12, interval=0.8)
    method = LSTMMethod(tiny_config(calibrate=False), shape).train([s.head(110)])
    assert method.widen == 0.0
    valid = batch([(s, o, method.scales["s"]) for o in split(s, shape)[1]], 24, 12)
    raw = method.average(valid.x)  # (B, h, Q)
    scores = np.maximum(raw[..., 0] - valid.y, valid.y - raw[..., 2]).numpy().ravel()
    method.widen = method.calibrate(valid)
    assert method.widen == pytest.approx(np.quantile(scores, 0.8 * (1 + 1 / scores.size)), rel=1e-5)
    wide = method.average(valid.x)
    covered = ((wide[..., 0] <= valid.y) & (valid.y <= wide[..., 2])).double().mean()
    assert covered >= 0.8
    assert torch.allclose(wide[..., 1], raw[..., 1])  # the median is unchanged
    calibrated = LSTMMethod(tiny_config(), shape).train([s.head(110)])
    assert calibrated.widen == pytest.approx(method.widen)
