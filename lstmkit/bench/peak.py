"""The machine's GEMM peak, measured: the best GFLOP/s of torch.mm and of oneDNN matmul over given shapes; and its
arithmetic ceiling, the rate of vector FMAs with no memory traffic, which bounds every GEMM."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from lstmkit.bench.timing import time_one


def backends(device: torch.device | str) -> list[str]:
    """The GEMM backends measurable on `device`: torch.mm everywhere, oneDNN on a CPU built with it."""
    if torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available():
        return ["torch.mm", "oneDNN"]
    return ["torch.mm"]


def _product(backend: str, M: int, K: int, N: int, device) -> Callable[[], object]:
    """A call computing an (M, K) x (K, N) fp32 product with `backend`, on fresh random operands."""
    a = torch.randn(M, K, device=device)  # (M, K)
    b = torch.randn(N, K, device=device)  # (N, K): stored as nn.Linear and nn.LSTM store weights
    if backend == "torch.mm":
        bt = b.t()  # (K, N)
        return lambda: torch.mm(a, bt)
    if backend == "oneDNN":
        am, bm = a.to_mkldnn(), b.to_mkldnn()
        return lambda: torch._C._nn.mkldnn_linear(am, bm, None)
    raise ValueError(f"unknown GEMM backend {backend!r}")


def gemm_gflops(backend: str, M: int, K: int, N: int, repeats: int, warmup: int, device="cpu") -> float:
    """GFLOP/s of one (M, K) x (K, N) product with `backend`, from the fastest of 4x `repeats` runs.

    The fastest run is what the machine can do; on a shared machine the median hides it under other
    processes' work. A product takes milliseconds, so the extra tries to find the machine undisturbed cost
    little, and a rate measured low would make every "% of peak" above it wrong.
    """
    seconds = time_one(_product(backend, M, K, N, device), 4 * repeats, warmup, device).min
    return 2 * M * K * N / seconds / 1e9


def shape_key(M: int, K: int, N: int) -> str:
    return f"{M}x{K}x{N}"


CEILING_ITERATIONS = 300_000  # one ceiling run: about 1.3 ms, short enough to find the cores undisturbed on a shared
# machine (runs of 0.1 s measured half the rate here: some other process took a core for part of every run)


def fma_ceiling(device="cpu", tries: int = 30) -> float | None:
    """GFLOP/s of fp32 vector FMAs on registers alone on all of torch's threads, the best of `tries` runs of about
    1 ms: what the cores' FMA units can do at all. None off the CPU or without the native extension."""
    if torch.device(device).type != "cpu":
        return None
    from lstmkit.engine.native import extension

    ext = extension()
    if ext is None:
        return None
    return max(ext.fma_ceiling(torch.get_num_threads(), CEILING_ITERATIONS) for _ in range(tries))


def dot_ceiling(device="cpu", tries: int = 30) -> float | None:
    """GFLOP/s of bf16 dot products (vdpbf16ps) on registers alone on all of torch's threads, best of `tries`:
    the bf16 loop's bound, about twice the fp32 FMA ceiling here. None off the CPU, without the native extension
    or without the instructions."""
    if torch.device(device).type != "cpu":
        return None
    from lstmkit.engine.native import extension

    ext = extension()
    if ext is None or not ext.bf16_dot_instructions():
        return None
    return max(ext.dot_ceiling(torch.get_num_threads(), CEILING_ITERATIONS) for _ in range(tries))


def int8_ceiling(device="cpu", tries: int = 30) -> float | None:
    """GOP/s (two per multiply-add) of int8 dot products (vpdpbusd) on registers alone on all of torch's threads,
    best of `tries`: the int8 loop's bound, about four times the fp32 FMA ceiling here. None off the CPU, without
    the native extension or without the instructions."""
    if torch.device(device).type != "cpu":
        return None
    from lstmkit.engine.native import extension

    ext = extension()
    if ext is None or not ext.int8_dot_instructions():
        return None
    return max(ext.int8_dot_ceiling(torch.get_num_threads(), CEILING_ITERATIONS) for _ in range(tries))


def settled(ceilings: dict, measure: dict, rows: list[dict], bound: str) -> dict:
    """The ceilings measured again after a table (`measure`: name -> function), each the larger of its two
    measurements: a busy spell on a shared machine during one of them would otherwise lower the bound (a row then
    reads above 100 %). Rows' `pct_ceiling` (of the `bound` ceiling) are rescaled to the settled value in place."""
    again = {name: max(ceilings[name] or 0.0, fn() or 0.0) or ceilings[name] for name, fn in measure.items()}
    if ceilings[bound] and again[bound] != ceilings[bound]:
        scale = ceilings[bound] / again[bound]
        for row in rows:
            if "pct_ceiling" in row:
                row["pct_ceiling"] = {n: pct * scale for n, pct in row["pct_ceiling"].items()}
    return {**ceilings, **again}


def measure_peak(shapes: Iterable[tuple[int, int, int]], repeats: int, warmup: int, device="cpu") -> dict:
    """GFLOP/s of every backend on every (M, K, N) shape; `peak` is the best of all of them.

    Returns {"gflops": {backend: {"MxKxN": GFLOP/s}}, "best": {backend: GFLOP/s},
             "peak": GFLOP/s, "peak_backend": str, "peak_shape": "MxKxN", "fma_ceiling": GFLOP/s or None}.
    """
    shapes = sorted(set(shapes))
    gflops, ceilings = {b: {} for b in backends(device)}, []
    for s in shapes:  # the ceiling sampled between the shapes, over the same minutes: a slow spell hits both alike
        for b in gflops:
            gflops[b][shape_key(*s)] = gemm_gflops(b, *s, repeats, warmup, device)
        ceilings.append(fma_ceiling(device, tries=10))
    best = {b: max(rates.values()) for b, rates in gflops.items()}
    peak_backend = max(best, key=best.get)
    peak_shape = max(gflops[peak_backend], key=gflops[peak_backend].get)
    return {"gflops": gflops, "best": best, "peak": best[peak_backend], "peak_backend": peak_backend,
            "peak_shape": peak_shape, "fma_ceiling": max(ceilings, default=None) if None not in ceilings else None}
