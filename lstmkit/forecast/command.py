"""Forecast a time series with an LSTM, backtested against seasonal naive, ETS and ARIMA; writes a run folder.

`lstmkit forecast` trains on a monthly series that ships with statsmodels (no download) and prints the backtest
table; `--data FILE.csv --column NAME [--time-column NAME]` reads a CSV (several --column: one global model;
--id-column: a long-format file). The run folder holds latest.safetensors (the ensemble, its series and
scales), config.json, metrics.json (the backtest), backtest.csv (every forecast), forecast.png, metrics.csv and
curve.png (training and validation loss per epoch). `lstmkit forecast RUN
--predict` forecasts past the end of the data with the saved model.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from lstmkit import config
from lstmkit.checkpoint import LATEST, PREVIOUS, atomic_write
from lstmkit.errors import report_errors
from lstmkit.forecast import report, saved
from lstmkit.forecast.backtest import run_method, test_origins
from lstmkit.forecast.baselines import BASELINES
from lstmkit.forecast.config import ForecastConfig
from lstmkit.forecast.csvfile import load_csv
from lstmkit.forecast.lstm import LSTMMethod, Shape, split
from lstmkit.forecast.series import Series
from lstmkit.forecast.shipped import load_shipped
from lstmkit.run import RunFolder, new_run_path
from lstmkit.runlock import RunLock

DRY_RUN = dict(hidden_size=8, epochs=2, patience=2, ensemble=1, origins=1)  # --dry-run: the pipeline in seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default="", metavar="RUN",
                        help="with --predict: a run folder written by `lstmkit forecast`")
    config.add_arguments(parser, ForecastConfig)


def load_series(cfg: ForecastConfig) -> list[Series]:
    if not cfg.data:
        for flag, value in (("--column", cfg.column), ("--time-column", cfg.time_column),
                            ("--id-column", cfg.id_column)):
            if value:
                shown = " ".join(f"{flag} {v}" for v in value) if isinstance(value, tuple) else f"{flag} {value}"
                raise ValueError(f"{flag} needs --data FILE.csv; given {shown} without it")
        series = [load_shipped(cfg.series)]
        return [replace(series[0], period=cfg.period)] if cfg.period else series
    return load_csv(cfg.data, cfg.column, cfg.time_column, cfg.id_column, cfg.period)


def shape_for(cfg: ForecastConfig, series: list[Series]) -> Shape:
    """The window, horizon and season of the model; every series must share the season and be long enough."""
    periods = {s.period for s in series}
    if len(periods) > 1:
        raise ValueError(f"the series have different seasons {sorted(periods)} (from their frequencies); expected "
                         "one for a global model: give --period")
    m = periods.pop()
    h = cfg.horizon or (m if m > 1 else 8)
    L = cfg.window or (3 * m if m > 1 else 24)
    if L < m:
        raise ValueError(f"--window {L} is shorter than the season ({m} steps); expected at least {m}")
    shape = Shape(L, h, m, cfg.interval)
    need = cfg.origins * h + L + m + 2 * h + max(m, 4)  # backtest, then window + validation + a training window
    for s in series:
        if len(s) < need:
            where = f"--data {cfg.data}, column {s.name!r}" if cfg.data else f"series {s.name!r}"
            raise ValueError(f"{where} has {len(s)} values, too short for --horizon {h}: expected at least {need} "
                             f"({cfg.origins} backtest origins x {h}, a window of {L} + {m}, validation "
                             f"{h + max(m, 4)}, one training window of {h}); try a smaller --horizon, --window or "
                             "--origins")
    return shape


def progress(cfg: ForecastConfig, members: int):
    """A tqdm bar over every member's epochs (early stopping ends a member before its last)."""
    from tqdm import tqdm
    bar = tqdm(total=members * cfg.epochs, desc="lstm", unit="epoch", file=sys.stderr, leave=False,
               disable=None)

    def tick(member: int, epoch: int, valid_loss: float) -> None:
        bar.n = member * cfg.epochs + epoch
        bar.set_postfix(member=f"{member + 1}/{members}", valid=f"{valid_loss:.4f}", refresh=False)
        bar.refresh()
    return bar, tick


def backtest(cfg: ForecastConfig, series: list[Series], shape: Shape, log) -> tuple[LSTMMethod, list]:
    """Train the LSTM on the histories before the first origin, then backtest it and the baselines."""
    h, K = shape.horizon, cfg.origins
    histories = [s.head(test_origins(len(s), h, K)[0]) for s in series]
    method = LSTMMethod(cfg, shape)
    windows = sum(len(split(s, shape)[0]) for s in histories)
    log(f"lstm: {len(method.members)} x {sum(p.numel() for p in method.members[0].parameters()):,} parameters "
        f"({cfg.structure}, hidden {cfg.hidden_size}), {windows} training windows of {shape.window} steps")
    bar, tick = progress(cfg, len(method.members))
    start = time.perf_counter()
    try:
        method.train(histories, tick)
    finally:
        bar.close()
    results = [run_method(method, series, h, K, time.perf_counter() - start)]
    for cls in BASELINES if cfg.baselines else ():
        baseline = cls(cfg.interval)
        log(f"{baseline.name}: fitting at {K} origin(s) x {len(series)} series")
        results.append(run_method(baseline, series, h, K))
    return method, results


