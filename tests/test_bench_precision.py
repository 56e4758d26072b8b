"""lstmkit bench --study precision: fp32 for a budget, bf16 for the same budget and bf16 for fp32's step count."""
import json

from lstmkit.bench import quality
from lstmkit.cli import main


def test_quick_precision_study_trains_bf16_for_fp32s_steps_and_reports_the_runs(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be, or not to be, that is the question.\n" * 200)
    out = tmp_path / "benchmarks"
    assert main(["bench", "--quick", "--study", "precision", "--data", str(corpus), "--out", str(out)]) == 0
    results = json.loads((out / "precision.json").read_text())
    rows = results["rows"]
    runs = tmp_path / "runs" / "precision"
    for name, folder in (("fp32", "fp32-time"), ("bf16, same time", "bf16-time"), ("bf16, same steps", "bf16-steps")):
        assert rows[name]["valid_loss"] == quality.read_metrics(runs / folder)[-1]["valid_loss"]
        assert json.loads((runs / folder / "config.json").read_text())["train"]["precision"] == name[:4]
    assert rows["bf16, same steps"]["steps"] == rows["fp32"]["steps"]
    ratio = rows["bf16, same steps"]["valid_loss"] / rows["fp32"]["valid_loss"]
    assert results["same_steps_ratio"] == ratio and results["passes"] == (ratio <= 1.005)
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench:precision -->" in md and f"{ratio:.4f}×" in md
