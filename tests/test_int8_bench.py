"""lstmkit bench --precision int8: the quick run writes its own section, each row timed only once lstmkit's int8
outputs agree with the fp32 torch.nn.LSTM's, each with its % of the int8 ceiling; a wrong engine is refused."""
import json

import pytest
import torch

from lstmkit.bench import int8
from lstmkit.bench.cases import Case
from lstmkit.bench.config import BenchConfig
from lstmkit.cli import main
from lstmkit.engine import native

pytestmark = pytest.mark.skipif(not native.available(), reason="native extension unavailable")


def test_quick_int8_table_writes_its_section(tmp_path):
    out = tmp_path / "benchmarks"
    assert main(["bench", "--quick", "--precision", "int8", "--out", str(out)]) == 0
    results = json.loads((out / "engine-int8.json").read_text())
    assert {r["case"] for r in results["rows"]} == {"Q", "Q-proj", "Q-packed"}
    assert all(r["agrees"] and r["max_rel_err"] > 0 for r in results["rows"]), "int8 outputs equal fp32's: not int8"
    assert all(r["time_s"][name] > 0 and r["pct_ceiling"][name] > 0 for r in results["rows"] for name in int8.IMPLS)
    assert all(set(r["ratios"]) == set(int8.REFS) for r in results["rows"])
    assert results["ceilings"]["int8"] > 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench:engine-int8 -->" in md and "| Q-packed |" in md and "% int8 ceiling" in md


def test_targets_are_set_at_l_and_xl_only():
    assert int8.time_targets(Case("L", 64, 64, 512, "proj")) == {"nn.LSTM bf16": 0.65, "nn.LSTM fp32": 0.35}
    assert int8.time_targets(Case("M", 64, 32, 256, "dense")) is None


def test_the_agreement_gate_refuses_a_wrong_int8_engine(monkeypatch):
    quantized = int8._int8_model

    def perturbed(ours):
        q = quantized(ours)
        q.weight_hh_l0.scale.mul_(1.5)
        return q
    monkeypatch.setattr(int8, "_int8_model", perturbed)
    row = int8.run_case(Case("Q", 8, 4, 16, "dense"), BenchConfig(repeats=1, warmup=0), ceiling=1.0)
    assert not row["agrees"] and "time_s" not in row


def test_a_ceiling_measured_low_once_is_settled_by_the_second_measurement():
    """A busy spell during the first ceiling measurement halves it; the table's bound is the larger of the two and
    the rows' % of it follow."""
    from lstmkit.bench.peak import settled
    rows = [{"pct_ceiling": {"lstmkit": 150.0, "nn.LSTM": 120.0}}, {"case": "no timing"}]
    ceilings = settled({"bf16": 236.0, "fp32": 235.0}, {"bf16": lambda: 472.0, "fp32": lambda: 118.0}, rows, "bf16")
    assert ceilings == {"bf16": 472.0, "fp32": 235.0}
    assert rows[0]["pct_ceiling"] == {"lstmkit": 75.0, "nn.LSTM": 60.0} and rows[1] == {"case": "no timing"}