def forecast(cfg: ForecastConfig) -> dict:
    """Train and backtest as `cfg` says, write the run folder; returns the --json summary."""
    if cfg.dry_run:
        cfg = replace(cfg, **DRY_RUN)
    out = new_run_path(cfg.out, "runs/forecast")
    if any((out / name).exists() for name in (LATEST, PREVIOUS)):
        raise ValueError(f"{out} already holds a run ({LATEST}); expected a new folder for --out")
    series = load_series(cfg)
    shape = shape_for(cfg, series)
    log = (lambda *a: print(*a, file=sys.stderr)) if cfg.json else print
    for s in series:
        for note in s.notes:
            log(f"note: {note}")
    torch.manual_seed(cfg.seed)
    run = RunFolder(out)
    try:
        described = ", ".join(f"{s.name} ({len(s)} steps of {s.freq or 1}, from {s.start or 0})" for s in series)
        log(f"run folder {out}\ndata: {described}; season {shape.period}, horizon {shape.horizon}, "
            f"{cfg.origins} backtest origins")
        method, results = backtest(cfg, series, shape, log)
        run.write_json("config.json", {"forecast": asdict(cfg)})
        curves = [[{"member": k + 1, "step": row["epoch"], "train_loss": row["train_loss"],
                    "valid_loss": row["valid_loss"]} for row in f.history] for k, f in enumerate(method.fits)]
        run.save(saved.state(method, series), curves[0])  # the checkpoint; curve.png: the first member's
        run.write_metrics([row for curve in curves for row in curve])  # metrics.csv: every member's epochs
        summary = report.summary(results, series, shape.horizon, cfg.origins, cfg.interval, str(out))
        run.write_json("metrics.json", summary)
        run.write_text("backtest.csv", report.backtest_csv(results, series, shape.horizon))
        atomic_write(out / "forecast.png", report.plot(results, series, shape.horizon, cfg.origins, cfg.interval))
    finally:
        run.close()
    if cfg.json:
        print(json.dumps(summary, indent=1))
    else:
        print(report.table(results, cfg.interval))
        print(f"wrote {out}/: latest.safetensors, metrics.json, backtest.csv, forecast.png, metrics.csv (training)")
    return summary


def predict(run: str, cfg: ForecastConfig) -> dict:
    """Forecast the saved model's horizon past the end of each saved series; prints it, writes RUN/prediction.csv."""
    method, series = saved.load(run)
    h = method.shape.horizon
    if cfg.horizon and cfg.horizon != h:
        raise ValueError(f"{run} was trained for --horizon {h} (a direct multi-horizon head); given --horizon "
                         f"{cfg.horizon}. Expected {h}, or a new run with --horizon {cfg.horizon}")
    pred = method.predict([(s, len(s)) for s in series])  # (S, h, Q)
    out = {"run": run, "horizon": h, "interval": method.shape.interval, "series": {}}
    for s, p in zip(series, pred):
        out["series"][s.name] = {"time": s.labels(torch.arange(len(s), len(s) + h).numpy()),
                                 "lower": p[:, 0].tolist(), "median": p[:, 1].tolist(), "upper": p[:, 2].tolist()}
    rows = [[name, t, f"{lo:.6g}", f"{md:.6g}", f"{hi:.6g}"] for name, f in out["series"].items()
            for t, lo, md, hi in zip(f["time"], f["lower"], f["median"], f["upper"])]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([["series", "time", "lower", "median", "upper"], *rows])
    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    with RunLock(folder):
        atomic_write(folder / "prediction.csv", text.getvalue())
    if cfg.json:
        print(json.dumps(out, indent=1))
    else:
        print(text.getvalue().replace(",", "\t"), end="")
    return out


@report_errors
def main(args: argparse.Namespace) -> int:
    cfg = config.from_args(ForecastConfig, args, column=tuple(getattr(args, "column", ())))
    if args.run and not cfg.predict:
        raise ValueError(f"RUN ({args.run}) is only read with --predict; expected `lstmkit forecast {args.run} "
                         "--predict`, or no RUN to train a new forecaster")
    if cfg.predict and not args.run:
        raise ValueError("--predict needs RUN, a run folder written by `lstmkit forecast`")
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        predict(args.run, cfg) if args.run else forecast(cfg)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (a test) keeps its setting
    return 0
