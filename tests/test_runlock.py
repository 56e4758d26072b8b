"""One writer per run folder: a second `train --out`, `train --resume` or `compress --out` on a folder another process
writes is refused (exit 2, naming the folder and the holder), reading it is not; after the holder is killed with
SIGKILL the folder is usable again and its stale temporary files are removed. Real processes throughout."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lstmkit.checkpoint import LATEST, atomic_write, load_checkpoint
from lstmkit.config import TrainConfig
from lstmkit.run import RunFolder
from lstmkit.runlock import LOCK, FolderBusy, RunLock, temp_owner, temp_prefix
from lstmkit.train import run_lock
from train_helpers import REPO, TINY, lstmkit_subprocess, small_corpus

HOLD = """import sys, time
from lstmkit.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _start(*argv) -> subprocess.Popen:
    """`python -m lstmkit ARGV...` in the background."""
    return subprocess.Popen([sys.executable, "-m", "lstmkit", *map(str, argv)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the first process ended (rc {process.returncode}) before writing " \
                                       f"{path}:\n{process.stderr.read()[-3000:]}"
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.1)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def _refused(result: subprocess.CompletedProcess, command: str, folder: Path, pid: int, holder: str) -> None:
    """Exit code 2 and one error line naming the folder, the holder's pid and its command."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    pattern = (rf"lstmkit {command}: error: {re.escape(str(folder))} is in use by process {pid} "
               rf"\(`[^`]*{re.escape(holder)}[^`]*`, since [0-9-]+ [0-9:]+\); expected one writer per run folder")
    assert re.fullmatch(pattern + ".*", errors[0]), (pattern, errors[0])


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- the lock itself ----------------------------------------------------------------------------------------------

def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    folder = tmp_path / "run"
    first = RunLock(folder).acquire()
    assert first.held and (folder / LOCK).is_file()
    with pytest.raises(FolderBusy, match=rf"^{re.escape(str(folder))} is in use by process {os.getpid()} \(`"):
        RunLock(folder).acquire()  # another open of the file: flock refuses it even in the same process
    assert first.held
    first.release()
    assert not folder.exists()  # the lock made the folder and nothing was written: nothing is left
    with RunLock(folder) as again:
        assert again.held
        atomic_write(folder / "config.json", "{}")
    assert _hidden(folder) == []  # released: the lock file is removed with it


def test_a_lock_file_left_by_a_killed_holder_is_free(tmp_path):
    """The OS frees a SIGKILLed holder's lock; the file it leaves (naming the dead process) is taken over."""
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderBusy, match=rf"is in use by process {holder.pid} \(`-c {re.escape(str(folder))}`"):
            RunLock(folder).acquire()
    finally:
        _kill(holder)
    assert str(holder.pid) in (folder / LOCK).read_text()  # left behind, naming the dead holder
    with RunLock(folder):
        assert f'"pid": {os.getpid()}' in (folder / LOCK).read_text()
    assert not (folder / LOCK).exists()


def test_temporary_files_name_their_writer_and_only_a_lock_holder_removes_other_writers_ones(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(Path(src).name), real_replace(src, dst)))
    atomic_write(tmp_path / "latest.safetensors", b"new")
    atomic_write(tmp_path / "latest.safetensors", b"newer", keep=tmp_path / "previous.safetensors")
    monkeypatch.undo()
    assert seen and all(name.startswith(f".{n}.{os.getpid()}.") and temp_owner(name) == os.getpid()
                        for name, n in zip(seen, ["latest.safetensors", "previous.safetensors", "latest.safetensors"]))
    assert temp_owner(".latest.safetensors.k2j3_x.tmp") is None  # an older lstmkit's name: no pid

    folder = tmp_path / "run"
    folder.mkdir()
    mine = folder / f"{temp_prefix('latest.safetensors')}abc.tmp"
    dead = folder / ".latest.safetensors.999999999.abc.tmp"
    old = folder / ".metrics.csv.k2j3_x.tmp"
    for path in (mine, dead, old):
        path.write_bytes(b"half")
    with pytest.raises(RuntimeError, match="needs the folder's lock"):
        RunLock(folder).remove_stale_temp_files()
    run = RunFolder(folder)  # takes the lock, then cleans up after the writers that are gone
    try:
        assert _hidden(folder) == sorted([LOCK, mine.name])  # this process's own file is its to remove
    finally:
        run.close()
    assert _hidden(folder) == [mine.name]


