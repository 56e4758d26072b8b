"""lstmkit train: the run folder, exact resume, budgets, divergence, bad input, and the trainer's pieces."""
import json
import math
import signal

import pytest
import torch

from lstmkit.checkpoint import load_checkpoint
from lstmkit.config import ModelConfig, TrainConfig
from lstmkit.models import LanguageModel
from lstmkit.trainer import Trainer, lr_factor
from train_helpers import TINY, lstmkit, lstmkit_subprocess, metrics, small_corpus

RUN_FILES = {"config.json", "vocab.json", "latest.safetensors", "metrics.csv", "curve.png", "sample.txt"}


def test_dry_run_writes_the_run_folder(tmp_path, capsys):
    assert lstmkit("train", "--dry-run", "--out", tmp_path / "run") == 0
    assert RUN_FILES <= {p.name for p in (tmp_path / "run").iterdir()}
    out = capsys.readouterr().out
    assert "nats/char" in out and "bits/char" in out and "perplexity" in out and "sample:" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["structure"] == "dense" and config["train"]["dry_run"] is True
    (row,) = metrics(tmp_path / "run")
    assert row["step"] == "1" and math.isfinite(float(row["valid_loss"]))


def test_dry_run_as_a_subprocess(tmp_path):
    result = lstmkit_subprocess("train", "--dry-run", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert RUN_FILES <= {p.name for p in (tmp_path / "run").iterdir()}
    assert "valid loss" in result.stdout


def _interrupt_after(monkeypatch, steps: int):
    """Ctrl-C arrives during step `steps` (as a real SIGINT to this process)."""
    original = Trainer.train_step

    def train_step(self):
        result = original(self)
        if self.step + 1 == steps:
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    data = small_corpus(tmp_path)
    args = ["--data", data, *TINY, "--num-layers", "2", "--dropout", "0.2", "--steps", "8", "--eval-interval", "2"]
    assert lstmkit("train", *args, "--out", tmp_path / "straight") == 0
    with monkeypatch.context() as m:
        _interrupt_after(m, 5)
        assert lstmkit("train", *args, "--out", tmp_path / "resumed") == 130
    assert load_checkpoint(tmp_path / "resumed")["trainer"]["step"] == 5
    assert lstmkit("train", "--resume", tmp_path / "resumed") == 0
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "straight")
    assert len(metrics(tmp_path / "straight")) == 4
    a = load_checkpoint(tmp_path / "straight")["trainer"]
    b = load_checkpoint(tmp_path / "resumed")["trainer"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_resume_can_extend_the_budget(tmp_path):
    data = small_corpus(tmp_path)
    assert lstmkit("train", "--data", data, *TINY, "--steps", "2", "--out", tmp_path / "run") == 0
    assert lstmkit("train", "--resume", tmp_path / "run", "--steps", "4") == 0
    assert [row["step"] for row in metrics(tmp_path / "run")][-1] == "4"


def test_resume_with_a_different_model_is_refused_and_keeps_the_checkpoint(tmp_path, capsys):
    data = small_corpus(tmp_path)
    assert lstmkit("train", "--data", data, *TINY, "--steps", "1", "--out", tmp_path / "run") == 0
    before = (tmp_path / "run" / "latest.safetensors").read_bytes()
    assert lstmkit("train", "--resume", tmp_path / "run", "--hidden-size", "32") == 2
    err = capsys.readouterr().err
    assert "was trained with --hidden-size 24; given --hidden-size 32" in err
    assert lstmkit("train", "--data", data, *TINY, "--steps", "1", "--out", tmp_path / "run") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "latest.safetensors").read_bytes() == before


def test_resume_from_a_damaged_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "latest.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    assert lstmkit("train", "--resume", tmp_path / "run") == 2
    assert "expected an lstmkit checkpoint" in capsys.readouterr().err


def test_divergence_stops_with_nonzero_exit_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    data = small_corpus(tmp_path)
    assert lstmkit("train", "--data", data, *TINY, "--steps", "2", "--out", tmp_path / "run") == 0
    good = (tmp_path / "run" / "latest.safetensors").read_bytes()
    code = lstmkit("train", "--resume", tmp_path / "run", "--steps", "6", "--lr", "1e30", "--clip", "0",
                   "--eval-interval", "2")
    assert code == 1
    err = capsys.readouterr().err
    assert "loss became nan" in err or "loss became inf" in err
    assert "the last good checkpoint is kept: step 2" in err
    assert (tmp_path / "run" / "latest.safetensors").read_bytes() == good


