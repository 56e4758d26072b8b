"""Shared by the training-command tests: a small corpus, tiny model flags, the CLI in-process and as a subprocess."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from lstmkit import cli
from lstmkit.data import default_text

REPO = Path(__file__).resolve().parents[1]
# a model and batches small enough for a step in milliseconds
TINY = ["--hidden-size", "24", "--embedding-dim", "8", "--bptt", "8", "--batch-size", "4", "--warmup", "2"]
TIMING_COLUMNS = ("elapsed_s", "tokens_per_s")  # the only columns allowed to differ between equal runs


def small_corpus(folder: Path, chars: int = 6000) -> Path:
    path = folder / "small.txt"
    path.write_text(default_text()[:chars], encoding="utf-8")
    return path


def lstmkit(*argv) -> int:
    """`lstmkit ARGV...` in this process; returns the exit code."""
    return cli.main([str(a) for a in argv])


def lstmkit_subprocess(*argv, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m lstmkit ARGV...` in a fresh interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "lstmkit", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def metrics(run: Path) -> list[dict]:
    """metrics.csv of a run without its timing columns."""
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]
