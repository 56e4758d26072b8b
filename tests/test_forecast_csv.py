"""lstmkit.forecast.csvfile and timeaxis: CSV series, sorting, gaps, missing values, and each bad input's error."""
import numpy as np
import pytest

from lstmkit.forecast.csvfile import load_csv
from error_table import CommandFailed, call_row, command
from forecast_helpers import FAST, write_csv


def test_columns_with_a_time_column(tmp_path):
    path = write_csv(tmp_path / "d.csv", 40, columns=("a", "b"))
    a, b = load_csv(path, (), "date")
    assert (a.name, b.name, a.freq, a.start, a.period, len(a)) == ("a", "b", "M", "2000-01", 12, 40)
    text = (tmp_path / "d.csv").read_text().splitlines()
    assert a.values[3] == pytest.approx(float(text[4].split(",")[1]))
    assert load_csv(path, ("b",), "date")[0].values.tolist() == b.values.tolist()


def test_unsorted_rows_gaps_and_missing_values_are_repaired(tmp_path):
    import pandas as pd
    ends = pd.date_range("2001-01-31", periods=15, freq="ME")  # month ends, value = 2 * step
    rows = [f"{d.date()},{'' if i == 1 else 'NA' if i == 3 else 2 * i}" for i, d in enumerate(ends) if i != 4]
    order = np.random.default_rng(0).permutation(len(rows))
    (tmp_path / "d.csv").write_text("when,y\n" + "".join(rows[i] + "\n" for i in order))
    (s,) = load_csv(str(tmp_path / "d.csv"), ("y",), "when")
    # Feb empty, Apr NA, May absent: 3 of 15 steps interpolated on the monthly axis
    assert s.values.tolist() == pytest.approx([2 * i for i in range(15)])
    assert s.freq == "M" and s.start == "2001-01" and s.period == 12
    assert any("sorted" in n for n in s.notes) and any("1 missing time step" in n for n in s.notes)
    assert any("3 missing value(s) filled" in n for n in s.notes)


