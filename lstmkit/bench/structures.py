"""The structures study: lstmkit.LSTM with structured weights against a dense torch.nn.LSTM of the same size.

For each shape (L, XL of lstmkit.bench.cases) one interleaved timing per mode covers nn.LSTM and every structure,
so a slow spell on a shared machine hits them alike. Each structure is first checked against the dense LSTM of
its own to_dense() (lstmkit.compress.densify). Each structure runs the engine lstmkit.LSTM picks for it: the
native C++ loop for a low-rank, diagonal or grouped W_hh, the fused Python engine for the others. The `floor` row has
diagonal W_ih and W_hh on the fused engine, next to no GEMM work: its time is that engine's fixed cost (pointwise
gates, per-step calls), which no weight structure removes and which bounds the speed-up of every structure on it.
"""
from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lstmkit import maps
from lstmkit.bench import cases, report
from lstmkit.bench.agreement import rel_err
from lstmkit.bench.timing import Timing, time_interleaved
from lstmkit.compress import densify
from lstmkit.engine import native
from lstmkit.layer import LSTM
from lstmkit.maps import Circulant, Coupled, Diagonal, Grouped, LowRank, SharedGates
from lstmkit.params import count_parameters

SECTION = "structures"
SHAPES = ("L", "XL")
MODES = ("inference", "training")


@dataclass(frozen=True)
class Structure:
    name: str
    label: str  # the lstmkit.LSTM keywords, as a user writes them
    build: Callable[[int], dict]  # H -> LSTM keyword arguments
    targets: dict  # (shape or "*", mode) -> the time ratio structure / nn.LSTM to reach (speed-up = 1 / ratio)


