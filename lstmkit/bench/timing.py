"""Trustworthy wall-clock timing: all cores, warm-up, device synchronization, median of interleaved runs."""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def use_cores(threads: int = 0) -> int:
    """Set torch's thread count: `threads`, or 0 for every core this process may run on. Returns it."""
    n = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work, so that a timer brackets the work itself (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    samples: list[float]  # seconds, one per timed run

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    def paired_ratio(self, other: "Timing") -> float:
        """Median over repeats of self/other, each pair timed back to back: a ratio that a slow spell on a
        shared machine, which hits both runs of a pair, disturbs less than it does either median."""
        return statistics.median(a / b for a, b in zip(self.samples, other.samples))


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device | str = "cpu") -> dict[str, Timing]:
    """Time each function `repeats` times after `warmup` untimed calls.

    The competitors take turns (A B, B A, A B, ...), so that a slow spell on a shared machine hits
    them alike instead of hitting whichever happened to run during it.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(s) for name, s in samples.items()}


def time_one(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device | str = "cpu") -> Timing:
    return time_interleaved({"fn": fn}, repeats, warmup, device)["fn"]