def test_no_time_column_means_consecutive_steps(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y\n1\n2\n\n4\n")  # a blank line is no row
    (s,) = load_csv(str(path), ("y",), period=3)
    assert s.values.tolist() == [1, 2, 4] and s.freq == "" and s.period == 3


def test_long_format_one_series_per_id(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,t,v\nx,2000-01-01,1\ny,2000-01-01,10\nx,2000-02-01,2\ny,2000-02-01,20\nx,2000-03-01,3\n"
                    "y,2000-03-01,30\n")
    x, y = load_csv(str(path), ("v",), "t", "id")
    assert (x.name, x.values.tolist(), y.name, y.values.tolist()) == ("x", [1, 2, 3], "y", [10, 20, 30])


def _csv(text: str, *args):
    """A call reading folder/d.csv holding `text`, with load_csv(path, *args)."""
    def call(folder):
        (folder / "d.csv").write_text(text)
        load_csv(str(folder / "d.csv"), *args)
    return call


def _command(text: str, *flags):
    def call(folder):
        (folder / "d.csv").write_text(text)
        command("forecast", "--data", folder / "d.csv", *flags, "--out", folder / "run", *FAST)
    return call


MONTHS = "date,y\n" + "".join(f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{i % 12}\n" for i in range(40))

# (what is wrong, the call, the exception, a regex the message must match)
BAD_CSV = [
    ("forecast CSV: no such file", lambda folder: load_csv(str(folder / "none.csv"), ("y",)), FileNotFoundError,
     r"none.csv does not exist; expected a CSV file"),
    ("forecast CSV: a folder", lambda folder: load_csv(str(folder), ("y",)), ValueError,
     r"is not a file; expected a CSV file"),
    ("forecast CSV: empty file", _csv("", ("y",)), ValueError, r"d.csv is empty; expected a CSV file with a header"),
    ("forecast CSV: a header and no rows", _csv("date,y\n", ("y",)), ValueError, r"has a header line but no rows"),
    ("forecast CSV: missing column", _csv("date,y\n2000-01-01,1\n", ("sales",)), ValueError,
     r"has no column 'sales' \(--column\); expected one of 'date', 'y'"),
    ("forecast CSV: missing time column", _csv("date,y\n2000-01-01,1\n", ("y",), "when"), ValueError,
     r"has no column 'when' \(--time-column\)"),
    ("forecast CSV: a value that is not a number", _csv("date,y\n2000-01-01,1\n2000-02-01,1.5\n2000-03-01,abc\n",
                                                        ("y",), "date"), ValueError,
     r"d.csv line 4, column 'y': 'abc' is not a number"),
    ("forecast CSV: an infinite value", _csv("y\n1\ninf\n", ("y",)), ValueError,
     r"line 3, column 'y': 'inf' is not finite"),
    ("forecast CSV: a time that is not a date", _csv("date,y\n2000-01-01,1\nsoon,2\n", ("y",), "date"), ValueError,
     r"line 3, column 'date' \(--time-column\): 'soon' is not a date"),
    ("forecast CSV: a duplicate timestamp", _csv("date,y\n2000-01-01,1\n2000-02-01,2\n2000-01-01,3\n", ("y",),
                                                 "date"), ValueError,
     r"lines 2 and 4 have the same time 2000-01-01"),
    ("forecast CSV: two rows in one month of monthly data",
     _csv("date,y\n2000-01-01,1\n2000-02-01,2\n2000-03-01,3\n2000-03-05,3\n2000-04-01,4\n", ("y",), "date"),
     ValueError, r"lines 4 and 5 fall in the same step \(2000-03\) of the series' frequency \(M, from its median gap"),
    ("forecast CSV: most values missing", _csv("y\n1\nNA\n-\nnan\n5\n", ("y",)), ValueError,
     r"3 of 5 values are missing; expected at most 20%"),
    ("forecast CSV: too short for the horizon", _command(MONTHS, "--column", "y", "--time-column", "date"),
     CommandFailed, r"column 'y' has 40 values, too short for --horizon 12: expected at least 1\d\d"),
    ("forecast CSV: long format without --column", _csv("id,v,w\nx,1,2\n", (), "", "id"), ValueError,
     r"value columns \['v', 'w'\] besides the id column; expected --column NAME"),
    ("forecast: --column without --data", lambda folder: command("forecast", "--column", "y", "--dry-run",
                                                                   "--out", folder / "r"), CommandFailed,
     r"--column needs --data FILE.csv"),
    ("forecast: an ensemble too large to allocate", lambda: command("forecast", "--hidden", "60000", "--ensemble",
                                                                     "100"), CommandFailed,
     r"--ensemble 100 models of --hidden-size 60000, .* LSTM weights; expected at most 2,147,483,648"),
    ("forecast: --predict without RUN", lambda: command("forecast", "--predict"), CommandFailed,
     r"--predict needs RUN"),
]


@pytest.mark.parametrize("what, call, exc, match", BAD_CSV, ids=[r[0] for r in BAD_CSV])
def test_bad_input(what, call, exc, match, tmp_path):
    with pytest.raises(exc, match=match) as info:
        call_row(call, tmp_path)
    if exc is CommandFailed:
        assert info.value.code == 2


def test_bad_csv_exits_2_with_one_line_and_no_traceback(tmp_path, capsys):
    from lstmkit import cli
    (tmp_path / "d.csv").write_text("date,y\n2000-01-01,x\n")
    assert cli.main(["forecast", "--data", str(tmp_path / "d.csv"), "--column", "y", "--out",
                     str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().endswith("line 2, column 'y': 'x' is not a number; expected a "
                                                           "number or an empty cell (a missing value)")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("dates, freq, start, period, position", [
    (["2000-01-05", "2000-01-12", "2000-01-19"], "W", "2000-01-03/2000-01-09", 52, 0),
    (["2000-01-05 03:00", "2000-01-05 04:00", "2000-01-05 05:00"], "h", "2000-01-05 03:00", 24, 3),
    (["2000-01-05", "2000-01-06", "2000-01-07"], "D", "2000-01-05", 7, 2),  # a Wednesday
    (["2000-04-01", "2000-07-01", "2000-10-01"], "Q", "2000Q2", 4, 1),
    (["1990", "1991", "1992"], "Y", "1990", 1, 0),
])
def test_frequency_season_and_calendar_from_the_timestamps(tmp_path, dates, freq, start, period, position):
    (tmp_path / "d.csv").write_text("t,y\n" + "".join(f"{d},{i}\n" for i, d in enumerate(dates)))
    (s,) = load_csv(str(tmp_path / "d.csv"), ("y",), "t")
    assert (s.freq, s.start, s.period, s.values.tolist()) == (freq, start, period, [0, 1, 2])
    assert s.season_position(np.arange(1))[0] == position
