"""The same seed, inputs and thread count give the same bits in every process: the native engine chooses its
products by a fixed rule, never by a timing (lstmkit/csrc/products.h)."""
import subprocess
import sys

import pytest

from lstmkit.engine import native

SCRIPT = """
import hashlib, sys, torch, lstmkit
torch.set_num_threads(int(sys.argv[1]))
torch.use_deterministic_algorithms(sys.argv[2] == "1")
torch.manual_seed(0)
lstm = lstmkit.LSTM(64, 256, num_layers=2, proj_size={proj})
opt = torch.optim.SGD(lstm.parameters(), lr=0.1)
for step in range(3):
    x = torch.randn(32, 48, 64)
    y, (h, c) = lstm(x)
    loss = y.pow(2).mean() + c.pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
digest = hashlib.sha256()
for p in lstm.parameters():
    digest.update(p.detach().numpy().tobytes())
print(digest.hexdigest())
"""


def run(threads: int, deterministic: bool, proj: int) -> str:
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(proj=proj), str(threads), str(int(deterministic))],
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not native.available(), reason="native extension unavailable")
@pytest.mark.parametrize("proj", [0, 64])
def test_training_is_bit_identical_across_processes(proj):
    """Three processes train the same seeded model on 2 threads (the native loop's multi-threaded paths) and end
    with the same weights to the last bit; also under torch.use_deterministic_algorithms(True)."""
    digests = {run(2, False, proj) for _ in range(3)}
    assert len(digests) == 1
    assert run(2, True, proj) in digests
