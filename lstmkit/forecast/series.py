"""A time series as the forecaster sees it: regular steps, no gaps, a season length; and the calendar it lives on."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# pandas period frequency -> season length m (observations per year, per week, per day)
SEASONS = {"M": 12, "Q": 4, "W": 52, "D": 7, "h": 24, "Y": 1}


@dataclass(frozen=True)
class Series:
    """One series: `values` (N,) at regular steps of `freq` from `start` (a pandas Period's text; '' without a
    time axis, then the steps are 0, 1, 2...), with season length `period` (1: no season)."""

    name: str
    values: np.ndarray  # (N,) float64, finite
    freq: str = ""  # pandas period alias: M, Q, W, D, h, Y; '' without a time axis
    start: str = ""  # the first step, e.g. '1958-03' ('' without a time axis)
    period: int = 1  # m, the season length
    notes: tuple[str, ...] = field(default=())  # what was repaired on reading (missing values, sorting)

    def __len__(self) -> int:
        return len(self.values)

    def head(self, n: int) -> Series:
        """The first `n` steps (the history before a backtest origin)."""
        return Series(self.name, self.values[:n], self.freq, self.start, self.period, self.notes)

    def season_position(self, steps: np.ndarray) -> np.ndarray:
        """Where each step (0 = the first) falls in the season, 0..m-1: the month of the year for monthly data."""
        offset = 0
        if self.freq and self.period > 1:
            import pandas as pd
            first = pd.Period(self.start, freq=self.freq)
            offset = {"M": lambda: first.month - 1, "Q": lambda: first.quarter - 1, "W": lambda: first.week - 1,
                      "D": lambda: first.day_of_week, "h": lambda: first.hour}.get(self.freq, lambda: 0)()
        return (offset + steps) % self.period

    def labels(self, steps: np.ndarray) -> list[str]:
        """The time of each step as text ('2001-07'), or the step number without a time axis."""
        if not self.freq:
            return [str(int(s)) for s in steps]
        import pandas as pd
        first = pd.Period(self.start, freq=self.freq)
        return [str(first + int(s)) for s in steps]

    def to_dict(self) -> dict:
        """JSON-able, for a saved run (values as a list of floats)."""
        return {"name": self.name, "values": [float(v) for v in self.values], "freq": self.freq,
                "start": self.start, "period": self.period}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> Series:
        try:
            values = np.asarray(d["values"], dtype=np.float64)
            series = cls(str(d["name"]), values, str(d["freq"]), str(d["start"]), int(d["period"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: a saved series is damaged ({e!r}); expected name, values, freq, start and "
                             "period") from None
        if values.ndim != 1 or not np.isfinite(values).all() or series.period < 1:
            raise ValueError(f"{where}: saved series {series.name!r} has non-finite values or period "
                             f"{series.period}; expected finite values and a period >= 1")
        return series
