"""lstmkit.models.tasks: the adding problem and copy memory, their baselines, and training them."""
import math

import pytest
import torch
import torch.nn.functional as F

from lstmkit.config import DataConfig
from lstmkit.models import AddingTask, CopyTask
from train_helpers import lstmkit, metrics


def test_adding_problem_layout_and_target():
    task = AddingTask(DataConfig(task="adding", seq_len=20, batch_size=64), seed=0)
    x, y = task.generate(64, torch.Generator().manual_seed(1))
    assert x.shape == (20, 64, 2) and y.shape == (64,)
    markers = x[..., 1]
    assert torch.equal(markers.sum(0), torch.full((64,), 2.0))
    assert torch.equal(markers[:10].sum(0), torch.ones(64))  # one marker in each half
    assert torch.allclose((x[..., 0] * markers).sum(0), y)


def test_adding_baseline_is_the_variance_of_the_sum():
    task = AddingTask(DataConfig(task="adding", seq_len=10), seed=0)
    _, y = task.valid
    assert task.BASELINE_MSE == pytest.approx(1 / 6)
    assert F.mse_loss(torch.ones_like(y), y).item() == pytest.approx(task.BASELINE_MSE, abs=0.02)


def test_copy_task_layout_and_memoryless_baseline():
    T = 15
    task = CopyTask(DataConfig(task="copy", seq_len=T), seed=0)
    x, y = task.generate(32, torch.Generator().manual_seed(1))
    assert x.shape == (T + 20, 32, 10) and y.shape == (T + 20, 32)
    inputs = x.argmax(-1)
    assert torch.equal(y[T + 10:], inputs[:10])  # the symbols come back after the marker
    assert (inputs[T + 9] == CopyTask.MARKER).all() and (y[:T + 10] == CopyTask.BLANK).all()
    # a memoryless model: blank until the marker, then a uniform guess among the 8 symbols
    logits = torch.full((T + 20, 32, 10), -1e9)
    logits[:T + 10, :, CopyTask.BLANK] = 0
    logits[T + 10:, :, 1:9] = 0
    scores = task.metrics(logits, y)
    assert scores["valid_loss"] == pytest.approx(scores["baseline_loss"], rel=1e-5)
    assert scores["baseline_loss"] == pytest.approx(10 * math.log(8) / (T + 20))


@pytest.mark.parametrize("task_class", [AddingTask, CopyTask])
def test_batches_depend_only_on_the_step_and_split_by_rows(task_class):
    task = task_class(DataConfig(seq_len=6, batch_size=4), seed=3)
    full = task.batch(5, slice(0, 4))
    assert torch.equal(full.input, task.batch(5, slice(0, 4)).input)
    assert not torch.equal(full.input, task.batch(6, slice(0, 4)).input)
    halves = [task.batch(5, slice(0, 2)), task.batch(5, slice(2, 4))]
    assert torch.equal(torch.cat([h.input for h in halves], dim=1), full.input)
    assert torch.equal(torch.cat([h.target for h in halves], dim=-1), full.target)
    assert full.carry is False


@pytest.mark.parametrize("task, columns", [("adding", {"valid_loss", "baseline_loss"}),
                                           ("copy", {"valid_loss", "valid_accuracy", "baseline_accuracy"})])
def test_tasks_train_with_the_same_trainer(tmp_path, task, columns):
    assert lstmkit("train", "--task", task, "--dry-run", "--hidden-size", "16", "--out", tmp_path / "run") == 0
    (row,) = metrics(tmp_path / "run")
    assert columns <= set(row)


@pytest.fixture
def one_thread():
    """A 32-unit model runs fastest on one thread, and waits for no other one on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_adding_problem_is_learned_below_the_baseline(tmp_path, capsys, one_thread):
    code = lstmkit("train", "--task", "adding", "--seq-len", "10", "--hidden-size", "32", "--batch-size", "64",
                   "--steps", "500", "--lr", "0.01", "--warmup", "10", "--eval-interval", "500",
                   "--out", tmp_path / "r")
    assert code == 0
    (row,) = metrics(tmp_path / "r")
    assert float(row["valid_loss"]) < 0.2 * float(row["baseline_loss"])
    assert "memoryless baseline 0.1667" in capsys.readouterr().out
