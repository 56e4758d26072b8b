"""`lstmkit forecast` end to end: the run folder, --json, a reloaded run predicting the same numbers, --predict,
determinism, several series, and the default command's targets (slow)."""
import contextlib
import csv
import io
import json

import numpy as np
import pytest
import torch

from lstmkit.checkpoint import save_checkpoint
from lstmkit.forecast import saved
from lstmkit.forecast.lstm import LSTMMethod, Shape
from error_table import CommandFailed, command
from forecast_helpers import FAST, seasonal, tiny_config, write_csv
from lstmkit import cli


def forecast_json(*argv) -> dict:
    """`lstmkit forecast ARGV... --json` in this process: its JSON."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["forecast", *map(str, argv), "--json"])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


def test_run_folder_json_and_predict_after_reload(tmp_path):
    data = write_csv(tmp_path / "d.csv", 150)
    run = tmp_path / "run"
    summary = forecast_json("--data", data, "--time-column", "date", "--out", run, *FAST)
    assert summary["series"] == ["a"] and summary["horizon"] == 12 and summary["origins"] == 4
    lstm = summary["methods"]["lstm"]
    assert set(lstm) == {"mae", "smape", "mase", "coverage", "seconds"} and 0 <= lstm["coverage"] <= 1
    for name in ("latest.safetensors", "config.json", "metrics.json", "backtest.csv", "forecast.png",
                 "metrics.csv", "curve.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "metrics.json").read_text()) == summary
    # the reloaded model forecasts what the run's own backtest recorded, at every origin
    method, (series,) = saved.load(str(run))
    rows = [r for r in csv.DictReader(open(run / "backtest.csv")) if r["method"] == "lstm"]
    assert len(rows) == 4 * 12
    for origin in {int(r["origin"]) for r in rows}:
        pred = method.predict([(series, origin)])[0]  # (h, Q)
        recorded = [[float(r[c]) for c in ("lower", "point", "upper")] for r in rows if int(r["origin"]) == origin]
        assert np.allclose(pred, recorded, rtol=1e-5)  # the calibrated interval too
    # the recorded points are scored against the CSV's values: the MAE of the table
    assert lstm["mae"] == pytest.approx(np.mean([abs(float(r["actual"]) - float(r["point"])) for r in rows]),
                                        rel=1e-4)
    # --predict: past the end of the data, with the times of the next steps
    out = forecast_json(run, "--predict")
    a = out["series"]["a"]
    assert a["time"][0] == "2012-07" and len(a["median"]) == 12
    assert np.allclose(a["median"], method.predict([(series, len(series))])[0][:, 1])
    assert (run / "prediction.csv").read_text().splitlines()[1].startswith("a,2012-07,")


@pytest.mark.parametrize("options", [{}, {"layer_norm": True, "hidden_zoneout": 0.1, "cell_zoneout": 0.05}],
                         ids=["plain", "layer-norm-zoneout"])
def test_saved_state_reloads_bit_for_bit(tmp_path, options):
    s = seasonal(110)
    shape = Shape(window=24, horizon=12, period=12, interval=0.8)
    method = LSTMMethod(tiny_config(**options), shape).train([s.head(80)])
    lstm = method.members[0].lstm
    assert (lstm.layer_norm, lstm.hidden_zoneout, lstm.cell_zoneout) == (options.get("layer_norm", False),
                                                                         options.get("hidden_zoneout", 0.0),
                                                                         options.get("cell_zoneout", 0.0))
    save_checkpoint(tmp_path / "latest.safetensors", saved.state(method, [s]))
    again, (s2,) = saved.load(str(tmp_path))
    assert np.array_equal(s2.values, s.values) and again.scales == method.scales
    pieces = [(s, 90), (s, 110)]
    assert np.array_equal(method.predict(pieces), again.predict(pieces))
    fresh = LSTMMethod(tiny_config(**options), shape)  # untrained: different numbers, so the test can see a failed load
    fresh.scales = method.scales
    assert not np.allclose(fresh.predict(pieces), method.predict(pieces))


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    data = write_csv(tmp_path / "d.csv", 130)
    runs = [forecast_json("--data", data, "--time-column", "date", "--out", tmp_path / f"r{i}", *FAST,
                          "--origins", "2", "--seed", str(seed))["methods"]["lstm"] for i, seed in enumerate((5, 5, 6))]
    for r in runs:
        r.pop("seconds")
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_several_columns_train_one_global_model(tmp_path):
    data = write_csv(tmp_path / "d.csv", 130, columns=("a", "b"))
    summary = forecast_json("--data", data, "--time-column", "date", "--out", tmp_path / "r", *FAST,
                            "--origins", "2")
    assert summary["series"] == ["a", "b"]
    rows = list(csv.DictReader(open(tmp_path / "r" / "backtest.csv")))
    assert {r["series"] for r in rows} == {"a", "b"} and len(rows) == 2 * 2 * 12
    method, series = saved.load(str(tmp_path / "r"))
    assert len(method.members) == 2 and set(method.scales) == {"a", "b"}


def test_json_methods_include_the_baselines(tmp_path):
    data = write_csv(tmp_path / "d.csv", 90)
    fast = [f for f in FAST if f != "--no-baselines"]
    summary = forecast_json("--data", data, "--time-column", "date", "--out", tmp_path / "r", *fast,
                            "--origins", "1", "--window", "12")
    assert list(summary["methods"]) == ["lstm", "seasonal_naive", "ets", "arima"]
    for name, m in summary["methods"].items():
        assert {"mae", "smape", "mase", "coverage"} <= set(m), name
    # seasonal naive's MAE by hand: the last 12 values against the 12 before them
    values = np.array([float(line.split(",")[1]) for line in (tmp_path / "d.csv").read_text().splitlines()[1:]])
    assert summary["methods"]["seasonal_naive"]["mae"] == pytest.approx(np.abs(values[-12:] - values[-24:-12]).mean(),
                                                                        rel=1e-9)


def test_run_errors(tmp_path):
    data = write_csv(tmp_path / "d.csv", 110)
    run = tmp_path / "run"
    command("forecast", "--data", data, "--time-column", "date", "--out", run, *FAST, "--origins", "1")
    with pytest.raises(CommandFailed, match=r"already holds a run \(latest.safetensors\); expected a new folder"):
        command("forecast", "--data", data, "--out", run, *FAST)
    with pytest.raises(CommandFailed, match=r"was trained for --horizon 12 .*given --horizon 6"):
        command("forecast", run, "--predict", "--horizon", "6")
    with pytest.raises(CommandFailed, match=r"is only read with --predict"):
        command("forecast", run)
    with pytest.raises(CommandFailed, match=r"does not exist; expected a run folder written by `lstmkit forecast`"):
        command("forecast", tmp_path / "nothing", "--predict")


def test_a_train_run_is_not_a_forecast_run(tmp_path):
    from error_table import trained_run
    with pytest.raises(CommandFailed, match=r"is not a forecast run \(metadata/kind is None\)"):
        command("forecast", trained_run(tmp_path), "--predict")


@pytest.mark.slow
def test_default_command_meets_the_issue_targets(tmp_path):
    """The default series: LSTM MASE below seasonal naive's and 1, within 10 % of the best baseline; coverage of
    the 80 % interval in [0.7, 0.9]."""
    m = forecast_json("--out", tmp_path / "run")["methods"]
    best = min(m[k]["mase"] for k in ("seasonal_naive", "ets", "arima"))
    assert m["lstm"]["mase"] < min(1.0, m["seasonal_naive"]["mase"])
    assert m["lstm"]["mase"] <= 1.1 * best
    assert 0.7 <= m["lstm"]["coverage"] <= 0.9


def test_the_command_trains_on_nothing_after_the_first_origin(tmp_path):
    """Two files equal up to the first backtest origin: the LSTM's forecasts from that origin are the same."""
    a = write_csv(tmp_path / "a.csv", 110)
    lines = (tmp_path / "a.csv").read_text().splitlines()
    first = 110 - 2 * 12  # --origins 2, horizon 12
    changed = lines[:1 + first] + [f"{line.split(',')[0]},{float(line.split(',')[1]) * 3 + 7:.4f}"
                                   for line in lines[1 + first:]]
    (tmp_path / "b.csv").write_text("\n".join(changed) + "\n")
    points = []
    for name in ("a", "b"):
        forecast_json("--data", tmp_path / f"{name}.csv", "--time-column", "date", "--out", tmp_path / name, *FAST,
                      "--origins", "2")
        rows = csv.DictReader(open(tmp_path / name / "backtest.csv"))
        points.append([r["point"] for r in rows if r["method"] == "lstm" and int(r["origin"]) == first])
    assert len(points[0]) == 12 and points[0] == points[1]
