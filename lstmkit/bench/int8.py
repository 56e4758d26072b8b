"""The int8 table (`lstmkit bench --precision int8`): lstmkit's int8 inference (`compress.quantize(model, "int8")`, run
by the native int8 loop) against torch.nn.LSTM with bf16 weights and in fp32, each row's rate as a % of the int8
dot-product ceiling (vpdpbusd) measured in the run."""
from __future__ import annotations

import sys
import warnings

import torch

from lstmkit.bench import bf16, cases, report
from lstmkit.bench.cases import Case
from lstmkit.bench.dense import median_rounds
from lstmkit.bench.peak import dot_ceiling, fma_ceiling, int8_ceiling, settled
from lstmkit.bench.timing import time_interleaved

SECTION = "engine-int8"
OURS = "lstmkit int8"
REFS = ("nn.LSTM bf16", "nn.LSTM fp32")
IMPLS = (OURS, *REFS)
TOL = 5e-2  # agreement of the int8 outputs with the fp32 nn.LSTM's: 8-bit weights and activations, relative
TARGETS = {"nn.LSTM bf16": 0.65, "nn.LSTM fp32": 0.35}  # issue 14's, at L and XL


def time_targets(case: Case) -> dict[str, float] | None:
    """issue 14's targets at L and XL (none at S and M, where the rows are reported only)."""
    return TARGETS if case.shape in ("L", "XL") else None


def _int8_model(ours):
    from lstmkit.compress import quantize

    return quantize(ours, "int8").eval()


def run_case(case: Case, cfg, ceiling: float) -> dict:
    from lstmkit.layer import LSTM

    x, lens = cases.inputs(case, cfg.seed, "cpu"), cases.lengths(case, cfg.seed)
    ours, ref32 = cases.models(case, LSTM, cfg.seed, "cpu")
    _, ref16 = bf16._bf16_pair(case, cfg.seed)
    ours8 = _int8_model(ours)
    err, worst = bf16._agrees(ours8, ref32, x, lens)
    row = {"case": case.name, "shape": case.shape, "variant": case.variant, "dims": case.dims, "mode": "int8 inference",
           "max_rel_err": err, "worst": worst, "tol": TOL, "agrees": err <= TOL}
    if not row["agrees"]:
        return row
    x16 = x.to(torch.bfloat16)
    steps = {OURS: lambda: cases.inference_step(ours8, x, lens),
             "nn.LSTM bf16": lambda: cases.inference_step(ref16, x16, lens),
             "nn.LSTM fp32": lambda: cases.inference_step(ref32, x, lens)}
    timing = time_interleaved(steps, cfg.repeats, cfg.warmup, "cpu")
    flops = cases.forward_flops(case, cfg.seed)
    t = {name: timing[name].median for name in IMPLS}
    gflops = {name: flops / t[name] / 1e9 for name in IMPLS}
    targets = time_targets(case)
    ratios = {ref: t[OURS] / t[ref] for ref in REFS}
    row.update(flops=flops, time_s=t, samples_s={n: timing[n].samples for n in IMPLS}, ratios=ratios,
               ratio=ratios["nn.LSTM bf16"],
               paired_ratios={ref: timing[OURS].paired_ratio(timing[ref]) for ref in REFS},
               gflops=gflops, pct_ceiling={n: 100 * g / ceiling for n, g in gflops.items()}, time_targets=targets,
               passes=None if targets is None else all(ratios[r] <= targets[r] for r in REFS))
    return row


def run(cfg) -> dict:
    shape_table = cases.QUICK_SHAPES if cfg.quick else cases.SHAPES
    names = list(shape_table) if cfg.quick else cfg.shapes.split(",")
    case_list = cases.cases(names, shape_table)
    print("measuring the int8 dot-product, bf16 dot-product and fp32 FMA ceilings", file=sys.stderr, flush=True)
    ceilings = {"int8": int8_ceiling(), "bf16": dot_ceiling(), "fp32": fma_ceiling()}
    has_dot = bool(ceilings["int8"])
    if not has_dot:  # no vpdpbusd: the portable tile's integer multiply-adds, bounded by fp32's rate at best
        ceilings["int8"] = ceilings["fp32"]
    rounds = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not supported with oneDNN.*")
        for r in range(cfg.rounds):
            rows = []
            for case in case_list:
                print(f"round {r + 1}/{cfg.rounds}, {case.name}: {case.dims}", file=sys.stderr, flush=True)
                rows.append(run_case(case, cfg, ceilings["int8"]))
            rounds.append(rows)
    rows = median_rounds(rounds)
    measure = {"int8": int8_ceiling if has_dot else fma_ceiling, "bf16": dot_ceiling, "fp32": fma_ceiling}
    ceilings = settled(ceilings, measure, rows, "int8")
    return {"study": SECTION, "repeats": cfg.repeats, "warmup": cfg.warmup, "rounds": cfg.rounds,
            "ceilings": ceilings, "rows": rows}


