"""Real faults: a training run killed with SIGKILL at random moments, damaged checkpoints, a full disk.

Whatever happens, a run folder keeps a checkpoint that loads, and resuming from it gives the same weights as a
run that was never interrupted.
"""
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from lstmkit.checkpoint import LATEST, PREVIOUS, load_checkpoint, save_checkpoint
from damage import flip_header_byte, flip_tensor_byte, truncate
from train_helpers import REPO, TINY, lstmkit, metrics, small_corpus

KILLS = 3
STEPS = ["--steps", "48", "--eval-interval", "2", "--sample-length", "5"]  # a checkpoint every 2 steps


DEFAULT_THREADS = torch.get_num_threads()
# wide enough that the native loop splits each step among the threads (16-unit panels) and its backward's products
WIDE = ["--hidden-size", "64", "--embedding-dim", "8", "--bptt", "8", "--batch-size", "8", "--warmup", "2"]


def _start(*argv, log, threads: int | None = 1) -> subprocess.Popen:
    """`python -m lstmkit ARGV...` in the background, on `threads` threads (None: torch's default)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "lstmkit", *map(str, argv)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)


def _version(path):
    """Identity of the file at `path` (a replaced file is a new inode), None while there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _wait_for_new_checkpoint(run, before, process, timeout=60.0) -> bool:
    """Wait until the run's checkpoint differs from `before`; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while _version(run / LATEST) == before:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.005)
    return True


@pytest.mark.parametrize("threads", [None, 1], ids=["default-threads", "one-thread"])
def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_weights(tmp_path, threads):
    """Killed 3 times, resumed each time: the weights end bit-identical to an uninterrupted run's, at torch's
    default thread count (the native loop's multi-threaded paths) and at one thread."""
    data = small_corpus(tmp_path)
    args = ["--data", data, *(WIDE if threads is None else TINY), *STEPS]
    run, rng = tmp_path / "killed", random.Random(0)
    command = ["train", *args, "--out", run]
    with open(tmp_path / "stderr.txt", "wb") as log:
        for kill in range(KILLS):
            process = _start(*command, log=log, threads=threads)
            for _ in range(3):  # the third save times one cycle of steps, save and plot
                start, before = time.monotonic(), _version(run / LATEST)
                assert _wait_for_new_checkpoint(run, before, process), \
                    f"the run ended before kill {kill + 1} of {KILLS}; expected more --steps"
            time.sleep(rng.uniform(0.0, time.monotonic() - start))  # anywhere in the next cycle
            process.send_signal(signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL
            load_checkpoint(run)  # the folder always holds a checkpoint that loads
            command = ["train", "--resume", run]
    torch.set_num_threads(threads or DEFAULT_THREADS)  # as in the subprocesses: the same products, bit for bit
    try:
        assert load_checkpoint(run)["trainer"]["step"] < 48
        assert lstmkit(*command) == 0  # the last resume runs to the end
        assert lstmkit("train", *args, "--out", tmp_path / "straight") == 0
    finally:
        torch.set_num_threads(DEFAULT_THREADS)
    killed, straight = load_checkpoint(run)["trainer"], load_checkpoint(tmp_path / "straight")["trainer"]
    assert killed["step"] == straight["step"] == 48
    for name, tensor in straight["model"].items():
        assert torch.equal(killed["model"][name], tensor), name
    assert metrics(run) == metrics(tmp_path / "straight")
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary file left behind


# --- damaged checkpoints: refused, and the previous one is used ----------------------------------------------

CHECKSUM = r"latest.safetensors is damaged: its SHA-256 checksum does not match \(expected [0-9a-f]{64}, as " \
           r"stored in its header; found [0-9a-f]{64}\)"
DAMAGE = {  # how the latest checkpoint is damaged -> a regex of the warning
    "truncated": (truncate, r"latest.safetensors is not readable: .*incomplete"),
    "flipped tensor byte": (flip_tensor_byte, CHECKSUM),
    "flipped header byte": (flip_header_byte, CHECKSUM),
}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run folder with latest.safetensors at step 4 and previous.safetensors at step 2."""
    folder = tmp_path_factory.mktemp("faults")
    args = ["--data", small_corpus(folder), *TINY, "--steps", "4", "--eval-interval", "2", "--sample-length", "5"]
    assert lstmkit("train", *args, "--out", folder / "run") == 0
    assert load_checkpoint(folder / "run" / PREVIOUS)["trainer"]["step"] == 2
    return folder / "run"


def assert_found(pattern: str, text: str) -> None:
    assert re.search(pattern, text), f"{pattern!r} not in:\n{text}"


def _damaged_copy(run, folder, damage, names=(LATEST,)):
    copy = folder / "run"
    shutil.copytree(run, copy)
    for name in names:
        (copy / name).write_bytes(damage((copy / name).read_bytes()))
    return copy


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_latest_checkpoint_is_refused_and_the_previous_one_used(two_checkpoints, tmp_path, capsys, damage,
                                                                          monkeypatch):
    damage, warning = DAMAGE[damage]
    run = _damaged_copy(two_checkpoints, tmp_path, damage)
    with pytest.raises(ValueError, match=warning):
        load_checkpoint(run / LATEST)  # the file itself: no fallback
    assert lstmkit("sample", run, "--length", "5") == 0
    err = capsys.readouterr().err
    assert_found(rf"lstmkit: warning: .*{warning}.*\. Using .*previous.safetensors, the checkpoint before it", err)
    assert err.count("warning") == 1

    monkeypatch.setenv("RANK", "1")  # another torchrun process: the same fallback, no second warning
    assert load_checkpoint(run)["trainer"]["step"] == 2
    assert "warning" not in capsys.readouterr().err
    monkeypatch.delenv("RANK")

    assert lstmkit("train", "--resume", run, "--steps", "6") == 0  # continues from step 2
    assert "warning" in capsys.readouterr().err
    assert [row["step"] for row in metrics(run)] == ["2", "4", "6"]
    assert load_checkpoint(run / LATEST)["trainer"]["step"] == 6
    assert load_checkpoint(run / PREVIOUS)["trainer"]["step"] == 4  # the damaged file was not kept


def test_a_crash_at_any_point_of_a_save_leaves_both_checkpoints(two_checkpoints, tmp_path, monkeypatch):
    """At every file-system step of a save (fsync of the new file, link, the two renames, fsync of the folder),
    latest.safetensors and previous.safetensors each load, so a crash there leaves both; at the end, previous is
    the old latest."""
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    state = load_checkpoint(run / LATEST)
    state["trainer"]["step"] = 6
    seen = []

    def observed(name):
        function = getattr(os, name)

        def step(*args, **kwargs):
            seen.append((name, load_checkpoint(run / LATEST)["trainer"]["step"],
                         load_checkpoint(run / PREVIOUS)["trainer"]["step"]))
            return function(*args, **kwargs)
        return step

    for name in ("fsync", "link", "replace"):
        monkeypatch.setattr(os, name, observed(name))
    save_checkpoint(run / LATEST, state, keep=run / PREVIOUS)
    monkeypatch.undo()
    assert seen == [("fsync", 4, 2), ("link", 4, 2), ("replace", 4, 2), ("replace", 4, 4), ("fsync", 6, 4)]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_both_checkpoints_damaged_is_an_error(two_checkpoints, tmp_path, capsys):
    run = _damaged_copy(two_checkpoints, tmp_path, flip_tensor_byte, (LATEST, PREVIOUS))
    for argv in (["sample", run], ["train", "--resume", run]):
        assert lstmkit(*argv) == 2
        err = capsys.readouterr().err
        assert_found(r"error: .*run holds no usable checkpoint: .*latest.safetensors is damaged: .*; and "
                     r".*previous.safetensors is damaged", err)
        assert "warning" not in err


# --- a full disk ---------------------------------------------------------------------------------------------

LIMITED = """import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from lstmkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_while_saving_keeps_the_checkpoints(two_checkpoints, tmp_path):
    """A real write failure: the resumed run may write files of at most half a checkpoint's size."""
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    before = {name: (run / name).read_bytes() for name in (LATEST, PREVIOUS)}
    limit = len(before[LATEST]) // 2
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", LIMITED.format(limit=limit), "train", "--resume", str(run),
                             "--steps", "6"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert_found(rf"lstmkit train: error: \[Errno 27\] could not write {re.escape(str(run / LATEST))} \([0-9,]+ "
                 r"bytes\): File too large; expected room for the file \(is the disk full\?\)\. The file there is "
                 r"unchanged", result.stderr)
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    assert load_checkpoint(run)["trainer"]["step"] == 4