STRUCTURES = [
    Structure("plain", "(the defaults)", lambda H: {}, {}),  # the dense layer on the native loop
    Structure("dense", "impl='fused'", lambda H: {"impl": "fused"}, {}),  # the dense layer on the same engine
    Structure("lowrank", "input=recurrent=LowRank(rank=H/4)",
              lambda H: {"input": LowRank(H // 4), "recurrent": LowRank(H // 4)}, {("*", "training"): 1 / 2}),
    Structure("lowrank-joint", "gates=LowRank(rank=H/4)", lambda H: {"gates": LowRank(H // 4)}, {}),
    Structure("grouped", "input=recurrent=Grouped(groups=4)",
              lambda H: {"input": Grouped(4), "recurrent": Grouped(4)},
              {("*", "inference"): 1 / 2, ("*", "training"): 1 / 2}),
    Structure("diagonal", "recurrent=Diagonal(bound=1.0)", lambda H: {"recurrent": Diagonal(1.0)},
              {("*", "inference"): 1 / 1.5, ("*", "training"): 1 / 1.5}),
    Structure("circulant", "input=recurrent=Circulant(block=16)",
              lambda H: {"input": Circulant(16), "recurrent": Circulant(16)}, {("XL", "inference"): 1 / 1.5}),
    Structure("coupled", "gates=Coupled()", lambda H: {"gates": Coupled()}, {}),
    Structure("shared", "gates=SharedGates(('i','f','o'))", lambda H: {"gates": SharedGates(("i", "f", "o"))}, {}),
    Structure("floor", "input=recurrent=Diagonal(), impl='fused' (no GEMMs)",
              lambda H: {"input": Diagonal(), "recurrent": Diagonal(), "impl": "fused"}, {}),
    Structure("layer-norm", "layer_norm=True", lambda H: {"layer_norm": True}, {}),  # not a map: a cell change
]
# (row, base row, mode) -> the time ratio row / base to reach, by both clocks (issue 15: layer norm training
# costs at most 1.3x a plain layer at T=64, B=64, H=512, the L shape)
RELATIVE_TARGETS = {("layer-norm", "plain", "training"): 1.3}


def target(s: Structure, shape: str, mode: str) -> float | None:
    """The target for this shape and mode; targets are set for the L and XL shapes only ("*": both)."""
    return s.targets.get((shape, mode), s.targets.get(("*", mode))) if shape in SHAPES else None


def engine(lstm: LSTM, x: torch.Tensor) -> str:
    """"native" where impl="auto" runs this one-layer LSTM's time loop in C++ on x (T, B, I), else "fused"."""
    B, H = x.shape[1], lstm.hidden_size
    h0, c0 = x.new_zeros(B, lstm.proj_size or H), x.new_zeros(B, H)
    runs = lstm.impl == "auto" and not lstm._regularizers() and native.available() and native.supports(
        x.flatten(0, 1), h0, c0, lstm.weight_ih_l0, lstm.weight_hh_l0, None, None, getattr(lstm, "weight_hr_l0", None))
    return "native" if runs else "fused"


def gate_flops(lstm: LSTM, rows: int) -> int:
    """Multiply-adds of the gate maps over `rows` rows (the pointwise work is O(H) per row and not counted)."""
    return maps.flops(lstm.weight_ih_l0, rows) + maps.flops(lstm.weight_hh_l0, rows)


def cpu_times(fns: dict, repeats: int, warmup: int) -> dict[str, Timing]:
    """CPU seconds (time.process_time) of each function at ONE thread, interleaved as time_interleaved does.
    Unlike wall-clock time it leaves out the time other processes on a shared machine hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            for f in fns.values():
                f()
        samples = {name: [] for name in fns}
        for r in range(repeats):
            for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                start = time.process_time()
                fns[name]()
                samples[name].append(time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    return {name: Timing(s) for name, s in samples.items()}


CLOCKS = {"wall": "wall-clock, all cores", "cpu1": "CPU time, one thread"}


def run_shape(shape: str, table: dict, cfg) -> list[dict]:
    T, B, H = table[shape]
    case = cases.Case(shape, T, B, H, "dense")
    x = cases.inputs(case, cfg.seed, cfg.device)  # (T, B, I)
    xg = x.detach().clone().requires_grad_(True)
    torch.manual_seed(cfg.seed)
    ref = nn.LSTM(H, H).to(cfg.device)
    models, rows = {}, []
    for s in STRUCTURES:
        torch.manual_seed(cfg.seed)
        m = LSTM(H, H, **s.build(H)).to(cfg.device)
        with torch.no_grad():  # the gate check: the structure computes what its own dense matrices compute
            err = rel_err(m(x)[0], densify(m)(x)[0])
        models[s.name] = m
        rows.append({"structure": s.name, "label": s.label, "engine": engine(m, x), "shape": shape,
                     "dims": case.dims, "T": T, "B": B,
                     "H": H, "params": count_parameters(m), "params_dense": count_parameters(ref),
                     "gate_flops": gate_flops(m, T * B), "gate_flops_dense": 8 * H * H * T * B,
                     "agrees": err <= cfg.tol, "max_rel_err": err, "tol": cfg.tol})
    timed = {"nn.LSTM": ref, **{r["structure"]: models[r["structure"]] for r in rows if r["agrees"]}}
    steps = {"inference": lambda m: lambda: cases.inference_step(m, x, None),
             "training": lambda m: lambda: cases.training_step(m, xg, None)}
    for mode in MODES:
        fns = {n: steps[mode](m) for n, m in timed.items()}
        print(f"{shape} {mode}: {len(timed)} models, interleaved", file=sys.stderr, flush=True)
        timings = {"wall": time_interleaved(fns, cfg.repeats, cfg.warmup, cfg.device),
                   "cpu1": cpu_times(fns, cfg.repeats, cfg.warmup)}
        for r, s in zip(rows, STRUCTURES):
            r[mode] = {"target": target(s, shape, mode)}
            for clock, timing in timings.items():
                if r["agrees"]:
                    t, t_ref = timing[s.name].median, timing["nn.LSTM"].median
                    r[mode][clock] = {"time_s": t, "nn_time_s": t_ref, "ratio": t / t_ref,
                                      "samples_s": timing[s.name].samples, "nn_samples_s": timing["nn.LSTM"].samples}
    return rows


def passes(r: dict, mode: str, clock: str) -> bool | None:
    """Whether the structure meets its target in `mode` by `clock`; None where it has no target."""
    m = r[mode]
    if m["target"] is None:
        return None
    return clock in m and m[clock]["ratio"] <= m["target"]


def run(cfg) -> dict:
    table = cases.QUICK_SHAPES if cfg.quick else cases.SHAPES
    names = list(table) if cfg.quick else [s for s in cfg.shapes.split(",") if s in SHAPES] or list(SHAPES)
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not supported with oneDNN.*")
        for shape in names:
            rows += run_shape(shape, table, cfg)
    return {"study": SECTION, "rows": rows}


def _speedup(r: dict, mode: str, clock: str) -> str:
    return f"{1 / r[mode][clock]['ratio']:.2f}×" if clock in r[mode] else ""


def _cells(r: dict, mode: str) -> list[str]:
    wall = r[mode].get("wall")
    ms = [report.fmt_ms(wall["time_s"]), report.fmt_ms(wall["nn_time_s"])] if wall else ["", ""]
    return [*ms, _speedup(r, mode, "wall"), _speedup(r, mode, "cpu1")]


def _verdict(r: dict) -> str:
    if not r["agrees"]:
        return f"FAIL: disagrees with its dense form (rel err {r['max_rel_err']:.2g})"
    word = {True: "pass", False: "miss"}
    return "; ".join(f"{mode} ≥ {1 / r[mode]['target']:.2g}×: wall {word[passes(r, mode, 'wall')]}, "
                     f"cpu {word[passes(r, mode, 'cpu1')]}" for mode in MODES if r[mode]["target"] is not None)


HEADERS = ["structure", "lstmkit.LSTM(H, H, ...)", "engine", "shape", "params", "gate FLOPs", "infer ms", "nn ms",
           "infer speed-up", "infer speed-up (CPU, 1 thread)", "train ms", "nn ms", "train speed-up",
           "train speed-up (CPU, 1 thread)", "target"]


def markdown(results: dict, image: str | None = None) -> str:
    rows = results["rows"]
    body = [[r["structure"], f"`{r['label']}`", r.get("engine", ""), r["dims"],
             f"{r['params'] / r['params_dense']:.2f}", f"{r['gate_flops'] / r['gate_flops_dense']:.2f}", *_cells(r, "inference"), *_cells(r, "training"),
             _verdict(r)] for r in rows]
    met = {clock: [passes(r, mode, clock) for r in rows for mode in MODES if r[mode]["target"] is not None]
           for clock in CLOCKS}
    parts = [
        "## Structures: structured weights vs a dense torch.nn.LSTM",
        report.provenance(results["env"]),
        "Speed-up = nn.LSTM time / lstmkit time at the same T, B, I = H (higher is better); fp32, median of the "
        "runs, all models of a shape timed interleaved in one process, twice: wall-clock on all cores (as the "
        "other sections), and CPU time (`time.process_time`) at one thread, which leaves out the time other "
        "processes on a shared machine hold the cores. `params` and `gate FLOPs` are relative to the dense LSTM "
        "(gate FLOPs: multiply-adds of W_ih and W_hh over all T·B rows, from each map's `flops()`). Every "
        "structure is checked against the dense LSTM of its own `to_dense()` before timing. `engine` is the "
        "engine `lstmkit.LSTM` picks: `native` is the C++ time loop (a low-rank W_hh = U V runs there as an "
        "LSTMP whose projection only feeds the recurrence, a diagonal W_hh inside the pointwise step, a grouped "
        "W_hh as products over its blocks alone), `fused` "
        "the Python time loop with hand-written BPTT (per step one map call and one native pointwise kernel; "
        "inference without autograd). `dense` is the dense layer on the fused engine, and `floor` (diagonal "
        "W_ih and W_hh, no GEMMs) is the fused engine's fixed cost.",
        report.table(HEADERS, body),
        "Targets met: " + ", ".join(f"{sum(map(bool, v))} of {len(v)} by {CLOCKS[c]}" for c, v in met.items()) + ".",
        notes(rows),
    ]
    if image:
        parts.append(f"![speed-up over nn.LSTM per structure]({image})")
    return "\n\n".join(parts) + "\n"


def notes(rows: list[dict]) -> str:
    """Why a target is missed, from the numbers: the FLOPs a structure saves against the time it saves, and the
    floor (the engine's cost without GEMMs) that the time cannot go below."""
    floor = {(r["shape"], mode): r[mode].get("cpu1") for r in rows if r["structure"] == "floor" for mode in MODES}
    dense = {(r["shape"], mode): r[mode].get("cpu1") for r in rows if r["structure"] == "dense" for mode in MODES}
    lines = []
    for r in rows:
        for mode in MODES:
            m = r[mode]
            if m["target"] is None or (passes(r, mode, "wall") and passes(r, mode, "cpu1")) or "cpu1" not in m:
                continue
            on_fused = r.get("engine", "fused") == "fused"  # the floor and dense rows are the fused engine's
            fl, de = (floor.get((r["shape"], mode)), dense.get((r["shape"], mode))) if on_fused else (None, None)
            flo = (f" The floor alone takes {fl['time_s'] / fl['nn_time_s']:.0%} of nn.LSTM's CPU time here, "
                   f"{fl['time_s'] / m['cpu1']['time_s']:.0%} of this structure's." if fl else "")
            flo += (f" And the engine's products (torch.mm) run the dense layer at {1 / de['ratio']:.2f}× nn.LSTM's "
                    f"speed (oneDNN's fused kernel): over the dense layer on the same engine this structure is "
                    f"{de['ratio'] / m['cpu1']['ratio']:.2f}× faster." if de else "")
            lines.append(f"- **{r['structure']}, {r['shape']} {mode}**: {1 / m['wall']['ratio']:.2f}× wall-clock, "
                         f"{1 / m['cpu1']['ratio']:.2f}× CPU, target {1 / m['target']:.2g}×. Its gate FLOPs are "
                         f"{r['gate_flops'] / r['gate_flops_dense']:.2f}× the dense ones (a bound of "
                         f"{r['gate_flops_dense'] / r['gate_flops']:.1f}× if time followed FLOPs), but the per-step "
                         f"pointwise gates and {'map calls' if on_fused else 'the threads meeting at each step'} "
                         f"do not shrink with the weights.{flo}")
    missed = "\n".join(["Where a target is missed:", *lines]) if lines else "Every target is met by both clocks."
    return "\n\n".join([missed, *relative_notes(rows)])


def relative_notes(rows: list[dict]) -> list[str]:
    """One line per RELATIVE_TARGETS entry and shape: the row's time over its base row's, by both clocks."""
    by = {(r["structure"], r["shape"]): r for r in rows}
    lines = []
    for (name, base, mode), limit in RELATIVE_TARGETS.items():
        for shape in dict.fromkeys(r["shape"] for r in rows):
            r, b = by.get((name, shape)), by.get((base, shape))
            if r is None or b is None or "cpu1" not in r[mode] or "cpu1" not in b[mode]:
                continue
            ratios = {clock: r[mode][clock]["time_s"] / b[mode][clock]["time_s"] for clock in CLOCKS}
            verdict = "pass" if all(v <= limit for v in ratios.values()) else "miss"
            lines.append(f"- **{name} vs {base}, {shape} {mode}**: {ratios['wall']:.2f}× the time wall-clock, "
                         f"{ratios['cpu1']:.2f}× CPU (one thread); target ≤ {limit:g}×: {verdict}.")
    return ["Relative targets:\n" + "\n".join(lines)] if lines else []


def plot(results: dict, path) -> None:
    """Speed-up over nn.LSTM per structure, one panel per shape: inference and training, wall-clock (solid) and
    one-thread CPU time (hatched), targets dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r["shape"] for r in results["rows"]))
    fig, axes = plt.subplots(1, len(shapes), figsize=(7 * len(shapes), 4.5), squeeze=False)
    bars = [(mode, clock) for mode in MODES for clock in CLOCKS]
    width = 0.8 / len(bars)
    for ax, shape in zip(axes[0], shapes):
        rows = [r for r in results["rows"] if r["shape"] == shape]
        for k, (mode, clock) in enumerate(bars):
            xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [1 / r[mode][clock]["ratio"] if clock in r[mode] else 0 for r in rows], width,
                   color=f"C{MODES.index(mode)}", hatch="//" if clock == "cpu1" else None,
                   label=f"{mode}, {CLOCKS[clock]}")
            for x, r in zip(xs, rows):
                if r[mode]["target"]:
                    ax.hlines(1 / r[mode]["target"], x - width / 2, x + width / 2, colors="k", linestyles="--")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set(xticks=range(len(rows)), ylabel="speed-up over nn.LSTM (higher is better)",
               title=f"{shape}: {rows[0]['dims']} (dashed: target)")
        ax.set_xticklabels([r["structure"] for r in rows], rotation=45, ha="right")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
