"""The fusion study: the same LSTM forward as eight products per step, one fused product, or a hoisted input
product plus one recurrent product, beside the lstmkit engine and torch.nn.LSTM.

Each implementation takes the weights as torch.nn.LSTM stores them: weight_ih (4H, I), weight_hh (4H, H),
bias_ih and bias_hh (4H,), rows in gate order i, f, g, o; and starts from h_0 = c_0 = 0.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lstmkit.bench import report
from lstmkit.bench.agreement import rel_err
from lstmkit.bench.flops import ProductCounter, lstm_flops
from lstmkit.bench.fusion_doc import document  # noqa: F401  (the study's write-up, docs/fusion.md)
from lstmkit.bench.peak import backends, gemm_gflops, shape_key
from lstmkit.bench.timing import time_interleaved
from lstmkit.cell import lstm_pointwise

SECTION = "fusion"


def _time_loop(gates_at: Callable[[int, Tensor], Tensor], x: Tensor, H: int) -> Tensor:
    """Run the recurrence: gates_at(t, h_{t-1}) gives the pre-activations (B, 4H). Returns h (T, B, H)."""
    T, B, _ = x.shape
    h = c = x.new_zeros(B, H)
    hs = []
    for t in range(T):
        h, c, _ = lstm_pointwise(gates_at(t, h), c)
        hs.append(h)
    return torch.stack(hs)  # (T, B, H)


def separate_products(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """(a) Eight products per step: each gate k has its own W_ik x_t and W_hk h_{t-1}."""
    H = weight_hh.shape[1]
    W_x, W_h = weight_ih.chunk(4), weight_hh.chunk(4)  # 4 x (H, I), 4 x (H, H): gates i, f, g, o
    b = (bias_ih + bias_hh).chunk(4)  # 4 x (H,)

    def gates_at(t, h):
        return torch.cat([x[t] @ W_x[k].t() + h @ W_h[k].t() + b[k] for k in range(4)], dim=1)  # (B, 4H)
    return _time_loop(gates_at, x, H)


def concatenated_product(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor,
                         bias_hh: Tensor) -> Tensor:
    """(b) One product per step: [x_t, h_{t-1}] (B, I+H) times the stacked [W_ih, W_hh] (4H, I+H)."""
    H = weight_hh.shape[1]
    W = torch.cat((weight_ih, weight_hh), dim=1)  # (4H, I+H), built once
    b = bias_ih + bias_hh  # (4H,)

    def gates_at(t, h):
        return torch.addmm(b, torch.cat((x[t], h), dim=1), W.t())  # (B, I+H) x (I+H, 4H) -> (B, 4H)
    return _time_loop(gates_at, x, H)


def hoisted_input(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """(c) The input product for all steps at once, before the loop; one recurrent product per step."""
    T, B, I = x.shape
    H = weight_hh.shape[1]
    P = torch.addmm(bias_ih + bias_hh, x.reshape(T * B, I), weight_ih.t()).view(T, B, 4 * H)  # (T, B, 4H)

    def gates_at(t, h):
        return torch.addmm(P[t], h, weight_hh.t())  # (B, H) x (H, 4H) -> (B, 4H)
    return _time_loop(gates_at, x, H)


# key -> (label, function of (x, weight_ih, weight_hh, bias_ih, bias_hh))
FUSIONS = {"a": ("8 products / step", separate_products),
           "b": ("1 product / step on [x, h]", concatenated_product),
           "c": ("hoisted input + 1 product / step", hoisted_input)}
LABELS = {**{k: v[0] for k, v in FUSIONS.items()}, "d": "lstmkit.LSTM", "nn.LSTM": "torch.nn.LSTM"}


def gemm_shapes(T: int, B: int, I: int, H: int) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of the products (a)-(c) make, by role."""
    return {"per gate, input": (B, I, H), "per gate, recurrent": (B, H, H), "fused step": (B, I + H, 4 * H),
            "hoisted input": (T * B, I, 4 * H), "recurrent": (B, H, 4 * H)}


def _products(products) -> list[dict]:
    return [{"batch": b, "M": M, "K": K, "N": N, "calls": n} for (b, M, K, N), n in sorted(products.items())]


def measure_size(H: int, cfg, impl: Callable[..., nn.Module]) -> dict:
    """Agreement, matrix products, FLOPs and inference time of every implementation at hidden size H."""
    T, B, I = cfg.steps, cfg.batch, H
    torch.manual_seed(cfg.seed)
    ref = nn.LSTM(I, H).to(cfg.device)
    ours = impl(I, H).to(cfg.device)
    ours.load_state_dict(ref.state_dict())
    weights = (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(cfg.seed + 1)).to(cfg.device)  # (T, B, I)
    fns = {k: (lambda f=f: f(x, *weights)) for k, (_, f) in FUSIONS.items()}
    fns["d"] = lambda: ours(x)[0]
    fns["nn.LSTM"] = lambda: ref(x)[0]

    flops = lstm_flops(T * B, I, H)
    impls = {}
    with torch.no_grad():
        expected = fns["nn.LSTM"]()
        for k, fn in fns.items():
            with ProductCounter() as pc:
                err = rel_err(fn(), expected)
            impls[k] = {"label": LABELS[k], "max_rel_err": err, "agrees": err <= cfg.tol, "calls": pc.calls,
                        "counted_flops": pc.flops, "products": _products(pc.products)}
        agreeing = {k: fn for k, fn in fns.items() if impls[k]["agrees"]}
        timing = time_interleaved(agreeing, cfg.repeats, cfg.warmup, cfg.device)
    for k, t in timing.items():
        impls[k].update(time_s=t.median, samples_s=t.samples, gflops=flops / t.median / 1e9)
    gemm = {role: {"shape": shape_key(*s), **{b: gemm_gflops(b, *s, cfg.repeats, cfg.warmup, cfg.device)
                                              for b in backends(cfg.device)}}
            for role, s in gemm_shapes(T, B, I, H).items()}
    rate = {g["shape"]: g["torch.mm"] for g in gemm.values()}  # (a)-(c) call torch.mm / addmm
    for r in impls.values():
        r["products_alone_s"] = _products_alone(r["products"], rate)
    return {"T": T, "B": B, "I": I, "H": H, "flops": flops, "impls": impls, "gemm": gemm}


