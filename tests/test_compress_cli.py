"""lstmkit compress: the compressed run folder and its comparison, weight tying kept, recompression, and bad input
(clear errors, exit code 2, the input run folder byte for byte unchanged)."""
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from lstmkit.checkpoint import LATEST
from lstmkit.compress import saved
from lstmkit.config import DataConfig, ModelConfig
from lstmkit.maps import Int8Map, LowRankMap, SparseMap
from lstmkit.models import LanguageModel, LanguageModelTask
from lstmkit.sample import load_language_model
from train_helpers import TINY, lstmkit, lstmkit_subprocess, small_corpus

FAST = ["--repeats", "1", "--eval-batches", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny tied-weights language model trained a few steps."""
    folder = tmp_path_factory.mktemp("compress")
    corpus = small_corpus(folder)
    assert lstmkit("train", "--data", corpus, *TINY, "--embedding-dim", "0", "--tie-weights", "--steps", "3",
                   "--sample-length", "5", "--out", folder / "run") == 0
    return folder / "run"


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def load(folder):
    state, recipe = saved.read(folder)
    cfg = state["config"]
    task = LanguageModelTask(DataConfig(**cfg["data"]), state["metadata"])
    model = saved.load_into(task.build_model(ModelConfig(**cfg["model"])), state, recipe, str(folder)).eval()
    return model, task, recipe


def test_prune_finetune_quantize(run, tmp_path, capsys):
    before = snapshot(run)
    out = tmp_path / "out"
    assert lstmkit("compress", run, "--out", out, "--prune", "0.8", "--prune-schedule", "agp", "--finetune-steps",
                   "4", "--quantize", "int8", *FAST) == 0
    assert snapshot(run) == before
    assert {LATEST, "config.json", "compress.md", "compress.json"} <= {p.name for p in out.iterdir()}
    table = capsys.readouterr().out
    assert "| original |" in table and "prune 0.8 unstructured, quantize int8" in table
    result = json.loads((out / "compress.json").read_text())
    original, compressed = result["rows"]
    assert compressed["lstm_sparsity"] >= 0.79 and compressed["size_ratio"] > 1.5  # embeddings stay fp32
    assert compressed["parameters"] == original["parameters"] + 2 * 4 * 24  # int8 stored dense, + a scale a row

    model, task, recipe = load(out)
    assert [s["op"] for s in recipe] == ["prune", "quantize"]
    assert isinstance(model.lstm.weight_hh_l0, Int8Map)
    assert model.decoder.weight is model.embedding.weight  # weight tying kept
    assert task.evaluate(model, max_batches=2)["valid_loss"] == pytest.approx(compressed["valid_loss"])


def test_convert_distill_json_and_recompress(run, tmp_path, capsys):
    out = tmp_path / "lowrank"
    assert lstmkit("compress", run, "--out", out, "--to", "lowrank:4", "--distill", "--finetune-steps", "2",
                   "--json", *FAST) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recipe"] == [{"op": "convert", "to": "lowrank:4"}]
    assert result["rows"][1]["parameters"] < result["rows"][0]["parameters"]
    again = tmp_path / "again"
    before = snapshot(out)
    assert lstmkit("compress", out, "--out", again, "--quantize", "int8", *FAST) == 0
    assert snapshot(out) == before
    model, _, recipe = load(again)
    assert [s["op"] for s in recipe] == ["convert", "quantize"]
    assert isinstance(model.lstm.weight_hh_l0.inner, Int8Map)  # the low-rank factors, each quantized
    assert lstmkit("compress", again, "--out", tmp_path / "no", "--finetune-steps", "2", *FAST) == 2
    assert "is quantized (inference-only)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pruning works on dense LSTM weights"):
        saved.apply_recipe(model, [{"op": "prune", "sparsity": 0.5}])  # low-rank factors are not pruned


def test_balanced_pruning_stores_a_bit_mask(run, tmp_path):
    out = tmp_path / "balanced"
    assert lstmkit("compress", run, "--out", out, "--prune", "0.75", "--prune-mode", "balanced", *FAST) == 0
    model, _, _ = load(out)
    m = model.lstm.weight_hh_l0
    assert isinstance(m, SparseMap) and m.mask.sum(1).unique().tolist() == [m.in_features // 4]
    state, _ = saved.read(out)
    assert state["trainer"]["model"]["lstm.weight_hh_l0.mask_bits"].dtype == torch.uint8


def test_dry_run(run, tmp_path):
    assert lstmkit("compress", run, "--out", tmp_path / "dry", "--dry-run", "--prune", "0.5", "--finetune-steps",
                   "50", "--quantize", "fixed16") == 0
    assert (tmp_path / "dry" / LATEST).is_file()


@pytest.mark.parametrize("steps, weight", [(["--prune", "0.8", "--quantize", "int8"], Int8Map),
                                           (["--to", "lowrank:4"], LowRankMap)])
def test_sample_from_a_compressed_folder(run, tmp_path, capsys, steps, weight):
    out = tmp_path / "small"
    assert lstmkit("compress", run, "--out", out, "--dry-run", *steps) == 0
    capsys.readouterr()
    assert lstmkit("sample", out, "--prompt", "The ", "--length", "20", "--temperature", "0.8", "--seed", "3") == 0
    text = capsys.readouterr().out
    model, vocab = load_language_model(out)
    assert isinstance(model.lstm.weight_hh_l0, weight)
    compressed, _, _ = load(out)  # as `lstmkit compress` loads it: the same text from the same seed
    ids = compressed.generate(vocab.encode_prompt("The "), 20, 0.8, 0, torch.Generator().manual_seed(3))
    assert text == "The " + vocab.separator + vocab.decode(ids.tolist()) + "\n"


def _not_lstmkit(folder):
    save_file({"w": torch.zeros(2)}, str(folder / "foreign.safetensors"))
    return folder / "foreign.safetensors"


def _garbage(folder):
    (folder / "garbage.safetensors").write_bytes(b"\x00not a checkpoint" * 10)
    return folder / "garbage.safetensors"


@pytest.mark.parametrize("case, args, message", [
    ("foreign", ["--prune", "0.5"], "without lstmkit metadata"),
    ("garbage", ["--prune", "0.5"], "not readable"),
    ("run", ["--prune", "1.0"], r"--prune must be a finite number in \[0, 1\); given 1.0"),
    ("run", ["--prune=-0.1"], r"--prune must be a finite number in \[0, 1\); given -0.1"),
    ("run", ["--to", "squiggly:3"], "unknown structure 'squiggly'"),
    ("run", ["--to", "lowrank"], "needs an argument"),
    ("run", ["--to", "lowrank:999"], "rank must be in"),
    ("run", [], "nothing to do"),
    ("run", ["--to", "lowrank:4", "--distill"], "--distill trains .*expected --finetune-steps N > 0"),
    ("inside", ["--prune", "0.5"], "inside the input run folder"),
])
def test_bad_input(run, tmp_path, capsys, case, args, message):
    (tmp_path / "in").mkdir()
    source = {"foreign": _not_lstmkit, "garbage": _garbage}.get(case, lambda _: run)(tmp_path / "in")
    out = run / "sub" if case == "inside" else tmp_path / "out"
    watched = source.parent if source.is_file() else source
    before = snapshot(watched)
    assert lstmkit("compress", source, "--out", out, *args, *FAST) == 2
    err = capsys.readouterr().err
    assert "lstmkit compress: error:" in err
    assert re.search(message, err), err
    assert snapshot(watched) == before and not (out / LATEST).exists()


def test_bad_structure_as_a_subprocess(run, tmp_path):
    result = lstmkit_subprocess("compress", run, "--out", tmp_path / "out", "--to", "bogus:1")
    assert result.returncode == 2 and "unknown structure 'bogus'" in result.stderr


def test_weight_tying_still_checks_its_dimensions():
    with pytest.raises(ValueError, match="weight tying needs embedding_dim"):
        LanguageModel(10, ModelConfig(hidden_size=16, embedding_dim=8, tie_weights=True))


def test_quick_compress_study(tmp_path):
    """`lstmkit bench --study compress --quick` writes its JSON, PNG and BENCHMARKS.md section."""
    assert lstmkit("bench", "--quick", "--study", "compress", "--out", tmp_path / "benchmarks") == 0
    results = json.loads((tmp_path / "benchmarks" / "compress.json").read_text())
    assert {"kernels", "engine", "gemm_sweep", "lstm_sweep", "lm"} <= set(results)
    assert {r["variant"] for r in results["engine"]} >= {"fp32", "int8", "bf16", "fixed16", "sparse 80%"}
    assert (tmp_path / "benchmarks" / "compress.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- bench:compress -->" in md and "distillation" in md
