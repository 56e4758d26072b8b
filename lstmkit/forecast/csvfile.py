"""Series from a CSV file (pandas): one or several value columns, or a long file with a series-id column.

Every cell is read as text first, so a bad one is reported with its line (the header is line 1) and column:
a value that is not a number, a time that is not a date, two rows for one time step. Empty cells and NA are
missing values, filled by interpolation (lstmkit.forecast.timeaxis); rows come sorted by time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmkit.forecast.series import SEASONS, Series
from lstmkit.forecast.timeaxis import fill_missing, on_axis, regular_axis

MISSING = {"", "na", "nan", "null", "none", "n/a", "-"}  # cells read as a missing value (any case)


def read_table(path: str):
    """The file as a DataFrame of strings; line numbers are the row index + 2."""
    import pandas as pd

    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"--data {path} does not exist; expected a CSV file with a header line")
    if not file.is_file():
        raise ValueError(f"--data {path} is not a file; expected a CSV file with a header line")
    if file.stat().st_size == 0 or not file.read_text(errors="replace").strip():
        raise ValueError(f"--data {path} is empty; expected a CSV file with a header line and one row per time step")
    try:
        table = pd.read_csv(file, dtype=str, keep_default_na=False, skip_blank_lines=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"--data {path} is not a readable CSV file: {' '.join(str(e).split())}") from None
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise ValueError(f"--data {path} has a header line but no rows; expected one row per time step")
    return table


def column(table, name: str, path: str, flag: str = "--column"):
    if name not in table.columns:
        raise ValueError(f"--data {path} has no column {name!r} ({flag}); expected one of "
                         f"{', '.join(map(repr, table.columns))}")
    return table[name].str.strip()


def numbers(cells, name: str, path: str, lines: np.ndarray) -> np.ndarray:
    """(N,) float64; NaN for a missing cell; ValueError naming the line and column of a cell that is no number."""
    values = np.full(len(cells), np.nan)
    for i, text in enumerate(cells):
        if text.lower() in MISSING:
            continue
        try:
            values[i] = float(text)
        except ValueError:
            raise ValueError(f"--data {path} line {lines[i]}, column {name!r}: {text!r} is not a number; expected a "
                             "number or an empty cell (a missing value)") from None
        if not np.isfinite(values[i]):
            raise ValueError(f"--data {path} line {lines[i]}, column {name!r}: {text!r} is not finite; expected a "
                             "finite number or an empty cell (a missing value)")
    return values


def timestamps(cells, name: str, path: str, lines: np.ndarray):
    import pandas as pd

    times = pd.to_datetime(cells, errors="coerce", format="mixed")
    bad = np.flatnonzero(times.isna().to_numpy())
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"--data {path} line {lines[i]}, column {name!r} (--time-column): {cells.iloc[i]!r} is not "
                         f"a date or time; expected one per row, e.g. 2001-07-01")
    return pd.DatetimeIndex(times)


def one_series(name: str, values: np.ndarray, lines: np.ndarray, times, period: int, path: str) -> Series:
    """A Series from one column's values (rows in file order), put on a regular time axis when `times` is given."""
    where, notes, freq, start = f"--data {path}, series {name!r}", [], "", ""
    if times is not None:
        order, positions, freq, start = regular_axis(times, lines, where)
        if (np.diff(order) < 0).any():
            notes.append(f"{where}: rows sorted by time")
        if positions[-1] + 1 > len(positions):
            notes.append(f"{where}: {positions[-1] + 1 - len(positions)} missing time step(s) of {freq}")
        values = on_axis(values[order], positions)
    values, note = fill_missing(values, where)
    notes += [note] if note else []
    m = period or SEASONS.get(freq, 1)
    return Series(name, values, freq, start, m, tuple(notes))


def load_csv(path: str, columns: tuple[str, ...], time_column: str = "", id_column: str = "",
             period: int = 0) -> list[Series]:
    """The series of a CSV file: each of `columns` (all numeric columns but the time and id columns when empty),
    or, with `id_column`, one series per id (a long-format file: id, time, value columns)."""
    table = read_table(path)
    lines = np.arange(len(table)) + 2
    blank = (table.apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy()
    table, lines = table[~blank], lines[~blank]  # blank lines are no rows
    index = {name for name in (time_column, id_column) if name}
    for name in index:
        column(table, name, path, "--time-column" if name == time_column else "--id-column")
    if not columns:
        columns = tuple(c for c in table.columns if c not in index)
        if id_column and len(columns) != 1:
            raise ValueError(f"--data {path} has value columns {list(columns)} besides the id column; expected "
                             "--column NAME to say which holds the values")
    cells = {name: column(table, name, path) for name in columns}
    if not id_column:
        times = timestamps(column(table, time_column, path), time_column, path, lines) if time_column else None
        return [one_series(name, numbers(c, name, path, lines), lines, times, period, path)
                for name, c in cells.items()]
    if len(columns) != 1:
        raise ValueError(f"--data {path} with --id-column {id_column!r} takes one --column (the values); given "
                         f"{len(columns)}: {list(columns)}")
    ids = column(table, id_column, path, "--id-column")
    values = numbers(cells[columns[0]], columns[0], path, lines)
    out = []
    for key in dict.fromkeys(ids):  # in order of first appearance
        rows = (ids == key).to_numpy()
        times = timestamps(column(table, time_column, path)[rows], time_column, path, lines[rows]) \
            if time_column else None
        out.append(one_series(key, values[rows], lines[rows], times, period, path))
    return out