def _products_alone(products: list[dict], gflops: dict[str, float]) -> float | None:
    """Seconds the products would take at the rates measured for each shape alone; None if one is unmeasured."""
    keys = [shape_key(p["M"], p["K"], p["N"]) for p in products]
    if not products or any(k not in gflops or p["batch"] != 1 for k, p in zip(keys, products)):
        return None
    return sum(p["calls"] * 2 * p["M"] * p["K"] * p["N"] / (gflops[k] * 1e9) for k, p in zip(keys, products))


def run(cfg, impl: Callable[..., nn.Module] | None = None) -> dict:
    if impl is None:
        from lstmkit.layer import LSTM as impl
    if cfg.quick:
        hidden, cfg = [16, 32], dataclasses.replace(cfg, steps=8, batch=4)
    else:
        hidden = [int(h) for h in cfg.hidden.split(",")]
    sizes = []
    for H in hidden:
        print(f"fusion study: H={H}", file=sys.stderr, flush=True)
        sizes.append(measure_size(H, cfg, impl))
    return {"study": SECTION, "repeats": cfg.repeats, "warmup": cfg.warmup, "sizes": sizes,
            "backends": backends(cfg.device)}


def _describe(products: list[dict]) -> str:
    """e.g. '512 × (32×128)·(128×128)'"""
    if not products:
        return "inside one native op"
    return " + ".join(f"{p['calls']} × ({p['M']}×{p['K']})·({p['K']}×{p['N']})"
                      + (f" ×{p['batch']}" if p["batch"] > 1 else "") for p in products)


def markdown(results: dict, image: str | None = None) -> str:
    rows = []
    for s in results["sizes"]:
        base = s["impls"]["a"].get("time_s")
        for k, r in s["impls"].items():
            if not r["agrees"]:
                timing = [f"disagrees (max rel err {r['max_rel_err']:.2g})", "", ""]
            else:
                speedup = f"{base / r['time_s']:.2f}" if base else ""
                timing = [report.fmt_ms(r["time_s"]), f"{r['gflops']:.0f}", speedup]
            rows.append([f"H={s['H']}", f"({k}) {r['label']}" if k in "abcd" else r["label"],
                         _describe(r["products"]), *timing, f"{r['max_rel_err']:.1g}"])
    gemm_rows = [[f"H={s['H']}", role, g["shape"], *(f"{g[b]:.0f}" for b in results["backends"])]
                 for s in results["sizes"] for role, g in s["gemm"].items()]
    s0 = results["sizes"][0]
    parts = [
        "## Fusion: separate, fused and hoisted gate products",
        report.provenance(results["env"]),
        f"Inference (no_grad) forward of one layer, I = H, B = {s0['B']}, T = {s0['T']}, fp32, median of "
        f"{results['repeats']} interleaved runs after {results['warmup']} warm-up. Every "
        "implementation computes the same 2·4H·(I+H) FLOPs per row and step; the matrix products are "
        "counted as they reach the dispatcher. Speed-up is relative to (a). "
        "The write-up is [docs/fusion.md](docs/fusion.md).",
        report.table(["size", "implementation", "matrix products per sequence", "ms", "GFLOP/s",
                      "speed-up vs (a)", "max rel err"], rows),
        "GFLOP/s of each product shape alone (M×K×N):",
        report.table(["size", "product", "M×K×N", *results["backends"]], gemm_rows),
    ]
    if image:
        parts.append(f"![fusion study]({image})")
    return "\n\n".join(parts) + "\n"


def plot(results: dict, path) -> None:
    """Time per sequence and GFLOP/s against H for each implementation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    Hs = [s["H"] for s in sizes]
    fig, (ax_t, ax_g) = plt.subplots(1, 2, figsize=(11, 4))
    for k in sizes[0]["impls"]:
        pts = [(s["H"], s["impls"][k]) for s in sizes if s["impls"][k]["agrees"]]
        label = f"({k}) {LABELS[k]}" if k in "abcd" else LABELS[k]
        ax_t.plot([h for h, _ in pts], [r["time_s"] * 1e3 for _, r in pts], "o-", label=label)
        ax_g.plot([h for h, _ in pts], [r["gflops"] for _, r in pts], "o-", label=label)
    for b in results["backends"]:
        ax_g.plot(Hs, [s["gemm"]["recurrent"][b] for s in sizes], "k--" if b == "oneDNN" else "k:",
                  label=f"recurrent GEMM alone, {b}")
    ax_t.set(xscale="log", yscale="log", xlabel="hidden size H (= I)", ylabel="ms per forward",
             title="time (lower is better)")
    ax_g.set(xscale="log", xlabel="hidden size H (= I)", ylabel="GFLOP/s", title="throughput")
    for ax in (ax_t, ax_g):
        ax.set_xticks(Hs, [str(h) for h in Hs])
        ax.minorticks_off()
    ax_g.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
