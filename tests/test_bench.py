"""lstmkit bench: the quick run writes its files, the agreement gate refuses a wrong engine, the fusion
implementations equal torch.nn.LSTM with identical FLOPs, and one study's section leaves the others alone."""
import json

import pytest
import torch
from torch import nn

from lstmkit.bench import dense, fusion, report
from lstmkit.bench.cases import Case
from lstmkit.bench.config import BenchConfig
from lstmkit.bench.flops import ProductCounter, lstm_flops
from lstmkit.bench.memory import peak_memory
from lstmkit.cli import main
from lstmkit.engine.native import extension


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    """Both studies, --quick, written into one repo-like folder: BENCHMARKS.md, benchmarks/, docs/."""
    root = tmp_path_factory.mktemp("repo")
    for study in ("engine", "fusion"):
        assert main(["bench", "--quick", "--study", study, "--out", str(root / "benchmarks")]) == 0
    return root


def test_quick_engine_writes_json_markdown_and_png(quick_out):
    results = json.loads((quick_out / "benchmarks" / "engine.json").read_text())
    assert results["env"]["command"] == f"lstmkit bench --quick --out {quick_out / 'benchmarks'}"
    assert {r["case"] for r in results["rows"]} == {"Q", "Q-proj", "Q-packed"}
    assert all(r["agrees"] and r["time_s"]["lstmkit"] > 0 for r in results["rows"])
    assert all("memory_ratio" in r for r in results["rows"] if r["mode"] == "training")
    assert (quick_out / "benchmarks" / "engine.png").read_bytes()[:4] == b"\x89PNG"
    md = (quick_out / "BENCHMARKS.md").read_text()
    assert "<!-- bench:engine -->" in md and "(benchmarks/engine.png)" in md and "| Q-packed |" in md


def test_quick_fusion_writes_its_section_and_doc(quick_out):
    md = (quick_out / "BENCHMARKS.md").read_text()
    assert "<!-- bench:engine -->" in md and "<!-- bench:fusion -->" in md  # the second run kept the first
    results = json.loads((quick_out / "benchmarks" / "fusion.json").read_text())
    doc = (quick_out / "docs" / "fusion.md").read_text()
    assert "(../benchmarks/fusion.json)" in doc and results["env"]["command"] in doc
    assert (quick_out / "benchmarks" / "fusion.png").read_bytes()[:4] == b"\x89PNG"


def test_agreement_gate_refuses_a_wrong_implementation():
    def perturb(model):
        with torch.no_grad():
            model.weight_hh_l0[0, 0] += 0.1

    cfg = BenchConfig(repeats=1, warmup=0)
    rows = dense.run_case(Case("Q", 8, 4, 16, "dense"), cfg, peak_gflops=1.0, after_load=perturb)
    assert [r["mode"] for r in rows] == list(dense.MODES)
    assert all(not r["agrees"] and r["max_rel_err"] > cfg.tol and "time_s" not in r for r in rows)
    cells = dense._cells(rows[0])
    assert "disagrees" in cells[3] and cells[-1] == "FAIL" and len(cells) == len(dense.HEADERS)