def test_time_budget_stops_training(tmp_path):
    data = small_corpus(tmp_path)
    assert lstmkit("train", "--data", data, *TINY, "--time-budget", "1", "--out", tmp_path / "run") == 0
    state = load_checkpoint(tmp_path / "run")["trainer"]
    assert state["elapsed"] >= 1.0 and state["step"] > 1


def test_tensorboard_flag(tmp_path, capsys):
    code = lstmkit("train", "--dry-run", "--tensorboard", "--out", tmp_path / "run")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert code == 2
        assert "--tensorboard needs the tensorboard package" in capsys.readouterr().err
    else:
        assert code == 0 and (tmp_path / "run" / "tensorboard").is_dir()


def test_weight_tying_needs_matching_sizes(tmp_path, capsys):
    assert lstmkit("train", "--dry-run", "--tie-weights", "--embedding-dim", "64", "--out", tmp_path / "run") == 2
    assert "weight tying needs embedding_dim == LSTM output size" in capsys.readouterr().err
    model = LanguageModel(20, ModelConfig(hidden_size=16, proj_size=8, embedding_dim=0, tie_weights=True))
    assert model.decoder.weight is model.embedding.weight and model.embedding.weight.shape == (20, 8)
    untied = LanguageModel(20, ModelConfig(hidden_size=16, proj_size=8, embedding_dim=0))
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(untied) - params(model) == 20 * 8


def test_generate_greedy_and_top_k():
    torch.manual_seed(0)
    model = LanguageModel(12, ModelConfig(hidden_size=16, embedding_dim=8))
    prompt = torch.tensor([1, 2, 3])
    greedy = model.generate(prompt, 10, temperature=0)
    assert greedy.shape == (10,) and torch.equal(greedy, model.generate(prompt, 10, temperature=0))
    assert torch.equal(model.generate(prompt, 10, temperature=1.0, top_k=1), greedy)
    assert model.training  # generate restores the mode
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(prompt[:0], 3)


def test_lr_schedule_warmup_then_cosine_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_factor(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(cfg, 9, 0.0) == pytest.approx(1.0)
    assert lr_factor(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_factor(cfg, 100, 1.0) == pytest.approx(0.1)
    assert lr_factor(TrainConfig(schedule="constant", warmup=0), 100, 1.0) == 1.0


def test_truncated_bptt_carries_a_detached_state(tmp_path):
    from lstmkit.config import DataConfig
    from lstmkit.distributed import Context
    from lstmkit.models import build_task

    data = DataConfig(data=str(small_corpus(tmp_path)), bptt=8, batch_size=4)
    task = build_task(data, seed=0)
    model = task.build_model(ModelConfig(hidden_size=16, embedding_dim=8))
    trainer = Trainer(task, model, TrainConfig(steps=2), Context(0, 1, torch.device("cpu")))
    trainer.train_step()
    h, c = trainer.carry
    assert h.shape == (1, 4, 16) and h.grad_fn is None and c.grad_fn is None and not h.requires_grad


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        lstmkit("train", "--help")
    out = capsys.readouterr().out
    for flag in ("--data", "--level", "--hidden-size", "--num-layers", "--proj-size", "--dropout", "--tie-weights",
                 "--bptt", "--batch-size", "--optimizer", "--lr", "--schedule", "--warmup", "--clip",
                 "--time-budget", "--steps", "--seed", "--out", "--resume", "--dry-run", "--tensorboard",
                 "--structure", "--task", "--seq-len"):
        assert flag in out, flag
    assert "(default: 90.0)" in out


@pytest.mark.parametrize("structure", sorted(set(__import__("lstmkit.models.structure", fromlist=["STRUCTURES"])
                                                 .STRUCTURES) - {"dense"}))
def test_every_structure_trains(tmp_path, structure):
    assert lstmkit("train", "--dry-run", "--structure", structure, "--out", tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["structure"] == structure
    (row,) = metrics(tmp_path / "run")
    assert math.isfinite(float(row["valid_loss"]))


@pytest.mark.parametrize("budget", [["--steps", "2", "--time-budget", "0"], ["--time-budget", "1e-30"]])
def test_a_zero_or_vanishing_time_budget_ends(tmp_path, budget):
    """Found by tests/test_flag_properties.py: the next evaluation time was found by adding budget/10 until it passed
    the clock, which never ends for a budget of 0 (with --steps) or 1e-30."""
    result = lstmkit_subprocess("train", "--data", small_corpus(tmp_path), *TINY, *budget, "--sample-length", "0",
                                "--out", tmp_path / "run", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.csv").is_file()
