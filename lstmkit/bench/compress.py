"""The compress study (`lstmkit bench --study compress`): what pruning, quantization and distillation buy.

Speed and size on the L and XL shapes (lstmkit.bench.compress_speed) and loss on a Tiny Shakespeare character
model (lstmkit.bench.compress_lm), written as benchmarks/compress.json, a PNG and BENCHMARKS.md's section.
"""
from __future__ import annotations

from lstmkit.bench import report
from lstmkit.bench.compress_lm import run_lm
from lstmkit.bench.compress_speed import run_speed
from lstmkit.engine import native

SECTION = "compress"
SPEED_TARGET, SIZE_TARGET = 1.5, 3.5  # int8 against fp32 on L and XL


def run(cfg) -> dict:
    return {"study": SECTION, "repeats": cfg.repeats, "warmup": cfg.warmup, "native": native.available(),
            **run_speed(cfg), "lm": run_lm(cfg)}


def crossover(rows: list[dict], key: str = "speedup") -> float | None:
    """The lowest sparsity from which the sparse path is faster at every measured sparsity, or None."""
    faster = [r["sparsity"] for r in rows if r[key] > 1]
    slower = [r["sparsity"] for r in rows if r[key] <= 1]
    above = [f for f in faster if not slower or f > max(slower)]
    return min(above) if above else None


