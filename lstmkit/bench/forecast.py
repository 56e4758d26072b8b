"""The forecast study: `lstmkit forecast` on series shipped with statsmodels, the LSTM against seasonal naive, ETS
and ARIMA in one rolling-origin backtest each, with every method's wall time.

Each series runs as its own `python -m lstmkit forecast --json` process (the whole machine, its own threads); the
run folders go to runs/forecast-bench/<series>; a rerun replaces them.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lstmkit.bench import report

SECTION = "forecast"
RUNS = Path("runs") / "forecast-bench"
SERIES = ("co2", "elec_equip", "sunspots")  # two monthly seasonal series and a yearly cycle without a season
QUICK = ("--dry-run", "--no-baselines")  # --quick: the pipeline end to end in seconds, not a measurement
METHODS = ("lstm", "seasonal_naive", "ets", "arima")


def forecast_command(series: str, out: Path, quick: bool) -> list[str]:
    return ["forecast", "--series", series, *(QUICK if quick else ()), "--json", "--out", str(out)]


def run(cfg) -> dict:
    root = Path(cfg.out).resolve().parent / RUNS if cfg.out else RUNS
    rows = []
    for series in SERIES:
        out = root / series
        args = forecast_command(series, out, cfg.quick)
        print(f"forecast: lstmkit {shlex.join(args)}", file=sys.stderr, flush=True)
        if out.exists():  # the study's own run folder from an earlier run: a rerun replaces it
            shutil.rmtree(out)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lstmkit", *args], stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"forecast: `lstmkit {shlex.join(args)}` failed with exit code {done.returncode} (its "
                             "error is above); expected a backtest")
        summary = json.loads(done.stdout)
        shown = [*args[:-1], str(RUNS / series)]
        rows.append({"series": series, "command": "lstmkit " + shlex.join(shown), "wall_s": time.perf_counter() - start,
                     "horizon": summary["horizon"], "origins": summary["origins"], "interval": summary["interval"],
                     "methods": summary["methods"]})
    return {"rows": rows}


HEADERS = ["series", "method", "MAE", "sMAPE %", "MASE", "coverage", "seconds"]


def markdown(results: dict, image: str | None = None) -> str:
    table = []
    for r in results["rows"]:
        scored = {k: m for k, m in r["methods"].items() if "mase" in m}
        best = min(scored, key=lambda k: scored[k]["mase"]) if scored else None
        for name, m in r["methods"].items():
            if "failed" in m:
                table.append([r["series"], name, "failed", m["failed"], "", "", f"{m['seconds']:.1f}"])
                continue
            mase = f"**{m['mase']:.3f}**" if name == best else f"{m['mase']:.3f}"
            table.append([r["series"], name, f"{m['mae']:.4g}", f"{m['smape']:.2f}", mase, f"{m['coverage']:.1%}",
                          f"{m['seconds']:.1f}"])
    commands = "\n".join(f"- {r['series']} (horizon {r['horizon']}, {r['origins']} origins, {r['wall_s']:.0f} s "
                         f"wall): `{r['command']}`" for r in results["rows"])
    parts = [f"## Forecast: `lstmkit forecast` against seasonal naive, ETS and ARIMA",
             report.provenance(results["env"]),
             "A rolling-origin backtest per series: the last origins x horizon values are forecast a horizon at a "
             "time. The LSTM (an ensemble of 5, trained once on the values before the first origin, early stopping "
             "on the last ones, its interval calibrated on them) forecasts each origin from the values before it; the baselines (statsmodels) are "
             "refitted at every origin. MASE divides by the in-sample seasonal naive's error before each origin "
             "(below 1: better than that); coverage is the share of actual values inside the nominal 80 % interval. "
             "Best MASE per series in bold; seconds are each method's fitting and forecasting (the LSTM's training "
             "included).", report.table(HEADERS, table), "Commands:\n" + commands]
    if image:
        parts.append(f"![MASE per series and method]({image})")
    return "\n\n".join(parts)


def plot(results: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    rows, width = results["rows"], 0.8 / len(METHODS)
    for i, name in enumerate(METHODS):
        values = [r["methods"].get(name, {}).get("mase", float("nan")) for r in rows]
        ax.bar([j + i * width for j in range(len(rows))], values, width, label=name)
    ax.set_xticks([j + width * (len(METHODS) - 1) / 2 for j in range(len(rows))], [r["series"] for r in rows])
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.set_ylabel("MASE (lower is better)")
    ax.set_title("lstmkit forecast: rolling-origin backtest")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