HEADERS = ["case", "shape", "lstmkit int8 ms", "nn.LSTM bf16 ms", "nn.LSTM fp32 ms", "/ bf16", "/ bf16 range",
           "/ fp32", "lstmkit GOP/s", "lstmkit % int8 ceiling", "nn.LSTM bf16 % int8 ceiling",
           "nn.LSTM fp32 % int8 ceiling", "targets", "pass"]


def _cells(row: dict) -> list[str]:
    head = [row["case"], row["dims"]]
    if not row["agrees"]:
        return head + [f"disagrees: max rel err {row['max_rel_err']:.2g} in {row['worst']}"] + [""] * 10 + ["FAIL"]
    t, g, p, q = row["time_s"], row["gflops"], row["pct_ceiling"], row["ratios"]
    low, high = row.get("ratio_range", (row["ratio"], row["ratio"]))
    targets = row["time_targets"]
    target = "—" if targets is None else f"≤ {targets['nn.LSTM bf16']:g}, ≤ {targets['nn.LSTM fp32']:g}"
    verdict = "—" if row["passes"] is None else "pass" if row["passes"] else "FAIL"
    return head + [report.fmt_ms(t[OURS]), report.fmt_ms(t["nn.LSTM bf16"]), report.fmt_ms(t["nn.LSTM fp32"]),
                   f"{q['nn.LSTM bf16']:.2f}", f"{low:.2f}–{high:.2f}", f"{q['nn.LSTM fp32']:.2f}", f"{g[OURS]:.0f}",
                   f"{p[OURS]:.0f}", f"{p['nn.LSTM bf16']:.0f}", f"{p['nn.LSTM fp32']:.0f}", target, verdict]


def misses(rows: list[dict]) -> str:
    """What the hardware allows each missed row: lstmkit's time with all its multiply-adds at the int8 ceiling,
    as a ratio to each reference (the reference's % of the int8 ceiling / 100)."""
    lines = ["Where a target is missed, the bound is the ratio lstmkit would have with all its multiply-adds at the "
             "int8 dot-product ceiling (the reference's % of that ceiling / 100)."]
    for r in rows:
        parts = []
        for ref in REFS:
            bound, target = r["pct_ceiling"][ref] / 100, r["time_targets"][ref]
            reach = "out of reach" if target < bound else "reachable in principle"
            parts.append(f"vs {ref} {r['ratios'][ref]:.2f} (target {target:g}, bound {bound:.2f}: {reach})")
        lines.append(f"- **{r['case']}**: " + "; ".join(parts) + f"; lstmkit at {r['pct_ceiling'][OURS]:.0f} % of the "
                     "ceiling.")
    return "\n".join(lines)


def markdown(results: dict, image: str | None = None) -> str:
    c, rows = results["ceilings"], results["rows"]
    judged = [r for r in rows if r.get("passes") is not None or not r["agrees"]]
    parts = [
        "## Engine in int8: lstmkit int8 inference vs torch.nn.LSTM in bf16 and fp32",
        report.provenance(results["env"]),
        "Same process, same weights, no grad. `lstmkit int8`: `compress.quantize(model, \"int8\")` (int8 weights "
        "with per-row scales, activations quantized per row each step, exact int32 sums: the native int8 loop); "
        "`nn.LSTM bf16`: the module `.to(torch.bfloat16)` on bf16 input; `nn.LSTM fp32`: as it is. Times are the "
        f"median of {results['repeats']} interleaved runs after {results['warmup']} warm-up, the table measured "
        f"{results.get('rounds', 1)} times (each row: the round with the median ratio to bf16). A case is timed only "
        f"after lstmkit's int8 outputs agree with the fp32 nn.LSTM's within {TOL:g} (relative). GOP/s count two "
        "operations per multiply-add of the fp32 model.",
        f"Ceilings measured by this run: int8 dot products (vpdpbusd, registers only) **{c['int8']:.0f} GOP/s**, "
        f"bf16 dot products {c['bf16'] or 0:.0f} GFLOP/s, fp32 FMAs {c['fp32']:.0f} GFLOP/s.",
        report.table(HEADERS, [_cells(r) for r in rows]),
        f"{sum(bool(r.get('passes')) for r in judged)} of {len(judged)} rows with targets (L and XL) meet both.",
    ]
    missed = [r for r in judged if r["agrees"] and not r["passes"]]
    if missed:
        parts.append(misses(missed))
    if image:
        parts.append(f"![lstmkit int8 / nn.LSTM]({image})")
    return "\n\n".join(parts) + "\n"


def plot(results: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["agrees"]]
    names = [r["case"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    for k, ref in enumerate(REFS):
        xs = [i + (k - 0.5) * 0.4 for i in range(len(names))]
        ax.bar(xs, [r["ratios"][ref] for r in rows], 0.4, label=f"/ {ref}")
        for x, r in zip(xs, rows):
            if r["time_targets"]:
                ax.hlines(r["time_targets"][ref], x - 0.2, x + 0.2, colors="k", linestyles="--")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set(xticks=range(len(names)), ylabel="time lstmkit int8 / nn.LSTM (lower is better)",
           title="int8 inference: time ratio (dashed: target)")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
