"""lstmkit info: versions, the native engine's state, and the engine of each layer kind as the dispatch runs it."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch

import lstmkit
from lstmkit import info
from lstmkit.config import ModelConfig
from lstmkit.engine import build, native
from lstmkit.models.structure import STRUCTURES
from train_helpers import lstmkit as run_lstmkit

KINDS = ["dense", "projection", "packed", "peephole", *(name for name in STRUCTURES if name != "dense")]


def info_json(capsys) -> dict:
    assert run_lstmkit("info", "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_json_names_the_versions_and_the_native_build(capsys):
    got = info_json(capsys)
    assert got["lstmkit"] == lstmkit.__version__ and got["torch"] == torch.__version__
    assert got["numpy"] == numpy.__version__ and got["python"] == ".".join(map(str, sys.version_info[:3]))
    assert got["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert got["threads"] == torch.get_num_threads()
    assert got["native"] is native.available() and list(got["engines"]) == KINDS
    if got["native"]:
        folder = Path(got["native_build"])
        assert folder == build.status().directory and (folder / (folder.name + build.LIBRARY_SUFFIX)).is_file()
        assert got["native_reason"] is None and got["engines"]["dense"] == "native"
    assert got["engines"]["circulant"] == "fused"  # no native form


def test_as_a_subprocess_from_another_folder_native_is_on(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LSTMKIT_NO_NATIVE"}
    result = subprocess.run([sys.executable, "-m", "lstmkit", "info", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["native"] is True  # this machine has a compiler and ninja


def test_no_native_says_false_with_the_reason(capsys, monkeypatch):
    monkeypatch.setenv("LSTMKIT_NO_NATIVE", "1")
    got = info_json(capsys)
    assert got["native"] is False and "LSTMKIT_NO_NATIVE" in got["native_reason"] and got["native_build"] is None
    assert set(got["engines"].values()) == {"fused"}


def test_a_failed_build_says_false_with_the_reason_and_the_log(capsys, monkeypatch):
    failed = build.Build(None, Path("/x/build"), "RuntimeError: no C++ compiler", Path("/x/build/build.log"))
    monkeypatch.setattr(build, "_build", lambda: failed)
    got = info_json(capsys)
    assert got["native"] is False and got["native_reason"] == failed.error
    assert got["native_log"] == str(failed.log) and set(got["engines"].values()) == {"fused"}


def test_the_engines_are_the_ones_the_dispatch_runs(monkeypatch):
    """Each layer kind trained a step with impl="auto": the engine that ran is the one info names."""
    ran = []
    for name, attr in (("native_layer", "_run"), ("fused_layer", "fused_layer")):  # what auto_layer calls
        real = getattr(native, attr)
        monkeypatch.setattr(native, attr, lambda *a, _real=real, _name=name, **k: ran.append(_name) or _real(*a, **k))
    cfg = ModelConfig(hidden_size=64, embedding_dim=16)
    for name, (lstm, packed) in info.layer_kinds(cfg, 16).items():
        said = info.engine(lstm, packed)
        x = torch.randn(5, 3, 16)
        if packed:
            x = lstmkit.pack_padded_sequence(x, torch.tensor([5, 4, 2]))
        out = lstm(x)[0]
        (out.data if packed else out).sum().backward()
        assert ran == [f"{said}_layer"], name
        ran.clear()


def test_the_engines_follow_supports(capsys, monkeypatch):
    monkeypatch.setattr(native, "supports", lambda *args, **kwargs: False)
    assert set(info_json(capsys)["engines"].values()) == {"fused"}


def test_the_table_is_aligned(capsys):
    assert run_lstmkit("info") == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.strip().split("  ")[0]: line for line in lines}
    assert {"lstmkit", "torch", "python", "numpy", "cpu capability", "threads", "native engine", *KINDS} <= set(rows)
    columns = {re.search(r"\S  +(\S)", line).start(1) for line in lines if not line.startswith("engine,")}
    assert len(columns) == 1  # every value starts in one column
    assert rows["native engine"].endswith("built, used" if native.available() else "")
