"""Two CPU processes under torchrun (gloo, DistributedDataParallel) train like one with the same global batch."""
import os
import subprocess
import sys

import pytest
import torch

from lstmkit.checkpoint import load_checkpoint
from train_helpers import REPO, TINY, lstmkit, metrics, small_corpus


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    data = small_corpus(tmp_path)
    args = ["train", "--data", data, *TINY, "--num-layers", "2", "--lr", "0.01", "--steps", "4", "--eval-interval", "2"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lstmkit"]
    result = subprocess.run([*torchrun, *map(str, args), "--out", str(tmp_path / "two")], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(2 processes, cpu)" in result.stdout
    assert lstmkit(*args, "--out", tmp_path / "one") == 0

    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [row["step"] for row in two] == ["2", "4"] and [row["tokens"] for row in two] == [r["tokens"] for r in one]
    for a, b in zip(one, two):
        for key in ("train_loss", "valid_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5), key
    a, b = (load_checkpoint(tmp_path / run)["trainer"] for run in ("one", "two"))
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    for h_one, h_two in zip(a["carry"], b["carry"]):  # the carried state is gathered back to the global batch
        assert h_two.shape == h_one.shape
        torch.testing.assert_close(h_two, h_one, atol=1e-5, rtol=1e-4)
