"""docs/fusion.md, generated from the fusion study's results: every number in it is a measured one."""
from __future__ import annotations

from lstmkit.bench import report


def _change(before: float, after: float) -> str:
    """How the time changed from `before` to `after`, in words."""
    r = before / after
    return f"{r:.2f}× faster" if r >= 1.005 else (f"{1 / r:.2f}× slower" if r <= 0.995 else "no faster")


def _step_summary(sizes: list[dict], old: str, new: str) -> str:
    """'H=128: 2.10× faster, H=256: ...; faster at 3 of 4 sizes' for the change from `old` to `new`."""
    pairs = [(s["H"], s["impls"][old], s["impls"][new]) for s in sizes]
    pairs = [(H, a, b) for H, a, b in pairs if a["agrees"] and b["agrees"]]
    if not pairs:
        return "not measured (an implementation disagreed with torch.nn.LSTM)"
    each = ", ".join(f"H = {H}: {_change(a['time_s'], b['time_s'])}" for H, a, b in pairs)
    wins = sum(b["time_s"] < a["time_s"] for _, a, b in pairs)
    return f"{each}; faster at {wins} of {len(pairs)} sizes"


def _mm(s: dict, role: str, backend: str = "torch.mm") -> float:
    return s["gemm"][role][backend]


def _work_section(sizes: list[dict]) -> list[str]:
    rows = [[f"H={s['H']}", f"{s['flops'] / 1e9:.3g}",
             *(f"{s['impls'][k]['counted_flops'] / 1e9:.3g}" for k in "abc"),
             *(str(s["impls"][k]["calls"]) for k in "abc")] for s in sizes]
    same = all(len({s["impls"][k]["counted_flops"] for k in "abc"} | {s["flops"]}) == 1 for s in sizes)
    verdict = ("At every size, the products that (a), (b) and (c) made add up to exactly the formula's count"
               if same else "The counted FLOPs of (a), (b) and (c) DIFFER from each other or from the formula; "
               "the study is broken and its conclusions below should not be trusted")
    s = sizes[0]
    return [
        "## The work is the same",
        f"{verdict}: 2·4H·(I+H) FLOPs per batch row and step (one multiply-add counted as two). "
        f"At H = {s['H']} that is {s['flops'] / 1e9:.3g} GFLOP for the whole sequence of T = {s['T']} steps "
        f"and B = {s['B']} rows. Fusing regroups the same multiply-adds into fewer, larger products, so the "
        "cost of a step stays O(4H(I+H)) multiply-adds per sequence for all of them: fusion does not change "
        "the complexity, only how fast the machine gets through the same arithmetic.",
        report.table(["size", "GFLOP (formula)", "GFLOP (a)", "GFLOP (b)", "GFLOP (c)",
                      "products (a)", "products (b)", "products (c)"], rows),
    ]


def _time_section(sizes: list[dict]) -> list[str]:
    keys = list(sizes[0]["impls"])

    def ms(r):
        return report.fmt_ms(r["time_s"]) if r["agrees"] else "disagrees"
    rows = [[f"H={s['H']}", *(ms(s["impls"][k]) for k in keys)] for s in sizes]
    bullets = [
        f"- One product on [x_t, h_{{t-1}}] instead of eight, (a) → (b): {_step_summary(sizes, 'a', 'b')}.",
        f"- Hoisting the input product out of the loop, (b) → (c): {_step_summary(sizes, 'b', 'c')}.",
        f"- The lstmkit engine against (c), (c) → (d): {_step_summary(sizes, 'c', 'd')}.",
        f"- torch.nn.LSTM (oneDNN's fused RNN kernel) against (c): {_step_summary(sizes, 'c', 'nn.LSTM')}.",
    ]
    return ["## The time is not",
            report.table(["size", *(f"({k}) ms" if k in "abcd" else f"{k} ms" for k in keys)], rows),
            "\n".join(bullets)]


