"""`lstmkit bench --study forecast --quick`: the study's pipeline (a subprocess per series), JSON and Markdown."""
import json

import pytest

from lstmkit.bench import forecast
from lstmkit.cli import main


@pytest.mark.slow  # three subprocesses: about 40 s
def test_quick_forecast_study_writes_its_section(tmp_path):
    out = tmp_path / "benchmarks"
    assert main(["bench", "--quick", "--study", "forecast", "--out", str(out)]) == 0
    results = json.loads((out / "forecast.json").read_text())
    assert [r["series"] for r in results["rows"]] == list(forecast.SERIES)
    for r in results["rows"]:
        lstm = r["methods"]["lstm"]
        saved = json.loads((tmp_path / "runs" / "forecast-bench" / r["series"] / "metrics.json").read_text())
        assert lstm == saved["methods"]["lstm"]  # the table is the run's own backtest
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench:forecast -->" in text and "| co2 | lstm |" in text and (out / "forecast.png").is_file()


def test_markdown_marks_the_best_mase_and_names_failures():
    env = {"command": "lstmkit bench --study forecast", "date": "d", "torch": "t", "cpu": "c", "threads": 1,
           "cores": 2, "load_average": {"before": None, "after": None}}
    metrics = lambda mase: {"mae": 1.0, "smape": 2.0, "mase": mase, "coverage": 0.8, "seconds": 3.0}  # noqa: E731
    rows = [{"series": "co2", "command": "lstmkit forecast --series co2", "wall_s": 9.0, "horizon": 12,
             "origins": 4, "interval": 0.8,
             "methods": {"lstm": metrics(0.5), "ets": metrics(0.4), "arima": {"failed": "why", "seconds": 1.0}}}]
    text = forecast.markdown({"rows": rows, "env": env})
    assert "| co2 | ets | 1 | 2.00 | **0.400** | 80.0% | 3.0 |" in text
    assert "| co2 | lstm | 1 | 2.00 | 0.500 |" in text and "| co2 | arima | failed | why |" in text
