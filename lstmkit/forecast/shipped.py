"""The real series that ship inside statsmodels (no download): each loader returns a Series on its calendar."""
from __future__ import annotations

import numpy as np

from lstmkit.forecast.series import Series
from lstmkit.forecast.timeaxis import fill_missing


def co2() -> Series:
    """Mauna Loa CO2 (ppm), weekly 1958-2001, as monthly means: 526 months, a trend and a yearly season."""
    from statsmodels.datasets import co2 as dataset
    weekly = dataset.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean()
    values, note = fill_missing(monthly.to_numpy(np.float64), "co2")
    return Series("co2", values, "M", str(monthly.index[0].to_period("M")), 12, (note,) if note else ())


def elec_equip() -> Series:
    """Euro-area electrical equipment orders (index, 2005 = 100), monthly 1995-2016: 257 months, a yearly
    season and the 2008-9 crash."""
    from statsmodels.datasets import elec_equip as dataset
    data = dataset.load().data
    return Series("elec_equip", data.iloc[:, 0].to_numpy(np.float64), "M", str(data.index[0].to_period("M")), 12)


def elnino() -> Series:
    """Sea surface temperature of the El Nino region (deg C), monthly 1950-2010: 732 months, a yearly season and
    the irregular El Nino swings."""
    from statsmodels.datasets import elnino as dataset
    data = dataset.load_pandas().data
    values = data.drop(columns="YEAR").to_numpy(np.float64).reshape(-1)  # (years * 12,), row by row
    return Series("elnino", values, "M", f"{int(data['YEAR'].iloc[0])}-01", 12)


def sunspots() -> Series:
    """Yearly mean sunspot numbers 1700-2008: 309 years of the irregular 11-year cycle (no calendar season)."""
    from statsmodels.datasets import sunspots as dataset
    data = dataset.load_pandas().data
    return Series("sunspots", data["SUNACTIVITY"].to_numpy(np.float64), "Y", str(int(data["YEAR"].iloc[0])), 1)


def nile() -> Series:
    """Yearly flow of the Nile at Aswan 1871-1970: 100 years, a level shift in 1898."""
    from statsmodels.datasets import nile as dataset
    data = dataset.load_pandas().data
    return Series("nile", data["volume"].to_numpy(np.float64), "Y", str(int(data["year"].iloc[0])), 1)


def macrodata() -> Series:
    """US unemployment rate (%), quarterly 1959-2009: 203 quarters of business cycles."""
    from statsmodels.datasets import macrodata as dataset
    data = dataset.load_pandas().data
    return Series("macrodata", data["unemp"].to_numpy(np.float64), "Q", "1959Q1", 4)


SHIPPED = {f.__name__: f for f in (co2, elec_equip, elnino, sunspots, nile, macrodata)}


def load_shipped(name: str) -> Series:
    return SHIPPED[name]()
