"""lstmkit bench --precision bf16: the quick run writes its own section, each row timed only once its bf16 outputs
agree with torch.nn.LSTM's, each with its % of the bf16 ceiling; a wrong engine is refused."""
import json

import pytest
import torch

from lstmkit.bench import bf16
from lstmkit.bench.cases import Case
from lstmkit.bench.config import BenchConfig
from lstmkit.cli import main
from lstmkit.engine import native

pytestmark = pytest.mark.skipif(not native.available(), reason="native extension unavailable")


def test_quick_bf16_table_writes_its_section(tmp_path):
    out = tmp_path / "benchmarks"
    assert main(["bench", "--quick", "--precision", "bf16", "--out", str(out)]) == 0
    results = json.loads((out / "engine-bf16.json").read_text())
    assert {r["case"] for r in results["rows"]} == {"Q", "Q-proj", "Q-packed"}
    assert {r["mode"] for r in results["rows"]} == set(bf16.MODES)
    assert all(r["agrees"] and r["time_s"]["lstmkit"] > 0 and r["pct_ceiling"]["lstmkit"] > 0
               for r in results["rows"])
    assert results["ceilings"]["bf16"] > 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench:engine-bf16 -->" in md and "| Q-packed |" in md and "% bf16 ceiling" in md


def test_precision_is_refused_with_another_study():
    with pytest.raises(SystemExit, match="--precision bf16 runs with the study"):
        main(["bench", "--quick", "--precision", "bf16", "--study", "fusion"])


def test_the_agreement_gate_refuses_a_wrong_bf16_engine(monkeypatch):
    pair = bf16._bf16_pair

    def perturbed(case, seed):
        ours, ref = pair(case, seed)
        with torch.no_grad():
            ours.weight_hh_l0.mul_(1.5)
        return ours, ref
    monkeypatch.setattr(bf16, "_bf16_pair", perturbed)
    rows = bf16.run_case(Case("Q", 8, 4, 16, "dense"), BenchConfig(repeats=1, warmup=0), ceiling=1.0)
    assert rows and all(not r["agrees"] and "time_s" not in r for r in rows)
