"""The backtest's outputs: the printed table, the `--json` object, backtest.csv and the plot (PNG, matplotlib Agg)."""
from __future__ import annotations

import csv
import io

import numpy as np

from lstmkit.forecast.backtest import Result
from lstmkit.forecast.series import Series

METRICS = ("mae", "smape", "mase", "coverage")


def summary(results: list[Result], series: list[Series], h: int, K: int, interval: float, run: str) -> dict:
    """The --json object: methods -> mae, smape (%), mase, coverage (fraction), seconds; or failed: why."""
    return {"series": [s.name for s in series], "horizon": h, "origins": K, "interval": interval, "run": run,
            "methods": {r.name: ({**r.metrics, "seconds": r.seconds} if not r.failed else
                                 {"failed": r.failed, "seconds": r.seconds}) for r in results}}


def best_baseline(results: list[Result]) -> Result | None:
    scored = [r for r in results if r.name != "lstm" and not r.failed]
    return min(scored, key=lambda r: r.metrics["mase"]) if scored else None


def table(results: list[Result], interval: float) -> str:
    """A text table: one row per method, and a line comparing the LSTM with the best baseline."""
    head = f"{'method':<16}{'MAE':>10}{'sMAPE %':>10}{'MASE':>8}{f'cover {interval:.0%}':>12}{'seconds':>9}"
    lines = [head, "-" * len(head)]
    for r in results:
        if r.failed:
            lines.append(f"{r.name:<16}failed: {r.failed}")
            continue
        m = r.metrics
        lines.append(f"{r.name:<16}{m['mae']:>10.4g}{m['smape']:>10.3f}{m['mase']:>8.3f}{m['coverage']:>12.1%}"
                     f"{r.seconds:>9.1f}")
    lstm, best = next((r for r in results if r.name == "lstm" and not r.failed), None), best_baseline(results)
    if lstm and best:
        ratio = lstm.metrics["mase"] / best.metrics["mase"]
        lines.append(f"lstm MASE is {ratio:.3f} x the best baseline's ({best.name}, {best.metrics['mase']:.3f})")
    return "\n".join(lines)


def backtest_csv(results: list[Result], series: list[Series], h: int) -> str:
    """Every backtest forecast, one row per method, series, origin and step, with the actual value."""
    by_name = {s.name: s for s in series}
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["method", "series", "origin", "time", "step", "actual", "point", "lower", "upper"])
    for r in results:
        for name, origin, f in r.forecasts:
            s = by_name[name]
            for k, label in enumerate(s.labels(np.arange(origin, origin + h))):
                writer.writerow([r.name, name, origin, label, k + 1, f"{s.values[origin + k]:.6g}",
                                 f"{f.point[k]:.6g}", f"{f.lower[k]:.6g}", f"{f.upper[k]:.6g}"])
    return text.getvalue()


def plot(results: list[Result], series: list[Series], h: int, K: int, interval: float) -> bytes:
    """PNG: the end of each series (at most three), each method's backtest forecasts, the LSTM's interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = series[:3]
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 3.2 * len(shown)), squeeze=False)
    for ax, s in zip(axes[:, 0], shown):
        start = max(0, len(s) - K * h - 4 * max(s.period, h))
        steps = np.arange(start, len(s))
        ax.plot(steps, s.values[start:], color="black", lw=1.2, label=f"{s.name} (actual)")
        for i, r in enumerate(results):
            color = f"C{i}"
            for j, (name, origin, f) in enumerate(x for x in r.forecasts if x[0] == s.name):
                future = np.arange(origin, origin + h)
                ax.plot(future, f.point, color=color, lw=1, label=r.name if j == 0 else None)
                if r.name == "lstm":
                    ax.fill_between(future, f.lower, f.upper, color=color, alpha=0.2,
                                    label=f"lstm {interval:.0%} interval" if j == 0 else None)
        ticks = steps[:: max(1, len(steps) // 6)]
        ax.set_xticks(ticks, s.labels(ticks))
        ax.set_title(f"{s.name}: rolling-origin backtest, {K} origins x {h} steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
