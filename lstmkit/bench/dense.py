"""The main table: lstmkit.LSTM against torch.nn.LSTM, inference and training, gated on numerical agreement."""
from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from torch import nn

from lstmkit.bench import agreement, cases, report
from lstmkit.bench.cases import Case
from lstmkit.bench.memory import peak_memory
from lstmkit.bench.peak import measure_peak
from lstmkit.bench.timing import time_interleaved

SECTION = "engine"
IMPLS = ("lstmkit", "nn.LSTM")
MODES = ("inference", "training")
MEMORY_TARGET = 1.1  # peak training memory, lstmkit / nn.LSTM


def time_target(case: Case) -> float:
    """The time ratio lstmkit / nn.LSTM to reach: oneDNN's fused kernel is hard to beat at small sizes,
    and nn.LSTM's per-step fallback for projection and packed input should be beaten by 2x."""
    if case.variant != "dense":
        return 0.5
    return 1.2 if case.shape == "S" else 1.0


def gemm_shapes(case_list: list[Case]) -> set[tuple[int, int, int]]:
    """(M, K, N) of the products an LSTM engine makes: the per-step recurrent product, the hoisted input
    product over all T·B rows, and the weight-gradient product."""
    shapes = set()
    for c in case_list:
        shapes |= {(c.B, c.H, 4 * c.H), (c.T * c.B, c.I, 4 * c.H), (4 * c.H, c.T * c.B, c.I)}
    return shapes


def run_case(case: Case, cfg, peak_gflops: float, impl: Callable[..., nn.Module] | None = None,
             after_load: Callable[[nn.Module], None] | None = None) -> list[dict]:
    """One row per mode for `case`; a case that disagrees with nn.LSTM gets rows without any timing."""
    if impl is None:
        from lstmkit.layer import LSTM as impl
    ours, ref = cases.models(case, impl, cfg.seed, cfg.device, after_load)
    models = {"lstmkit": ours, "nn.LSTM": ref}
    x, lens = cases.inputs(case, cfg.seed, cfg.device), cases.lengths(case, cfg.seed)
    agree = agreement.check(ours, ref, x, lens, cfg.tol, cfg.seed)
    base = {"case": case.name, "shape": case.shape, "variant": case.variant, "T": case.T, "B": case.B,
            "I": case.I, "H": case.H, "P": case.P, "dims": case.dims, "agrees": agree.ok,
            "max_rel_err": agree.max_rel_err, "worst": agree.worst, "tol": agree.tol,
            "time_target": time_target(case)}
    if not agree.ok:
        return [dict(base, mode=mode) for mode in MODES]

    xg = x.detach().clone().requires_grad_(True)
    steps = {"inference": lambda m: lambda: cases.inference_step(m, x, lens),
             "training": lambda m: lambda: cases.training_step(m, xg, lens)}
    for m in models.values():  # grads freed inside the measured step would be frees of unknown size
        m.zero_grad(set_to_none=True)
    memory = {name: peak_memory(steps["training"](m), cfg.device) for name, m in models.items()}
    flops = cases.forward_flops(case, cfg.seed)
    rows = []
    for mode in MODES:
        timing = time_interleaved({name: steps[mode](m) for name, m in models.items()},
                                  cfg.repeats, cfg.warmup, cfg.device)
        mode_flops = flops * (3 if mode == "training" else 1)
        t = {name: timing[name].median for name in IMPLS}
        gflops = {name: mode_flops / t[name] / 1e9 for name in IMPLS}
        row = dict(base, mode=mode, flops=mode_flops, time_s=t,
                   min_time_s={name: timing[name].min for name in IMPLS},
                   samples_s={name: timing[name].samples for name in IMPLS},
                   ratio=t["lstmkit"] / t["nn.LSTM"], gflops=gflops,
                   paired_ratio=timing["lstmkit"].paired_ratio(timing["nn.LSTM"]),
                   pct_peak={name: 100 * g / peak_gflops for name, g in gflops.items()})
        if mode == "training":
            row.update(memory_bytes=memory, memory_ratio=memory["lstmkit"] / memory["nn.LSTM"],
                       memory_target=MEMORY_TARGET)
        row["passes"] = row["ratio"] <= row["time_target"] and row.get("memory_ratio", 0) <= MEMORY_TARGET
        rows.append(row)
    return rows


