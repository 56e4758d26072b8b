"""lstmkit.checkpoint: safetensors + JSON round trips, atomic writes, the previous checkpoint kept, and loading that
refuses foreign, damaged and crafted files (never unpickling)."""
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lstmkit.checkpoint import (FORMAT, LATEST, PREVIOUS, atomic_write, checkpoint_path, load_checkpoint,
                                load_weights, save_checkpoint)
from lstmkit.config import ModelConfig
from lstmkit.models import LanguageModel
from damage import flip_header_byte, flip_tensor_byte, truncate
from error_table import call_row
from train_helpers import lstmkit


def test_round_trip_of_nested_state(tmp_path):
    tied = torch.randn(3, 4)
    state = {"step": 7, "name": "run", "ratio": 0.5, "none": None, "history": [{"loss": 1.5}],
             "by_int": {0: {"t": torch.arange(3)}, 1: {"betas": (0.9, 0.99)}},
             "scalar": torch.tensor(2.0), "a": tied, "b": tied, "rng": torch.get_rng_state()}
    save_checkpoint(tmp_path / "c.safetensors", state)
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded["step"] == 7 and loaded["name"] == "run" and loaded["none"] is None
    assert loaded["history"] == [{"loss": 1.5}]
    assert set(loaded["by_int"]) == {0, 1} and loaded["by_int"][1]["betas"] == [0.9, 0.99]
    assert torch.equal(loaded["by_int"][0]["t"], torch.arange(3))
    assert loaded["scalar"].shape == () and loaded["scalar"].item() == 2.0
    assert torch.equal(loaded["a"], tied) and torch.equal(loaded["b"], tied)
    assert torch.equal(loaded["rng"], torch.get_rng_state())


def test_optimizer_state_round_trip_gives_identical_next_step(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)

    def step(m, o):
        o.zero_grad()
        m(torch.ones(2, 4)).square().sum().backward()
        o.step()

    step(model, opt)
    save_checkpoint(tmp_path / "c.safetensors", {"model": model.state_dict(), "optimizer": opt.state_dict()})
    copy = nn.Linear(4, 3)
    copy_opt = torch.optim.AdamW(copy.parameters(), lr=0.1)
    saved = load_checkpoint(tmp_path / "c.safetensors")
    load_weights(copy, saved["model"], "c")
    copy_opt.load_state_dict(saved["optimizer"])
    step(model, opt)
    step(copy, copy_opt)
    assert torch.equal(model.weight, copy.weight) and torch.equal(model.bias, copy.bias)


def test_tied_weights_save_and_load(tmp_path):
    cfg = ModelConfig(hidden_size=8, embedding_dim=0, tie_weights=True)
    model = LanguageModel(10, cfg)
    save_checkpoint(tmp_path / "c.safetensors", {"model": model.state_dict()})  # two names, one storage
    copy = LanguageModel(10, cfg)
    load_weights(copy, load_checkpoint(tmp_path / "c.safetensors")["model"], "c")
    assert copy.decoder.weight is copy.embedding.weight
    assert torch.equal(copy.decoder.weight, model.embedding.weight)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    atomic_write(path, b"old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]  # no temporary file left behind


def test_a_version_1_checkpoint_without_checksum_loads_when_allowed(tmp_path):
    save_file({"w": torch.arange(3.0)}, str(tmp_path / "v1.safetensors"),
              {"format": FORMAT, "version": "1", "state": json.dumps({"w": {"__tensor__": "w"}, "step": 3})})
    loaded = load_checkpoint(tmp_path / "v1.safetensors", allow_unverified=True)
    assert loaded["step"] == 3 and torch.equal(loaded["w"], torch.arange(3.0))


def test_a_run_folder_keeps_the_checkpoint_before_its_latest(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path / LATEST, {"step": step}, keep=tmp_path / PREVIOUS)
    assert load_checkpoint(tmp_path)["step"] == 3 and load_checkpoint(tmp_path / PREVIOUS)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, PREVIOUS]


# --- files that are refused (docs/errors.md lists these) -------------------------------------------------------

class _Exploit:
    """Unpickling this runs os.mkdir(marker): what a crafted file does under pickle.load or torch.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _good(folder: Path, name: str = "good.safetensors") -> Path:
    save_checkpoint(folder / name, {"step": 4, "w": torch.arange(100.0)})
    return folder / name


def _damaged(damage):
    """A call loading a good checkpoint file after `damage` of its bytes."""
    def call(folder):
        path = _good(folder)
        path.write_bytes(damage(path.read_bytes()))
        load_checkpoint(path)
    return call


def _written(name: str, write):
    """A call loading the file folder/`name` that `write(path)` made."""
    def call(folder):
        write(folder / name)
        load_checkpoint(folder / name)
    return call


def _metadata(**metadata):
    """Write a safetensors file with lstmkit's metadata, changed by `metadata`."""
    return lambda path: save_file({"w": torch.zeros(2)}, str(path), {
        "format": FORMAT, "state": json.dumps({"w": {"__tensor__": "w"}}), **metadata})


