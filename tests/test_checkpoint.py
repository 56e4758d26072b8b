"""lstmkit.checkpoint: safetensors + JSON round trips, atomic writes, and loading that refuses foreign files."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lstmkit.checkpoint import atomic_write, load_checkpoint, load_weights, save_checkpoint
from lstmkit.config import ModelConfig
from lstmkit.models import LanguageModel


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


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist; expected a run folder containing latest.safetensors"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_foreign_truncated_and_unlabelled_files_are_refused(tmp_path):
    save_checkpoint(tmp_path / "good.safetensors", {"w": torch.randn(100)})
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[:-40])
    (tmp_path / "text.safetensors").write_text("hello, I am not a checkpoint")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    expected = r"expected an lstmkit checkpoint \(a safetensors file written by `lstmkit train`\)"
    for name in ("truncated", "text"):
        with pytest.raises(ValueError, match=rf"{name}.safetensors is not readable: .*; {expected}"):
            load_checkpoint(tmp_path / f"{name}.safetensors")
    with pytest.raises(ValueError, match=rf"without lstmkit metadata \(format=None\); {expected}"):
        load_checkpoint(tmp_path / "plain.safetensors")


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, ("/tmp/lstmkit-pwned-by-pickle",))


def test_loading_never_unpickles(tmp_path):
    marker = "/tmp/lstmkit-pwned-by-pickle"
    if os.path.exists(marker):
        os.rmdir(marker)
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(_Exploit()))
    torch.save({"w": torch.zeros(1)}, tmp_path / "torch.pt")
    for name in ("evil.safetensors", "torch.pt"):
        with pytest.raises(ValueError, match="expected an lstmkit checkpoint"):
            load_checkpoint(tmp_path / name)
    assert not os.path.exists(marker)


def test_load_weights_names_every_mismatch():
    model = nn.Linear(4, 3)
    weights = {"weight": torch.zeros(3, 5), "extra": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"ckpt does not fit the model: missing bias; unexpected extra; "
                                         r"weight has shape \(3, 5\), the model expects \(3, 4\)"):
        load_weights(model, weights, "ckpt")
