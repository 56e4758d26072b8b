"""The bf16 table (`lstmkit bench --precision bf16`): lstmkit against torch.nn.LSTM in the same precision, autocast
training and bf16-weight inference, each row's rate as a % of the bf16 dot-product ceiling measured in the run."""
from __future__ import annotations

import sys
import warnings

import torch

from lstmkit.bench import agreement, cases, report
from lstmkit.bench.cases import Case
from lstmkit.bench.dense import median_rounds
from lstmkit.bench.peak import dot_ceiling, fma_ceiling, settled
from lstmkit.bench.timing import time_interleaved

SECTION = "engine-bf16"
IMPLS = ("lstmkit", "nn.LSTM")
MODES = ("autocast training", "bf16 inference")
TOL = 5e-2  # agreement of the bf16 outputs with torch.nn.LSTM's: a few bf16 roundings (2^-8 each)


def time_target(case: Case, mode: str) -> float:
    """issue 14's targets: dense ≤ 0.8 training, ≤ 1.0 inference (S, where oneDNN's fused kernel leads, 1.0 and
    1.2); projection and packed input, where torch.nn.LSTM leaves oneDNN, ≤ 0.6."""
    if case.variant != "dense":
        return 0.6
    if mode == "bf16 inference":
        return 1.2 if case.shape == "S" else 1.0
    return 1.0 if case.shape == "S" else 0.8


def _bf16_pair(case: Case, seed: int):
    """(ours, ref) as bf16 modules with the same weights."""
    from lstmkit.layer import LSTM

    ours, ref = cases.models(case, LSTM, seed, "cpu")
    return ours.to(torch.bfloat16), ref.to(torch.bfloat16)


def _agrees(ours, ref, x, lens) -> tuple[float, str]:
    """The largest relative error of output, h_n, c_n in bf16 inference, and where."""
    with torch.no_grad():
        a_out, (a_h, a_c) = ours(cases.as_input(x, lens))
        b_out, (b_h, b_c) = ref(cases.as_input(x, lens))
    errs = {name: agreement.rel_err(a.float(), b.float())
            for name, a, b in (("output", cases.data(a_out), cases.data(b_out)), ("h_n", a_h, b_h), ("c_n", a_c, b_c))}
    worst = max(errs, key=errs.get)
    return errs[worst], worst


def _autocast_training(model, x, lens):
    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = model(cases.as_input(x, lens))
        cases.data(out).float().square().mean().backward()
    return step


def run_case(case: Case, cfg, ceiling: float) -> list[dict]:
    from lstmkit.layer import LSTM

    x, lens = cases.inputs(case, cfg.seed, "cpu"), cases.lengths(case, cfg.seed)
    ours32, ref32 = cases.models(case, LSTM, cfg.seed, "cpu")
    ours16, ref16 = _bf16_pair(case, cfg.seed)
    x16 = x.to(torch.bfloat16)
    err, worst = _agrees(ours16, ref16, x16, lens)
    base = {"case": case.name, "shape": case.shape, "variant": case.variant, "dims": case.dims,
            "max_rel_err": err, "worst": worst, "tol": TOL, "agrees": err <= TOL}
    if not base["agrees"]:
        return [dict(base, mode=mode) for mode in MODES]
    xg = x.detach().clone().requires_grad_(True)
    steps = {"autocast training": {"lstmkit": _autocast_training(ours32, xg, lens),
                                   "nn.LSTM": _autocast_training(ref32, xg, lens)},
             "bf16 inference": {"lstmkit": lambda: cases.inference_step(ours16, x16, lens),
                                "nn.LSTM": lambda: cases.inference_step(ref16, x16, lens)}}
    flops = cases.forward_flops(case, cfg.seed)
    rows = []
    for mode in MODES:
        timing = time_interleaved(steps[mode], cfg.repeats, cfg.warmup, "cpu")
        mode_flops = flops * (3 if mode == "autocast training" else 1)
        t = {name: timing[name].median for name in IMPLS}
        gflops = {name: mode_flops / t[name] / 1e9 for name in IMPLS}
        row = dict(base, mode=mode, flops=mode_flops, time_s=t, samples_s={n: timing[n].samples for n in IMPLS},
                   ratio=t["lstmkit"] / t["nn.LSTM"], paired_ratio=timing["lstmkit"].paired_ratio(timing["nn.LSTM"]),
                   gflops=gflops, pct_ceiling={n: 100 * g / ceiling for n, g in gflops.items()},
                   time_target=time_target(case, mode))
        row["passes"] = row["ratio"] <= row["time_target"]
        rows.append(row)
    return rows


def run(cfg) -> dict:
    shape_table = cases.QUICK_SHAPES if cfg.quick else cases.SHAPES
    names = list(shape_table) if cfg.quick else cfg.shapes.split(",")
    case_list = cases.cases(names, shape_table)
    print("measuring the bf16 dot-product and fp32 FMA ceilings", file=sys.stderr, flush=True)
    ceilings = {"bf16": dot_ceiling(), "fp32": fma_ceiling()}
    has_dot = bool(ceilings["bf16"])
    if not has_dot:  # no vdpbf16ps: the bf16 loop runs two fp32 FMAs per pair, so fp32's bound
        ceilings["bf16"] = ceilings["fp32"]
    rounds = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not supported with oneDNN.*")
        for r in range(cfg.rounds):
            rows = []
            for case in case_list:
                print(f"round {r + 1}/{cfg.rounds}, {case.name}: {case.dims}", file=sys.stderr, flush=True)
                rows += run_case(case, cfg, ceilings["bf16"])
            rounds.append(rows)
    rows = median_rounds(rounds)
    ceilings = settled(ceilings, {"bf16": dot_ceiling if has_dot else fma_ceiling, "fp32": fma_ceiling}, rows, "bf16")
    return {"study": SECTION, "repeats": cfg.repeats, "warmup": cfg.warmup, "rounds": cfg.rounds,
            "ceilings": ceilings, "rows": rows}