def _both_damaged(folder):
    for name in (LATEST, PREVIOUS):
        _good(folder, name).write_bytes(flip_tensor_byte((folder / name).read_bytes()))
    load_checkpoint(folder)


NOT_LSTMKIT = r"; expected an lstmkit checkpoint \(a safetensors file written by `lstmkit train`\)"
DAMAGED = r"is damaged: its SHA-256 checksum does not match \(expected [0-9a-f]{64}, as stored in its header; " \
          r"found [0-9a-f]{64}\); expected the file exactly as lstmkit wrote it"

# (what is wrong, the call, the exception, a regex the message must match)
BAD_CHECKPOINTS = [
    ("file does not exist", lambda tmp: load_checkpoint(tmp / "absent.safetensors"), FileNotFoundError,
     r"absent.safetensors does not exist; expected a run folder containing latest.safetensors or a checkpoint file"),
    ("run folder without a checkpoint", lambda tmp: load_checkpoint(tmp), FileNotFoundError,
     r"latest.safetensors does not exist"),
    ("truncated file", _damaged(truncate), ValueError, r"is not readable: .*incomplete.*" + NOT_LSTMKIT),
    ("one bit flipped in tensor data", _damaged(flip_tensor_byte), ValueError, DAMAGED),
    ("one bit flipped in the JSON header", _damaged(flip_header_byte), ValueError, DAMAGED),
    ("run folder whose latest and previous checkpoints are both damaged", _both_damaged, ValueError,
     r"holds no usable checkpoint: .*latest.safetensors is damaged: .*; and .*previous.safetensors is damaged"),
    ("text file", _written("text.safetensors", lambda p: p.write_text("hello, I am not a checkpoint")), ValueError,
     r"text.safetensors is not readable: .*" + NOT_LSTMKIT),
    ("safetensors file without lstmkit metadata",
     _written("plain.safetensors", lambda p: save_file({"w": torch.zeros(2)}, str(p))), ValueError,
     r"is a safetensors file without lstmkit metadata \(format=None\)" + NOT_LSTMKIT),
    ("pickle that runs code when loaded",
     _written("evil.safetensors", lambda p: p.write_bytes(pickle.dumps(_Exploit(p.parent / "pwned")))), ValueError,
     r"evil.safetensors is not readable: .*" + NOT_LSTMKIT),
    ("torch.save file (.pt)", _written("weights.pt", lambda p: torch.save({"w": torch.zeros(1)}, p)), ValueError,
     r"weights.pt is not readable: .*" + NOT_LSTMKIT),
    ("checkpoint version from the future", _written("v3.safetensors", _metadata(version="3")), ValueError,
     r"has checkpoint version 3; expected version 1 to 2"),
    ("version 2 checkpoint without its checksum", _written("v2.safetensors", _metadata(version="2")), ValueError,
     r"has no sha256 checksum in its header, as checkpoint version 2 has" + NOT_LSTMKIT),
    ("weights that do not fit the model",
     lambda: load_weights(nn.Linear(4, 3), {"weight": torch.zeros(3, 5), "extra": torch.zeros(1)}, "ckpt"),
     ValueError, r"ckpt does not fit the model: missing bias; unexpected extra; weight has shape \(3, 5\), "
                 r"the model expects \(3, 4\)"),
]


@pytest.mark.parametrize("what,call,exc,match", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoint(what, call, exc, match, tmp_path):
    with pytest.raises(exc, match=match):
        call_row(call, tmp_path)


def test_loading_never_unpickles(tmp_path, capsys):
    """Files that would run code under pickle or torch.load: as a file, and as a run folder's latest checkpoint,
    for every command that reads checkpoints. Each is refused with a clear error and nothing runs."""
    marker, files, run = tmp_path / "pwned", tmp_path / "files", tmp_path / "run"
    files.mkdir(), run.mkdir()
    (files / "evil.pt").write_bytes(pickle.dumps(_Exploit(marker)))
    torch.save({"w": _Exploit(marker)}, files / "evil-zip.pt")  # torch's zip format, the pickle inside
    (run / LATEST).write_bytes(pickle.dumps(_Exploit(marker)))
    for source in (files / "evil.pt", files / "evil-zip.pt", run):
        with pytest.raises(ValueError, match="expected an lstmkit checkpoint"):
            load_checkpoint(source)
        for argv in (["sample", source], ["train", "--resume", source],
                     ["compress", source, "--out", tmp_path / "out", "--prune", "0.5"]):
            assert lstmkit(*argv) == 2, argv
            assert re.search(rf"lstmkit {argv[0]}: error: .*{checkpoint_path(source).name} is not readable: "
                             r".*expected an lstmkit checkpoint", capsys.readouterr().err), argv
    assert not marker.exists() and not (tmp_path / "out").exists()
    torch.load(files / "evil-zip.pt", weights_only=False)  # what the files would have done
    assert marker.is_dir()
