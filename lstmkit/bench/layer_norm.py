"""The layer-norm study: what a training step (forward + backward) of a layer-normalized lstmkit layer costs against a
plain one, on the native loop (lstmkit/csrc/layer_norm.cpp) and on the fused Python loop it replaces.

Issue 15's target: layer norm training on the native loop at most 1.3x a plain layer at T = 64, B = 64, H = 512
(I = H). All in one process, interleaved, after warm-up; each ratio is the median over repeats of the pair's ratio.
"""
from __future__ import annotations

from unittest import mock

import torch

from lstmkit.bench import report
from lstmkit.bench.timing import time_interleaved

SECTION = "layer-norm"
TARGET = 1.3  # LN training on the native loop / plain training
FULL = dict(T=64, B=64, H=512)
QUICK = dict(T=8, B=8, H=64)
# row name -> the LSTM's options, and whether the layer-normalized layer runs the fused Python loop instead
ROWS = {"plain": ({}, False),
        "layer norm (native loop)": (dict(layer_norm=True), False),
        "layer norm + zoneout 0.1 (native loop)": (dict(layer_norm=True, cell_zoneout=0.1, hidden_zoneout=0.1), False),
        "layer norm (fused Python loop)": (dict(layer_norm=True), True)}


def _step(options: dict, python_loop: bool, shape: dict, device: str):
    import lstmkit
    from lstmkit.engine import regularized

    T, B, H = shape["T"], shape["B"], shape["H"]
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(H, H, device=device, **options)
    x = torch.randn(T, B, H, device=device)

    def step():
        with mock.patch.object(regularized, "runs", lambda *args: False) if python_loop else mock.MagicMock():
            out, _ = lstm(x)
            out.sum().backward()
    return step


def run(cfg) -> dict:
    shape = QUICK if cfg.quick else FULL
    fns = {name: _step(options, python, shape, cfg.device) for name, (options, python) in ROWS.items()}
    times = time_interleaved(fns, cfg.repeats, cfg.warmup, cfg.device)
    plain = times["plain"]
    rows = [{"case": name, "median_s": t.median, "samples_s": t.samples, "ratio": t.paired_ratio(plain)}
            for name, t in times.items()]
    ratio = rows[1]["ratio"]
    return {"shape": shape, "rows": rows, "ratio": ratio, "target": TARGET, "quick": cfg.quick,
            "passes": None if cfg.quick else ratio <= TARGET}


HEADERS = ["layer (forward + backward)", "median ms", "× plain"]


def markdown(results: dict, image: str | None = None) -> str:
    s = results["shape"]
    rows = [[r["case"], report.fmt_ms(r["median_s"]), f"{r['ratio']:.2f}"] for r in results["rows"]]
    verdict = "not judged (--quick)" if results["passes"] is None else ("pass" if results["passes"] else "FAIL")
    parts = [f"## Layer norm: training cost against a plain layer (T={s['T']}, B={s['B']}, H=I={s['H']})",
             report.provenance(results["env"]),
             "One lstmkit.LSTM layer, a training step (forward, then backward of the output's sum), each variant "
             "timed in turn in one process after warm-up; × plain is the median over repeats of the back-to-back "
             "pair's ratio. The native loop (lstmkit/csrc/layer_norm.cpp) runs LN_ih, LN_hh, LN_c and zoneout in "
             "its step; the fused Python loop is the path it replaces. Target (issue 15): layer norm on the native "
             f"loop ≤ {results['target']:g}× plain: {results['ratio']:.2f}× ({verdict}).",
             report.table(HEADERS, rows)]
    if image:
        parts.append(f"![layer norm training cost]({image})")
    return "\n\n".join(parts)


def plot(results: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = [r["case"] for r in results["rows"]][::-1]
    ax.barh(names, [r["ratio"] for r in results["rows"]][::-1])
    ax.axvline(results["target"], color="k", ls="--", lw=1, label=f"target {results['target']:g}×")
    ax.set_xlabel("training step time / plain layer's")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
