"""lstmkit sample and lstmkit compare: dry runs in-process and as subprocesses, and bad input."""
import json
import re

import pytest

from lstmkit.compare import apply_settings, slug
from lstmkit.config import CONFIGS
from train_helpers import TINY, lstmkit, lstmkit_subprocess, small_corpus


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    assert lstmkit("train", "--data", small_corpus(folder), *TINY, "--steps", "2", "--out", folder / "run") == 0
    return folder / "run"


def test_sample_continues_the_prompt(lm_run, capsys):
    assert lstmkit("sample", lm_run, "--prompt", "The ", "--length", "25", "--top-k", "5", "--seed", "1") == 0
    first = capsys.readouterr().out
    assert first.startswith("The ") and len(first.rstrip("\n")) >= 4
    assert lstmkit("sample", lm_run / "latest.safetensors", "--prompt", "The ", "--length", "25", "--top-k", "5",
                   "--seed", "1") == 0
    assert capsys.readouterr().out == first  # same seed, same text; a run folder means its latest checkpoint


def test_sample_dry_run(lm_run, capsys):
    assert lstmkit("sample", lm_run, "--dry-run") == 0
    assert len(capsys.readouterr().out.strip()) > 0


def test_sample_dry_run_as_a_subprocess(lm_run):
    result = lstmkit_subprocess("sample", lm_run, "--dry-run", "--temperature", "0")
    assert result.returncode == 0, result.stderr


def test_sample_refuses_bad_input(lm_run, tmp_path, capsys):
    before = (lm_run / "latest.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(before[: len(before) // 2])
    assert lstmkit("sample", tmp_path / "cut.safetensors") == 2
    assert "cut.safetensors is not readable" in capsys.readouterr().err
    assert lstmkit("sample", tmp_path / "absent") == 2
    assert "does not exist; expected a run folder containing latest.safetensors" in capsys.readouterr().err
    assert lstmkit("sample", lm_run, "--prompt", "\u2603") == 2
    assert "not in the vocabulary" in capsys.readouterr().err
    assert lstmkit("train", "--task", "adding", "--dry-run", "--hidden-size", "8", "--out", tmp_path / "adding") == 0
    assert lstmkit("sample", tmp_path / "adding") == 2
    assert "checkpoint of the 'adding' task; expected a language model" in capsys.readouterr().err
    assert (lm_run / "latest.safetensors").read_bytes() == before


def test_compare_dry_run_writes_table_plot_and_json(tmp_path, capsys):
    data = small_corpus(tmp_path)
    code = lstmkit("compare", "--dry-run", "--data", data, *TINY, "--config", "hidden=16",
                   "--config", "hidden=24,layers=2,proj=8", "--out", tmp_path / "cmp")
    assert code == 0
    rows = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [row["config"] for row in rows] == ["hidden=16", "hidden=24,layers=2,proj=8"]
    assert rows[0]["params"] < rows[1]["params"]
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert table.startswith("| configuration | parameters | valid loss | tokens/s |") and "hidden=16" in table
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    assert (tmp_path / "cmp" / "hidden-16" / "latest.safetensors").exists()


def test_compare_default_set_as_a_subprocess(tmp_path):
    result = lstmkit_subprocess("compare", "--dry-run", "--data", small_corpus(tmp_path), "--out", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    assert len(json.loads((tmp_path / "cmp" / "results.json").read_text())) == 4


@pytest.mark.parametrize("spec, message", [
    ("hidden", r"expected settings like 'hidden=256,layers=2'; given 'hidden'"),
    ("width=3", r"unknown setting 'width'; expected one of .*hidden-size"),
    ("layers=two", r"num_layers expects an int; given 'two'"),
    ("structure=sparse", r"structure must be one of dense(, [a-z-]+)*; given 'sparse'"),
])
def test_compare_bad_config_is_refused_before_training(tmp_path, capsys, spec, message):
    assert lstmkit("compare", "--dry-run", "--config", spec, "--out", tmp_path / "cmp") == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "cmp").exists()


def test_settings_accept_flag_names_and_aliases():
    base = {name: cls() for name, cls in CONFIGS.items()}
    configs = apply_settings("hidden-size=64, layers=3, lr=0.01, tie=true, emb=0", base)
    assert (configs["model"].hidden_size, configs["model"].num_layers) == (64, 3)
    assert configs["model"].tie_weights is True and configs["train"].lr == 0.01
    assert slug("hidden=64,layers=3") == "hidden-64_layers-3"
