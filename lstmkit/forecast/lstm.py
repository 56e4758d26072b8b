"""The LSTM method: an ensemble of Forecasters trained once on the histories before the first backtest origin
(a global model over all the series), then forecasting from any later origin with the values before it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lstmkit.forecast.fit import Fitted, fit
from lstmkit.forecast.method import Forecast, Method
from lstmkit.forecast.model import Forecaster
from lstmkit.forecast.quantile import levels
from lstmkit.forecast.series import Series
from lstmkit.forecast.windows import Batch, batch, num_features, origins, seasonal_scale


@dataclass(frozen=True)
class Shape:
    """The sizes a saved forecaster is rebuilt from."""

    window: int  # L
    horizon: int  # h
    period: int  # m, shared by all the series of one model
    interval: float  # nominal coverage of [lower, upper]

    def __post_init__(self):
        for name in ("window", "horizon", "period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10 ** 5:
                raise ValueError(f"{name} is {value!r}; expected an integer in [1, 100000]")
        if not isinstance(self.interval, float) or not 0 < self.interval < 1:
            raise ValueError(f"interval is {self.interval!r}; expected a number in (0, 1)")

    @property
    def features(self) -> int:
        return num_features(self.period)


def split(series: Series, shape: Shape) -> tuple[list[int], list[int]]:
    """(train origins, validation origins) in a history: validation is the last max(m, 4) origins whose h targets
    end at the history's end; training windows end (targets included) before the first validation target."""
    every = origins(len(series), shape.window, shape.horizon, shape.period)
    count = max(shape.period, 4)
    valid = list(every[-count:])
    train = [t for t in every if t + shape.horizon <= valid[0]]
    return train, valid


class LSTMMethod(Method):
    name = "lstm"

    def __init__(self, cfg, shape: Shape):
        self.cfg, self.shape = cfg, shape
        self.q = torch.tensor(levels(shape.interval))
        self.members = [self.build() for _ in range(1 if cfg.dry_run else cfg.ensemble)]
        self.scales: dict[str, float] = {}  # per series name: the scale of its training history
        self.widen = 0.0  # scaled units the interval is widened by on each side (negative: narrowed), see calibrate
        self.fits: list[Fitted] = []

    def build(self) -> Forecaster:
        return Forecaster(self.cfg, self.shape.features, self.shape.horizon, len(self.q))

    def train(self, histories: list[Series], tick=None) -> LSTMMethod:
        """Fit every member on the windows of `histories` (each the values before its first backtest origin)."""
        train, valid = [], []
        for s in histories:
            self.scales[s.name] = seasonal_scale(s.values, s.period)
            t, v = split(s, self.shape)
            train += [(s, o, self.scales[s.name]) for o in t]
            valid += [(s, o, self.scales[s.name]) for o in v]
        if not train:
            raise ValueError(f"no training windows: each series needs more than {self.shape.window} + "
                             f"{2 * self.shape.horizon + max(self.shape.period, 4) - 1} values before its first "
                             "backtest origin (window, validation and horizon)")
        L, h = self.shape.window, self.shape.horizon
        train_batch, valid_batch = batch(train, L, h), batch(valid, L, h)
        for k in range(len(self.members)):
            seed = self.cfg.seed * 1000 + k
            torch.manual_seed(seed)  # each member's initialization and dropout
            self.members[k] = self.build()
            self.fits.append(fit(self.members[k], train_batch, valid_batch, self.q, self.cfg, seed,
                                 (lambda e, v, k=k: tick(k, e, v)) if tick else None))
        if self.cfg.calibrate:
            self.widen = self.calibrate(valid_batch)
        return self

    def average(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, Q) scaled quantiles: the members' mean, the interval widened by `widen` (never past the median)."""
        with torch.no_grad():
            pred = torch.stack([m.eval()(x) for m in self.members]).mean(0)  # (B, h, Q)
        lower = torch.minimum(pred[..., 0] - self.widen, pred[..., 1])
        upper = torch.maximum(pred[..., 2] + self.widen, pred[..., 1])
        return torch.stack([lower, pred[..., 1], upper], dim=-1)

    def calibrate(self, valid: Batch) -> float:
        """Conformalized quantile regression (Romano, Patterson and Candes, 2019): the widening on each side that makes
        the interval cover `interval` of the validation targets, the (1 + 1/n) * interval quantile of the scores
        max(lower - y, y - upper)."""
        pred = self.average(valid.x)  # (B, h, Q), with widen still 0
        scores = torch.maximum(pred[..., 0] - valid.y, valid.y - pred[..., 2]).flatten().double()  # (B*h,)
        level = min(1.0, self.shape.interval * (1 + 1 / scores.numel()))
        return float(torch.quantile(scores, level))

    def predict(self, pieces: list[tuple[Series, int]]) -> np.ndarray:
        """(B, h, Q) quantiles in the series' units, the members' average, for windows (series, origin)."""
        data = batch([(s, o, self.scales[s.name]) for s, o in pieces], self.shape.window, self.shape.horizon,
                     targets=False)
        return data.unscale(self.average(data.x)).double().numpy()

    def forecast(self, history: Series, h: int) -> Forecast:
        if h != self.shape.horizon:
            raise ValueError(f"the LSTM was trained for --horizon {self.shape.horizon}; asked for {h} steps")
        (pred,) = self.predict([(history, len(history))])  # (h, Q)
        return Forecast(pred[:, 1], pred[:, 0], pred[:, 2])