def test_only_torchrun_rank_0_locks(tmp_path, monkeypatch):
    cfg = TrainConfig(out=str(tmp_path / "run"))
    monkeypatch.setenv("RANK", "1")
    assert run_lock(cfg) is None and not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "0")
    lock = run_lock(cfg)
    try:
        assert lock.held and lock.folder == tmp_path / "run"
    finally:
        lock.release()


# --- commands in real processes -----------------------------------------------------------------------------------

def test_a_second_train_out_is_refused_while_the_first_runs_and_the_folder_is_usable_after_a_kill(tmp_path):
    data, run = small_corpus(tmp_path), tmp_path / "run"
    first = _start("train", "--data", data, *TINY, "--time-budget", "300", "--eval-interval", "1000000", "--out", run)
    try:
        _wait_for(run / "config.json", first)  # training; its first checkpoint is far away
        second = lstmkit_subprocess("train", "--data", data, *TINY, "--dry-run", "--out", run)
        _refused(second, "train", run, first.pid, f"train --data {data}")
        resume = lstmkit_subprocess("train", "--resume", run, "--dry-run")
        _refused(resume, "train", run, first.pid, f"--time-budget 300")
        assert first.poll() is None  # the first run is untouched
    finally:
        _kill(first)
    stale = run / f".latest.safetensors.{first.pid}.k2j3_x.tmp"  # as a write killed half-way leaves it
    stale.write_bytes(b"half a checkpoint")
    again = lstmkit_subprocess("train", "--data", data, *TINY, "--dry-run", "--out", run)
    assert again.returncode == 0, again.stderr[-3000:]
    assert load_checkpoint(run)["trainer"]["step"] == 1
    assert _hidden(run) == []  # the stale temporary file and the dead holder's lock file are gone


def test_resume_and_compress_out_on_a_folder_being_written_are_refused_reading_it_is_not(tmp_path):
    data, run, small = small_corpus(tmp_path), tmp_path / "run", tmp_path / "small"
    first = _start("train", "--data", data, *TINY, "--time-budget", "300", "--eval-interval", "20",
                   "--sample-length", "5", "--out", run)
    try:
        _wait_for(run / LATEST, first)  # checkpoints every 20 steps from now on
        resume = lstmkit_subprocess("train", "--resume", run, "--steps", "5")
        _refused(resume, "train", run, first.pid, f"--eval-interval 20")

        with RunLock(small):  # this test process writes the compress output folder
            busy = lstmkit_subprocess("compress", run, "--out", small, "--prune", "0.5", "--dry-run")
            _refused(busy, "compress", small, os.getpid(), "")
        compressed = lstmkit_subprocess("compress", run, "--out", small, "--prune", "0.5", "--dry-run")
        assert compressed.returncode == 0, compressed.stderr[-3000:]  # reads the run while it trains
        assert (small / LATEST).is_file() and _hidden(small) == []
        assert first.poll() is None
    finally:
        _kill(first)
    step = load_checkpoint(run)["trainer"]["step"]
    stale = run / f".previous.safetensors.{first.pid}.link.tmp"
    stale.write_bytes(b"")
    resumed = lstmkit_subprocess("train", "--resume", run, "--steps", str(step + 2), "--sample-length", "5")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(run)["trainer"]["step"] == step + 2
    assert _hidden(run) == []


def test_torchrun_whose_rank_0_is_refused_the_lock_ends_with_its_error_and_leaves_the_folder_as_it_was(tmp_path):
    data, run = small_corpus(tmp_path), tmp_path / "run"
    with RunLock(run):  # this test process writes the folder
        start = time.monotonic()
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "lstmkit", "train", "--data", str(data), *TINY, "--steps", "3", "--out", str(run)]
        result = subprocess.run(torchrun, cwd=REPO, capture_output=True, text=True, timeout=240,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode != 0  # torchrun reports its failed worker; no rank waits for the one that left
        assert time.monotonic() - start < 200
        ours = [line for line in result.stderr.splitlines() if line.startswith("lstmkit train: error:")]
        assert len(ours) == 1 and f"{run} is in use by process {os.getpid()}" in ours[0], result.stderr[-3000:]
        assert _hidden(run) == [LOCK] and [p.name for p in run.iterdir()] == [LOCK]  # nothing written


def test_compare_out_is_one_writer_too(tmp_path):
    data, out = small_corpus(tmp_path), tmp_path / "cmp"
    with RunLock(out):
        busy = lstmkit_subprocess("compare", "--data", data, *TINY, "--steps", "1", "--config", "hidden=8",
                                  "--out", out)
        _refused(busy, "compare", out, os.getpid(), "")
    assert not out.exists()  # the lock's folder, made for it and empty, is gone with it