HEADERS = ["case", "shape", "mode", "lstmkit ms", "nn.LSTM ms", "ratio", "ratio range", "lstmkit GFLOP/s",
           "nn.LSTM GFLOP/s", "lstmkit % bf16 ceiling", "nn.LSTM % bf16 ceiling", "target", "pass"]


def _cells(row: dict) -> list[str]:
    head = [row["case"], row["dims"], row["mode"]]
    if not row["agrees"]:
        return head + [f"disagrees: max rel err {row['max_rel_err']:.2g} in {row['worst']}"] + [""] * 8 + ["FAIL"]
    t, g, p = row["time_s"], row["gflops"], row["pct_ceiling"]
    low, high = row.get("ratio_range", (row["ratio"], row["ratio"]))
    return head + [report.fmt_ms(t["lstmkit"]), report.fmt_ms(t["nn.LSTM"]), f"{row['ratio']:.2f}",
                   f"{low:.2f}–{high:.2f}", f"{g['lstmkit']:.0f}", f"{g['nn.LSTM']:.0f}", f"{p['lstmkit']:.0f}",
                   f"{p['nn.LSTM']:.0f}", f"≤ {row['time_target']:g}", "pass" if row["passes"] else "FAIL"]


def misses(rows: list[dict]) -> str:
    """The bound of each missed row: the ratio lstmkit would have with all its multiply-adds at the bf16 ceiling
    (nn.LSTM's % of the ceiling / 100), and the % of the ceiling the target needs."""
    lines = ["Where a target is missed, the bound is the ratio lstmkit would have if all its multiply-adds ran at "
             "the bf16 dot-product ceiling (nn.LSTM's % of the ceiling / 100); meeting the target needs lstmkit at "
             "nn.LSTM's % of the ceiling / target."]
    for r in rows:
        bound, need = r["pct_ceiling"]["nn.LSTM"] / 100, r["pct_ceiling"]["nn.LSTM"] / r["time_target"]
        reach = "out of reach" if r["time_target"] < bound else "reachable in principle"
        lines.append(f"- **{r['case']} {r['mode']}**: ratio {r['ratio']:.2f}, target {r['time_target']:g}, bound "
                     f"{bound:.2f} ({reach}): the target needs {need:.0f} % of the ceiling, lstmkit runs at "
                     f"{r['pct_ceiling']['lstmkit']:.0f} %.")
    return "\n".join(lines)


def markdown(results: dict, image: str | None = None) -> str:
    c, rows = results["ceilings"], results["rows"]
    parts = [
        "## Engine in bf16: lstmkit.LSTM vs torch.nn.LSTM, same precision",
        report.provenance(results["env"]),
        "Same process, same weights. `autocast training`: float32 modules, forward under "
        "`torch.autocast(\"cpu\", dtype=torch.bfloat16)`, backward of an MSE loss (3x the forward FLOPs); "
        "`bf16 inference`: both modules `.to(torch.bfloat16)`, no grad. Times are the median of "
        f"{results['repeats']} interleaved runs after {results['warmup']} warm-up, the table measured "
        f"{results.get('rounds', 1)} times (each row: the round with the median ratio). A case is timed only after "
        f"its bf16 outputs agree with nn.LSTM's within {TOL:g}.",
        f"Ceilings measured by this run: bf16 dot products (vdpbf16ps, registers only) **{c['bf16']:.0f} GFLOP/s**, "
        f"fp32 FMAs {c['fp32']:.0f} GFLOP/s.",
        report.table(HEADERS, [_cells(r) for r in rows]),
        f"{sum(r.get('passes', False) for r in rows)} of {len(rows)} rows meet their targets.",
    ]
    missed = [r for r in rows if r["agrees"] and not r["passes"]]
    if missed:
        parts.append(misses(missed))
    if image:
        parts.append(f"![lstmkit / nn.LSTM in bf16]({image})")
    return "\n\n".join(parts) + "\n"


def plot(results: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["agrees"]]
    names = list(dict.fromkeys(r["case"] for r in rows))
    by = {(r["case"], r["mode"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(10, 4))
    for k, mode in enumerate(MODES):
        xs = [i + (k - 0.5) * 0.4 for i in range(len(names))]
        ax.bar(xs, [by[n, mode]["ratio"] for n in names], 0.4, label=mode)
        for x, n in zip(xs, names):
            ax.hlines(by[n, mode]["time_target"], x - 0.2, x + 0.2, colors="k", linestyles="--")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set(xticks=range(len(names)), ylabel="time lstmkit / nn.LSTM, bf16 (lower is better)",
           title="bf16: time ratio (dashed: target)")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