def _pass(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _kernels(results: dict) -> str:
    rows = results["kernels"]
    shapes = list(dict.fromkeys((r["M"], r["K"], r["N"]) for r in rows))
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    by = {(r["M"], r["K"], r["N"], r["kernel"]): r for r in rows}
    cells = [[f"({m} × {k}) · ({k} × {n})"] + [f"{by[m, k, n, q]['ms']:.3g} ({by[m, k, n, q]['speedup']:.1f}x)"
                                              if (m, k, n, q) in by else "" for q in kernels]
             for m, k, n in shapes]
    return report.table(["product", *kernels], cells)


def _engine(results: dict) -> str:
    cells = []
    for r in results["engine"]:
        target = ""
        if r["variant"] == "int8":
            ok = r["speedup"] >= SPEED_TARGET and r["size_ratio"] >= SIZE_TARGET
            target = f"≥ {SPEED_TARGET}x, ≥ {SIZE_TARGET}x: {_pass(ok)}"
        cells.append([f"{r['shape']} (T={r['T']} B={r['B']} H={r['H']})", r["variant"], f"{r['ms']:.3g}",
                      f"{r['speedup']:.2f}x", report.fmt_mib(r["weight_bytes"]), f"{r['size_ratio']:.2f}x",
                      f"{r['max_rel_err']:.2g}", target])
    return report.table(["shape", "weights", "ms", "speed-up", "weight MiB", "smaller", "max rel. error", "target"],
                        cells) + ("\n\nMax rel. error: of the outputs, against the fp32 layer (a pruned layer: against "
                                  "its own masked matrices run dense). Weight MiB: as a compressed checkpoint stores "
                                  "them (pruned: kept values + a bit mask).")


def _sweep(results: dict) -> str:
    gemm = results["gemm_sweep"]
    shapes = list(dict.fromkeys((r["M"], r["H"]) for r in gemm))
    sparsities = list(dict.fromkeys(r["sparsity"] for r in gemm))
    by = {(r["M"], r["H"], r["sparsity"]): r["speedup"] for r in gemm}
    cells = [[f"CSR product ({m} × {h}) · ({h} × {4 * h})"] + [f"{by[m, h, s]:.2f}x" for s in sparsities]
             for m, h in shapes]
    lstm = {r["sparsity"]: r["speedup"] for r in results["lstm_sweep"]}
    r0 = results["lstm_sweep"][0]
    cells.append([f"pruned LSTM (T={r0['T']} B={r0['B']} H={r0['H']}) vs fp32 lstmkit"]
                  + [f"{lstm[s]:.2f}x" if s in lstm else "" for s in sparsities])
    text = report.table(["speed-up over dense at sparsity", *(f"{s:.0%}" for s in sparsities)], cells)
    notes = []
    for m, h in shapes:
        c = crossover([{"sparsity": s, "speedup": by[m, h, s]} for s in sparsities])
        notes.append(f"({m} × {h}): " + (f"from {c:.0%}" if c is not None else "not in the measured range"))
    c = crossover(results["lstm_sweep"])
    notes.append("whole LSTM: " + (f"from {c:.0%}" if c is not None else "not in the measured range"))
    return text + "\n\nThe CSR product beats the dense one " + "; ".join(notes) + "."


def _lm(lm: dict) -> str:
    s = lm["settings"]
    cells = [[r["model"], f"{r['parameters']:,}", report.fmt_mib(r["bytes"]), f"{r['size_ratio']:.2f}x",
              f"{r['tokens_per_s']:,.0f}", f"{r['speed_ratio']:.2f}x", f"{r['lstm_sparsity']:.0%}",
              f"{r['valid_loss']:.4f}", f"{r['loss_change']:+.2%}", f"{r['ppl_change']:+.2%}"] for r in lm["rows"]]
    table = report.table(["model", "parameters", "MiB", "smaller", "tokens/s", "speed", "LSTM sparsity",
                          "valid loss", "loss vs fp32", "ppl vs fp32"], cells)
    t = lm["targets"]
    checks = [f"80 % pruning after fine-tuning: loss {lm['prune_loss_change']:+.2%} (target ≤ "
              f"+{t['prune_loss_change']:.0%}): {_pass(lm['prune_loss_change'] <= t['prune_loss_change'])}",
              f"int8: perplexity {lm['int8_ppl_change']:+.2%} (target within ±{t['int8_ppl_change']:.0%}): "
              f"{_pass(abs(lm['int8_ppl_change']) <= t['int8_ppl_change'])}",
              f"distillation: student loss {lm['distill_gain']:.2%} lower with the teacher (target ≥ "
              f"{t['distill_gain']:.0%}): {_pass(lm['distill_gain'] >= t['distill_gain'])}"]
    setting = (f"Data: {lm['data']} (character level, first 90 % train, last 10 % validation). Teacher: "
               f"H={s['hidden_size']}, embedding {s['embedding_dim']}, bptt {s['bptt']}, batch {s['batch_size']}, "
               f"AdamW lr {s['lr']} cosine, {s['teacher_steps']} steps ({lm['seconds']['teacher']:.0f} s). "
               f"Fine-tuning: {s['finetune_steps']} steps at lr {s['finetune_lr']}, AGP from 0 to "
               f"{s['sparsity']:.0%} over the first 75 % of them. Student: H={s['student_hidden_size']}, "
               f"{s['student_steps']} steps from the same seed, distilled with T={s['temperature']}, "
               f"alpha={s['alpha']} (weight of the labels). Speed: one (T={s['bptt']}, B={s['batch_size']}) batch.")
    return "\n\n".join([setting, table, "\n".join(f"- {c}" for c in checks)])


def markdown(results: dict, image: str | None = None) -> str:
    parts = [
        "## Compression: pruning, quantization, distillation",
        report.provenance(results["env"]),
        f"Times are medians of {results['repeats']} interleaved runs after {results['warmup']} warm-up, inference "
        "(eval, no autograd). Compressed weights run on the fused engine (Python time loop); fp32 on "
        + ("the native C++ loop" if results["native"] else "the fused engine too (the native one was unavailable)")
        + "; `fp32 fused` shows how much of a gap is the engine's, not the kernel's.",
        "### int8 kernels (ms, speed-up over fp32)",
        "Dynamic activation quantization included. `onednn`/`fbgemm`: `torch.ops.quantized.linear_dynamic` on packed "
        "weights; `int_mm`: `torch._int_mm` with per-row scales in PyTorch ops; `weight_int8pack`: "
        "`torch._weight_int8pack_mm` (int8 weights, fp32 activations).",
        _kernels(results),
        "### Compressed LSTM layers against fp32 lstmkit",
        _engine(results),
        "### Sparse against dense",
        _sweep(results),
        "### Tiny Shakespeare character model",
        _lm(results["lm"]),
    ]
    if image:
        parts.append(f"![compression: speed, size and loss]({image})")
    return "\n\n".join(parts) + "\n"


def plot(results: dict, path) -> None:
    """Speed-ups of the compressed layers, the sparse sweep, and validation loss against size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_s, ax_l) = plt.subplots(1, 3, figsize=(16, 4.5))
    shapes = list(dict.fromkeys(r["shape"] for r in results["engine"]))
    variants = list(dict.fromkeys(r["variant"] for r in results["engine"]))
    width = 0.8 / len(shapes)
    for k, shape in enumerate(shapes):
        by = {r["variant"]: r["speedup"] for r in results["engine"] if r["shape"] == shape}
        ax_e.bar([i + k * width for i in range(len(variants))], [by[v] for v in variants], width, label=shape)
    ax_e.axhline(SPEED_TARGET, color="k", ls="--", lw=0.8)
    ax_e.axhline(1.0, color="grey", lw=0.5)
    ax_e.set(xticks=[i + width * (len(shapes) - 1) / 2 for i in range(len(variants))],
             ylabel="speed-up over fp32 lstmkit", title="compressed LSTM layers (dashed: int8 target)")
    ax_e.set_xticklabels(variants, rotation=30, ha="right")
    ax_e.legend()
    for m, h in dict.fromkeys((r["M"], r["H"]) for r in results["gemm_sweep"]):
        rows = [r for r in results["gemm_sweep"] if (r["M"], r["H"]) == (m, h)]
        ax_s.plot([r["sparsity"] for r in rows], [r["speedup"] for r in rows], ".-", label=f"CSR GEMM {m}×{h}")
    rows = results["lstm_sweep"]
    ax_s.plot([r["sparsity"] for r in rows], [r["speedup"] for r in rows], "s-k", label="pruned LSTM layer")
    ax_s.axhline(1.0, color="grey", lw=0.5)
    ax_s.set(xlabel="sparsity", ylabel="speed-up over dense", yscale="log", title="sparse vs dense")
    ax_s.legend(fontsize=8)
    for r in results["lm"]["rows"]:
        ax_l.scatter(r["bytes"] / 2 ** 20, r["valid_loss"])
        ax_l.annotate(r["model"], (r["bytes"] / 2 ** 20, r["valid_loss"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    ax_l.set(xlabel="weights (MiB)", ylabel="validation loss (nats/char)", title="Tiny Shakespeare")
    for ax in (ax_e, ax_s, ax_l):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
