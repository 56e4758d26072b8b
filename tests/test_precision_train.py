"""`lstmkit train --precision bf16`: the step runs under torch.autocast (bf16 products) while the weights, their
gradients and the optimizer state stay float32; fp32 (the default) is untouched by it."""
import pytest
import torch

from lstmkit.checkpoint import load_checkpoint
from train_helpers import TINY, lstmkit, small_corpus


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision")
    data = small_corpus(tmp)
    for precision in ("fp32", "bf16", "fp32-again"):
        flag = precision.split("-")[0]
        code = lstmkit("train", "--data", data, *TINY, "--steps", "4", "--eval-interval", "4", "--sample-length", "0",
                       "--precision", flag, "--out", tmp / precision)
        assert code == 0
    return {name: load_checkpoint(tmp / name) for name in ("fp32", "bf16", "fp32-again")}


def test_bf16_training_keeps_float32_master_weights_and_optimizer_state(runs):
    trainer = runs["bf16"]["trainer"]
    assert all(t.dtype == torch.float32 for t in trainer["model"].values())
    moments = [v for state in trainer["optimizer"]["state"].values() for v in state.values()
               if torch.is_tensor(v) and v.is_floating_point() and v.dim()]
    assert moments and all(v.dtype == torch.float32 for v in moments)
    assert runs["bf16"]["config"]["train"]["precision"] == "bf16"


def test_bf16_steps_differ_from_fp32_by_bf16_rounding_only(runs):
    ours, fp32 = runs["bf16"]["trainer"]["model"], runs["fp32"]["trainer"]["model"]
    assert not all(torch.equal(ours[k], fp32[k]) for k in fp32)  # the products did run in bf16
    for name, tensor in fp32.items():
        torch.testing.assert_close(ours[name], tensor, atol=2e-2, rtol=2e-2, msg=name)
    again = runs["fp32-again"]["trainer"]["model"]
    assert all(torch.equal(again[k], fp32[k]) for k in fp32)  # fp32 repeats to the bit


def test_resume_keeps_the_precision(runs, tmp_path):
    data = small_corpus(tmp_path)
    assert lstmkit("train", "--data", data, *TINY, "--steps", "2", "--sample-length", "0", "--precision", "bf16",
                   "--out", tmp_path / "run") == 0
    assert lstmkit("train", "--resume", tmp_path / "run", "--steps", "3", "--sample-length", "0") == 0
    saved = load_checkpoint(tmp_path / "run")
    assert saved["config"]["train"]["precision"] == "bf16" and saved["trainer"]["step"] == 3