def _why_section(sizes: list[dict]) -> list[str]:
    small, big = sizes[0], sizes[-1]
    T, B = small["T"], small["B"]
    a = small["impls"]["a"]
    per_call_us = a["time_s"] / a["calls"] * 1e6 if a["agrees"] else float("nan")
    gate_us = 2 * B * small["I"] * small["H"] / _mm(small, "per gate, input") / 1e3  # GFLOP/s -> us
    best = max(g[b] for s in sizes for g in s["gemm"].values() for b in g if b != "shape")
    n_rows = [f"H = {s['H']}: {_mm(s, 'per gate, recurrent'):.0f} GFLOP/s with N = H against "
              f"{_mm(s, 'recurrent'):.0f} with N = 4H" for s in sizes]
    wider = sum(_mm(s, "recurrent") > _mm(s, "per gate, recurrent") for s in sizes)
    bigger = sum(_mm(s, "hoisted input") > _mm(s, "recurrent") for s in sizes)
    hoist = [f"H = {s['H']}: {_mm(s, 'hoisted input'):.0f} GFLOP/s "
             f"({100 * _mm(s, 'hoisted input') / best:.0f}% of the best rate measured here) against "
             f"{_mm(s, 'recurrent'):.0f} for the per-step recurrent product" for s in sizes]
    return [
        "## Why fewer, larger products are faster",
        f"**Fewer calls.** Per sequence, (a) makes 8T = {8 * T} product calls, (b) makes T = {T} and (c) "
        f"T + 1 = {T + 1}, each with its Python, dispatch and library set-up cost, plus the concatenation of "
        f"the four gates. At H = {small['H']}, (a) spent {per_call_us:.1f} µs per product call in all, while "
        f"one (B×I)·(I×H) product alone takes about {gate_us:.1f} µs: "
        + ("at this size the overhead around the products, not their arithmetic, is most of the bill."
           if per_call_us > 2 * gate_us else "here the products themselves are most of the bill."),
        "**Larger products.** A GEMM runs faster when it is big enough to fill the vector registers and "
        "caches with reused blocks: fusing the four gates makes the per-step product 4H columns wide instead "
        "of H, and (b) also makes it I+H deep instead of I or H. The same per-step products measured alone "
        "(torch.mm): " + "; ".join(n_rows) + f". The 4H-wide product ran at the higher rate at {wider} of "
        f"{len(sizes)} sizes.",
        f"**Hoisting.** x_t is known for every step before the loop starts, so (c) computes W_ih x_t for all "
        f"T·B = {T * B} rows in one (T·B×I)·(I×4H) product: I/(I+H) = "
        f"{100 * small['I'] / (small['I'] + small['H']):.0f}% of the work leaves the sequential loop and runs "
        f"as one big GEMM with {T}× more rows than a step's B = {B}. Measured alone (torch.mm): "
        + "; ".join(hoist) + f". The one big product ran at the higher rate at {bigger} of {len(sizes)} sizes. "
        f"What stays in the loop is the recurrent product with only B = {B} rows per call: its speed, and "
        "the engine's choice of GEMM backend for it, sets the pace of the sequential half.",
        "**Where the rest goes.** Timing each product shape alone and adding up the calls gives the time "
        "the products themselves need; the remainder of the measured time is call overhead, the "
        "concatenations and the elementwise gate update:",
        report.table(["size", *(f"({k}) products alone / measured" for k in "abc")],
                     [[f"H={s['H']}", *(_share(s["impls"][k]) for k in "abc")] for s in sizes]),
        f"The products' share of the time grows from H = {small['H']} to H = {big['H']} as each call carries "
        "more arithmetic per unit of overhead." if _grows(small, big) else
        f"The products' share of the time does not grow from H = {small['H']} to H = {big['H']} here.",
    ]


def _share(r: dict) -> str:
    """'1.2 / 3.4 ms (35%)': the time of the products alone against the measured time."""
    alone = r.get("products_alone_s")
    if alone is None or not r["agrees"]:
        return ""
    return f"{report.fmt_ms(alone)} / {report.fmt_ms(r['time_s'])} ms ({100 * alone / r['time_s']:.0f}%)"


def _grows(small: dict, big: dict) -> bool:
    """Whether the products-alone share of (a)'s time is larger at the largest size than at the smallest."""
    def share(s):
        r = s["impls"]["a"]
        return (r.get("products_alone_s") or 0) / r["time_s"] if r["agrees"] else 0
    return share(big) > share(small)


def _engine_section(sizes: list[dict], backends: list[str]) -> list[str]:
    rows = [[f"H={s['H']}", s["gemm"]["recurrent"]["shape"], *(f"{_mm(s, 'recurrent', b):.0f}" for b in backends),
             max(backends, key=lambda b: _mm(s, "recurrent", b))] for s in sizes]
    return [
        "## For the engine: the per-step recurrent product",
        "The one product left inside the loop is (B×H)·(H×4H). Its rate with each backend on this machine "
        "(GFLOP/s, measured alone):",
        report.table(["size", "M×K×N", *backends, "faster"], rows),
        "The engine should pick the faster backend by measuring on the machine it runs on, as here.",
    ]


def document(results: dict, links: dict[str, str]) -> str:
    """The Markdown write-up; `links` gives the paths of the study's "json" and "png" relative to the doc."""
    env, sizes = results["env"], results["sizes"]
    ac = [s["impls"][k]["max_rel_err"] for s in sizes for k in "abc"]
    disagree = sorted({f"({k}) at H = {s['H']}" for s in sizes for k in "abcd" if not s["impls"][k]["agrees"]})
    parts = [
        "# Fusing the gate products: what it changes and what it does not",
        f"*Generated by `{env['command']}` on {env['date']} ({env['cpu']}, {env['threads']} threads, "
        f"torch {env['torch']}). Every number comes from [the study's JSON]({links['json']}); do not edit, "
        "rerun the command.*",
        *filter(None, [report.busy_note(env)]),
        "An LSTM step needs the four gate pre-activations W_i·[x_t, h_{t-1}], W_f·…, W_g·…, W_o·… "
        "(plus biases) before its elementwise update. Four ways to get them, all from the weights as "
        "torch.nn.LSTM stores them (weight_ih 4H×I, weight_hh 4H×H, gate order i, f, g, o):",
        "- **(a)** eight products per step: each gate's input and recurrent matrix separately;\n"
        "- **(b)** one product per step: [x_t, h_{t-1}] times the stacked [W_ih, W_hh] (4H × (I+H));\n"
        "- **(c)** the input product for all steps hoisted out of the loop as one (T·B, I)×(I, 4H) product, "
        "then one recurrent product per step;\n"
        "- **(d)** the lstmkit engine (`lstmkit.LSTM`).",
        (f"All of them agree with torch.nn.LSTM: the largest relative error of (a)–(c) is {max(ac):.1g}."
         if not disagree else f"**{', '.join(disagree)} disagreed with torch.nn.LSTM** and went untimed."),
        *_work_section(sizes),
        *_time_section(sizes),
        f"![time and throughput against H]({links['png']})",
        *_why_section(sizes),
        *_engine_section(sizes, results["backends"]),
    ]
    return "\n\n".join(parts) + "\n"