@pytest.mark.parametrize("I,H", [(16, 16), (12, 20)])
def test_fusion_implementations_equal_nn_lstm(I, H):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H)
    x = torch.randn(7, 3, I)
    with torch.no_grad():
        expected = ref(x)[0]
        for _, f in fusion.FUSIONS.values():
            got = f(x, ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_fusion_flops_identical_and_calls_as_designed():
    T, B, I, H = 5, 3, 12, 20
    ref = nn.LSTM(I, H)
    x = torch.randn(T, B, I)
    weights = (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
    counted = {}
    with torch.no_grad():
        for k, (_, f) in fusion.FUSIONS.items():
            with ProductCounter() as pc:
                f(x, *weights)
            counted[k] = (pc.flops, pc.calls)
    assert {flops for flops, _ in counted.values()} == {lstm_flops(T * B, I, H)} == {2 * 4 * H * (I + H) * T * B}
    assert {k: calls for k, (_, calls) in counted.items()} == {"a": 8 * T, "b": T, "c": T + 1}


def test_replace_section_keeps_the_other_sections():
    text = report.BENCHMARKS_HEADER + "\n<!-- bench:engine -->\nold engine\n<!-- /bench:engine -->\n\nmy notes\n"
    text = report.replace_section(text, "fusion", "fusion v1")  # absent: appended
    text = report.replace_section(text, "fusion", "fusion v2")  # present: replaced in place
    text = report.replace_section(text, "engine", "new engine")
    assert text.count("<!-- bench:fusion -->") == 1 and "fusion v1" not in text and "fusion v2" in text
    assert "old engine" not in text and "new engine" in text and "my notes" in text
    assert text.index("new engine") < text.index("my notes") < text.index("fusion v2")
    assert report.replace_section(text, "engine", "new engine") == text


def test_peak_memory_integrates_allocations_and_frees():
    def step():
        x = torch.empty(1_000_000)  # 4 MB
        y = torch.empty(2_000_000)  # 8 MB: 12 MB held
        del x  # 8 MB held
        z = torch.empty(500_000)  # 10 MB held
        return y, z

    assert 12_000_000 <= peak_memory(step) < 12_000_000 + 4096


def test_command_lists_the_non_default_flags():
    assert BenchConfig(quick=True, shapes="S,M").command() == "lstmkit bench --shapes S,M --quick"
    assert BenchConfig().command() == "lstmkit bench"


def test_busy_note_only_when_others_compete():
    env = {"cores": 2, "threads": 2, "load_average": {"before": 0.2, "after": 2.3}}  # our own 2 threads
    assert report.busy_note(env) == ""
    env["load_average"]["before"] = 4.0
    assert "busy" in report.busy_note(env)


def test_a_missed_target_is_compared_with_the_peak_bound():
    def row(nn_pct, ours_pct, target):
        return {"case": "X", "mode": "inference", "ratio": nn_pct / ours_pct, "time_target": target,
                "pct_peak": {"nn.LSTM": nn_pct, "lstmkit": ours_pct}}

    text = dense.misses([row(70, 90, 0.5), row(40, 60, 0.5)], best=95)
    assert "the target is under the bound 0.70, out of reach" in text
    assert "the target needs 140 % of the peak;" in text
    assert "bound 0.40: reachable in principle; the target needs 80 % of the peak, lstmkit runs at 60 %" in text
    assert "its best on any row here is 95 %" in text
    with_ceiling = dense.misses([row(70, 90, 0.5)], best=95, peak={"peak": 200.0, "fma_ceiling": 250.0})
    assert "the target needs 140 % of the peak (112 % of the FMA ceiling)" in with_ceiling  # 280 = 112 % of 250
    assert "its best on any row here is 95 % (76 % of the FMA ceiling)" in with_ceiling


@pytest.mark.skipif(extension() is None, reason="native extension not built")
def test_fma_ceiling_bounds_the_measured_gemm_rate():
    from lstmkit.bench import peak

    # a busy machine (another process on a core) slows the all-threads ceiling far more than a GEMM: up to five
    # alternating samples, the best ceiling so far bounding a GEMM rate (10 % for a slow spell)
    ceiling, rates = 0.0, []
    for _ in range(5):
        ceiling = max(ceiling, peak.fma_ceiling("cpu"))
        rates.append(peak.gemm_gflops("torch.mm", 256, 256, 256, repeats=3, warmup=1))
        if min(rates) < 1.1 * ceiling:
            break
    assert ceiling > 0 and min(rates) < 1.1 * ceiling, (ceiling, rates)
    assert peak.fma_ceiling("meta") is None
    with pytest.raises(RuntimeError, match="threads and iterations must be >= 1"):
        extension().fma_ceiling(0, 10)


def test_rounds_report_the_median_round_and_the_range():
    def row(ratio, agrees=True):
        return {"case": "X", "mode": "inference", "ratio": ratio, "agrees": agrees, "marker": ratio}

    rounds = [[row(1.10), row(0.5)], [row(0.90), row(0.7, agrees=False)], [row(1.00), row(0.6)]]
    median, refused = dense.median_rounds(rounds)
    assert median["marker"] == 1.00 and median["ratio_range"] == [0.90, 1.10]
    assert median["round_ratios"] == [1.10, 0.90, 1.00]
    assert not refused["agrees"]  # a round that disagreed with nn.LSTM is what the row shows
    two = dense.median_rounds([[row(1.2)], [row(0.8)]])[0]
    assert two["marker"] == 1.2 and two["ratio_range"] == [0.8, 1.2]  # the less favourable middle