def run(cfg, impl=None, after_load=None) -> dict:
    shape_table = cases.QUICK_SHAPES if cfg.quick else cases.SHAPES
    names = list(shape_table) if cfg.quick else cfg.shapes.split(",")
    case_list = cases.cases(names, shape_table)
    print(f"measuring the GEMM peak on {len(gemm_shapes(case_list))} shapes", file=sys.stderr, flush=True)
    peak = measure_peak(gemm_shapes(case_list), cfg.repeats, cfg.warmup, cfg.device)
    rounds = []
    with warnings.catch_warnings():  # nn.LSTM says once per process that projections leave oneDNN
        warnings.filterwarnings("ignore", message=".*not supported with oneDNN.*")
        for r in range(cfg.rounds):
            rows = []
            for case in case_list:
                print(f"round {r + 1}/{cfg.rounds}, {case.name}: {case.dims}", file=sys.stderr, flush=True)
                rows += run_case(case, cfg, peak["peak"], impl, after_load)
            rounds.append(rows)
    return {"study": SECTION, "repeats": cfg.repeats, "warmup": cfg.warmup, "rounds": cfg.rounds, "peak": peak,
            "rows": median_rounds(rounds)}


def median_rounds(rounds: list[list[dict]]) -> list[dict]:
    """Row by row, the round whose time ratio is the median (for an even count, the upper middle one: the less
    favourable to lstmkit), with every round's ratio and their range; a row that disagreed with nn.LSTM in any
    round is that round's row."""
    rows = []
    for versions in zip(*rounds):
        if not all(v["agrees"] for v in versions):
            rows.append(next(v for v in versions if not v["agrees"]))
            continue
        ranked = sorted(versions, key=lambda v: v["ratio"])
        ratios = [v["ratio"] for v in versions]
        rows.append(dict(ranked[len(ranked) // 2], round_ratios=ratios, ratio_range=[min(ratios), max(ratios)]))
    return rows


def _cells(row: dict) -> list[str]:
    head = [row["case"], row["dims"], row["mode"]]
    if not row["agrees"]:
        err = f"disagrees: max rel err {row['max_rel_err']:.2g} in {row['worst']} (tol {row['tol']:g})"
        return head + [err] + [""] * 11 + ["FAIL"]
    t, g, p = row["time_s"], row["gflops"], row["pct_peak"]
    mem = row.get("memory_bytes")
    mem_cells = ([report.fmt_mib(mem["lstmkit"]), report.fmt_mib(mem["nn.LSTM"]), f"{row['memory_ratio']:.2f}"]
                 if mem else ["", "", ""])
    target = f"≤ {row['time_target']:g}" + (f", mem ≤ {row['memory_target']:g}" if mem else "")
    low, high = row.get("ratio_range", (row["ratio"], row["ratio"]))
    return head + [report.fmt_ms(t["lstmkit"]), report.fmt_ms(t["nn.LSTM"]), f"{row['ratio']:.2f}",
                   f"{low:.2f}–{high:.2f}",
                   f"{g['lstmkit']:.0f}", f"{g['nn.LSTM']:.0f}", f"{p['lstmkit']:.0f}", f"{p['nn.LSTM']:.0f}",
                   *mem_cells, target, "pass" if row["passes"] else "FAIL"]


HEADERS = ["case", "shape", "mode", "lstmkit ms", "nn.LSTM ms", "ratio", "ratio range", "lstmkit GFLOP/s",
           "nn.LSTM GFLOP/s", "lstmkit % peak", "nn.LSTM % peak", "lstmkit MiB", "nn.LSTM MiB", "mem ratio", "target",
           "pass"]


def bound(row: dict) -> float:
    """The lowest ratio lstmkit could reach on this row: all its FLOPs at the measured GEMM peak, against
    nn.LSTM's time as measured. A target below it asks for more than the machine's peak."""
    return row["pct_peak"]["nn.LSTM"] / 100


def needed(row: dict) -> float:
    """The % of the GEMM peak lstmkit's FLOPs would have to run at to meet the row's time target."""
    return row["pct_peak"]["nn.LSTM"] / row["time_target"]


def of_ceiling(pct_peak: float, peak: dict) -> str:
    """` (N % of the FMA ceiling)`: a % of the GEMM peak restated against the arithmetic ceiling, when measured."""
    if not peak.get("fma_ceiling"):
        return ""
    return f" ({pct_peak * peak['peak'] / peak['fma_ceiling']:.0f} % of the FMA ceiling)"


def misses(rows: list[dict], best: float, peak: dict | None = None) -> str:
    """Notes on the missed rows; `best` is the highest % of the peak lstmkit reaches on any row of the run, `peak`
    the run's measure_peak (for the FMA ceiling)."""
    peak = peak or {}
    lines = ["Where a target is missed, the bound says what is reachable at all: the ratio lstmkit would have "
             "if all its multiply-adds ran at the GEMM peak this run measured (nn.LSTM's % of peak / 100). "
             f"Meeting the target needs lstmkit at nn.LSTM's % of peak / target; its best on any row here is "
             f"{best:.0f} %{of_ceiling(best, peak)}."]
    for r in rows:
        need = f"{needed(r):.0f} % of the peak{of_ceiling(needed(r), peak)}"
        why = (f"the target is under the bound {bound(r):.2f}, out of reach: nn.LSTM already runs at "
               f"{r['pct_peak']['nn.LSTM']:.0f} % of the peak, so the target needs {need}; "
               f"lstmkit runs at {r['pct_peak']['lstmkit']:.0f} %"
               if r["time_target"] < bound(r) else
               f"bound {bound(r):.2f}: reachable in principle; the target needs {need}, "
               f"lstmkit runs at {r['pct_peak']['lstmkit']:.0f} %")
        memory = (f"; memory ratio {r['memory_ratio']:.2f} (target ≤ {r['memory_target']:g})"
                  if r.get("memory_ratio", 0) > r.get("memory_target", MEMORY_TARGET) else "")
        lines.append(f"- **{r['case']} {r['mode']}**: ratio {r['ratio']:.2f}, target {r['time_target']:g}, "
                     f"{why}{memory}.")
    return "\n".join(lines)


def ceiling_note(peak: dict) -> str:
    """The FMA ceiling sentence, when the run measured it."""
    if not peak.get("fma_ceiling"):
        return ""
    return (f" The FMA ceiling, fp32 vector fused multiply-adds on registers alone with no memory traffic, is "
            f"**{peak['fma_ceiling']:.0f} GFLOP/s**: no product, and no LSTM, can run faster on these cores; the "
            f"GEMM peak is {100 * peak['peak'] / peak['fma_ceiling']:.0f} % of it.")


def markdown(results: dict, image: str | None = None) -> str:
    peak = results["peak"]
    best = ", ".join(f"{b} {g:.0f}" for b, g in peak["best"].items())
    rows = results["rows"]
    passed = sum(r.get("passes", False) for r in rows)
    parts = [
        "## Engine: lstmkit.LSTM vs torch.nn.LSTM",
        report.provenance(results["env"]),
        f"Same process, same weights (`load_state_dict`), fp32. Times are the median of {results['repeats']} "
        f"interleaved runs after {results['warmup']} warm-up; ratio = "
        "lstmkit / nn.LSTM (lower is better). "
        f"The table was measured {results.get('rounds', 1)} times, one round after the other: each row shows the "
        "round with the median ratio, and `ratio range` the lowest and highest ratio over the rounds. "
        "A case is timed only after its outputs and all gradients agree with nn.LSTM. "
        "Training = forward + backward of an MSE loss, input gradient included, counted as 3x the forward FLOPs "
        "(gates 2·4H·(I+R) per row and step, R = P or H, plus projection 2·H·P). "
        "`proj`: proj_size = H/4; `packed`: PackedSequence, lengths uniform in [T/2, T]. "
        "Memory: peak bytes allocated during one training step (MiB).",
        f"GEMM peak measured by this run: **{peak['peak']:.0f} GFLOP/s** ({peak['peak_backend']}, "
        f"{peak['peak_shape']}); best per backend: {best} GFLOP/s." + ceiling_note(peak),
        report.table(HEADERS, [_cells(r) for r in rows]),
        f"{passed} of {len(rows)} rows meet their targets.",
    ]
    missed = [r for r in rows if r["agrees"] and not r["passes"]]
    if missed:
        parts.append(misses(missed, max(r["pct_peak"]["lstmkit"] for r in rows if r["agrees"]), peak))
    if image:
        parts.append(f"![lstmkit / nn.LSTM time and memory ratios]({image})")
    return "\n\n".join(parts) + "\n"


def plot(results: dict, path) -> None:
    """Bars of the time ratio per case (inference, training) and of the memory ratio, with each target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["agrees"]]
    names = list(dict.fromkeys(r["case"] for r in rows))
    by = {(r["case"], r["mode"]): r for r in rows}
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.4
    for k, mode in enumerate(MODES):
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        ratios = [by[n, mode]["ratio"] for n in names]
        ranges = [by[n, mode].get("ratio_range", (r, r)) for n, r in zip(names, ratios)]
        spread = [[r - lo for r, (lo, _) in zip(ratios, ranges)], [hi - r for r, (_, hi) in zip(ratios, ranges)]]
        ax_t.bar(xs, ratios, width, yerr=spread, capsize=2, label=mode)
    for i, n in enumerate(names):
        ax_t.hlines(by[n, "training"]["time_target"], i - 0.45, i + 0.45, colors="k", linestyles="--")
    ax_t.axhline(1.0, color="grey", lw=0.5)
    ax_t.set(xticks=range(len(names)), ylabel="time lstmkit / nn.LSTM (lower is better)",
             title="time ratio (dashed: target; whiskers: range over the rounds)")
    ax_t.set_xticklabels(names, rotation=45, ha="right")
    ax_t.legend()
    ax_m.bar(range(len(names)), [by[n, "training"]["memory_ratio"] for n in names], color="tab:green")
    ax_m.axhline(MEMORY_TARGET, color="k", ls="--")
    ax_m.set(xticks=range(len(names)), ylabel="peak training memory lstmkit / nn.LSTM",
             title=f"memory ratio (dashed: target {MEMORY_TARGET})")
    ax_m.set_xticklabels(names, rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
