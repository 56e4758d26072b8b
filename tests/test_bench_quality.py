"""lstmkit bench --study quality: trains each recipe as `lstmkit train` does and reports what its run folder says."""
import argparse
import json
import os
import shlex

import pytest

from lstmkit.bench import quality
from lstmkit.cli import main


def test_quick_quality_study_reports_the_runs_metrics(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be, or not to be, that is the question.\n" * 200)
    out = tmp_path / "benchmarks"
    assert main(["bench", "--quick", "--study", "quality", "--data", str(corpus), "--budgets", "180",
                 "--out", str(out)]) == 0
    results = json.loads((out / "quality.json").read_text())
    [row] = results["rows"]
    metrics = quality.read_metrics(tmp_path / "runs" / "quality" / "180s")
    assert row["final_valid_loss"] == metrics[-1]["valid_loss"] and row["steps"] == 3
    assert row["passes"] == (row["final_valid_loss"] <= 1.42)
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench:quality -->" in md and "(benchmarks/quality.png)" in md and f"{row['final_valid_loss']:.4f}" in md
    # a rerun replaces the study's own run folder (lstmkit train would refuse to write over a run)
    assert main(["bench", "--quick", "--study", "quality", "--data", str(corpus), "--budgets", "180",
                 "--out", str(out)]) == 0


def test_a_failing_training_run_stops_the_study_with_its_exit_code(tmp_path):
    binary = tmp_path / "corpus.bin"
    binary.write_bytes(bytes(range(256)) * 10)  # not text: lstmkit train refuses it
    with pytest.raises(SystemExit, match="failed with exit code 2"):
        main(["bench", "--quick", "--study", "quality", "--data", str(binary), "--budgets", "180",
              "--out", str(tmp_path / "benchmarks")])


@pytest.mark.parametrize("args, message", [
    ([], "needs --data"),
    (["--data", "/nonexistent/corpus.txt"], "is not a file"),
])
def test_quality_study_needs_a_corpus(args, message, capsys):
    with pytest.raises(SystemExit, match=message):
        main(["bench", "--quick", "--study", "quality", *args])


def test_quality_study_refuses_an_unknown_budget(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc " * 100)
    with pytest.raises(SystemExit, match=r"--budgets must be among \[180, 1800\], got \[60.0\]"):
        main(["bench", "--quick", "--study", "quality", "--data", str(corpus), "--budgets", "60"])


def test_a_budget_subset_keeps_the_other_recipes_rows_measured_before(tmp_path):
    """--budgets 180 rewrites the JSON: the 30-minute row measured before stays; one of an older recipe (another
    command) stays marked as such, and the table names the current recipe as not yet run."""
    out, root = tmp_path / "benchmarks", tmp_path / "runs" / "quality"
    cfg = argparse.Namespace(json="", out=str(out), quick=False, data="corpus.txt")
    slow = next(r for r in quality.RECIPES if r.budget == 1800)
    args = quality.train_command(cfg.data, slow, root / "1800s", False)
    current = "lstmkit " + shlex.join([*args[:-1], os.path.relpath(root / "1800s")])
    out.mkdir()
    (out / "quality.json").write_text(json.dumps({"rows": [
        {"budget_s": 180, "command": "old"}, {"budget_s": 1800, "command": current, "final_valid_loss": 1.3}]}))
    assert quality.earlier_rows(cfg, root, [180.0]) == [{"budget_s": 1800, "command": current, "target": slow.target,
                                                         "passes": True, "final_valid_loss": 1.3, "why": slow.why,
                                                         "earlier_recipe": False}]
    (out / "quality.json").write_text(json.dumps({"rows": [{"budget_s": 1800, "command": "an older recipe"}]}))
    assert quality.earlier_rows(cfg, root, [180.0]) == [{"budget_s": 1800, "command": "an older recipe",
                                                         "earlier_recipe": True}]
    # a row measured against an older target (1.40) is judged against the current one
    (out / "quality.json").write_text(json.dumps({"rows": [{"budget_s": 1800, "command": "an older recipe",
                                                            "final_valid_loss": 1.3849, "target": 1.40,
                                                            "passes": True}]}))
    [row] = quality.earlier_rows(cfg, root, [180.0])
    assert (row["target"], row["passes"], row["earlier_recipe"]) == (slow.target, 1.3849 <= slow.target, True)


def test_the_table_marks_an_earlier_recipe_and_names_the_current_one():
    slow = next(r for r in quality.RECIPES if r.budget == 1800)
    row = {"budget_s": 1800, "command": "lstmkit train --old", "why": "old reasons", "target": 1.40,
           "final_valid_loss": 1.3849, "final_valid_bits": 1.998, "passes": True, "steps": 7348, "tokens": 15024064,
           "tokens_per_s": 8346.0, "train_s": 1800.0, "wall_s": 1881.0, "earlier_recipe": True}
    waiting = [{"budget_s": 1800, "command": "lstmkit train --new", "target": slow.target, "why": "new reasons"}]
    env = {"command": "lstmkit bench --study quality", "date": "today", "torch": "2.13.0", "cpu": "a CPU",
           "threads": 2, "cores": 2, "load_average": {"before": None, "after": None}}
    md = quality.markdown({"data": "corpus.txt", "rows": [row], "not_yet_run": waiting, "env": env})
    assert "| pass (an earlier recipe) |" in md
    assert f"- 30 min, target ≤ {slow.target:.2f}: `lstmkit train --new`. new reasons." in md
    assert "not yet run" not in quality.markdown({"data": "corpus.txt", "rows": [{**row, "earlier_recipe": False}],
                                                  "env": env})
