"""The precision study: `lstmkit train --precision bf16` against fp32 on a plain one-layer 3-minute recipe.

Three `lstmkit train` processes on the same corpus and seed: fp32 for the recipe's time budget (it takes S steps),
bf16 for the same time budget, and bf16 for exactly S steps. The question a user asks: does bf16 lose quality at
the same number of steps (target: validation loss within +0.5 % of fp32's), and what does it buy in the same time?
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from lstmkit.bench import quality, report

SECTION = "precision"
RUNS = Path("runs") / "precision"
SAME_STEPS_TOLERANCE = 0.005  # bf16's validation loss at fp32's step count: at most 0.5 % above fp32's
# The quality study's 3-minute recipe before layer norm: bf16 products run in the native loop of a plain layer. The
# layer-norm loop has float32 products only, so under autocast it computes the rounded operands in float32 and bf16
# buys nothing there (18,200 tokens/s in fp32 against 16,500 in bf16 on that recipe here).
FLAGS = ("--hidden", "512", "--layers", "1", "--bptt", "32", "--batch-size", "32", "--lr", "5e-3")
BUDGET = 180.0


def _train(data: str, flags: list[str], out: Path) -> dict:
    args = ["train", "--data", data, *flags, "--seed", "1337", "--sample-length", "0", "--out", str(out)]
    wall = quality.run_training(args, out, SECTION)
    curve = quality.read_metrics(out)
    last = curve[-1]
    shown = [*args[:-1], os.path.relpath(out)]
    return {"command": "lstmkit " + shlex.join(shown), "valid_loss": last["valid_loss"], "steps": int(last["step"]),
            "tokens": int(last["tokens"]), "train_s": last["elapsed_s"], "wall_s": wall,
            "tokens_per_s": last["tokens"] / last["elapsed_s"], "curve": curve}


def run(cfg) -> dict:
    if not cfg.data or not Path(cfg.data).is_file():
        raise SystemExit(f"the precision study needs --data, a text file such as ../shared/data/tinyshakespeare.txt; "
                         f"given {cfg.data!r}")
    flags = list(quality.QUICK if cfg.quick else FLAGS)
    budget = [] if cfg.quick else ["--time-budget", f"{BUDGET:g}"]
    root = Path(cfg.out).resolve().parent / RUNS if cfg.out else RUNS
    fp32 = _train(cfg.data, [*flags, *budget, "--precision", "fp32"], root / "fp32-time")
    bf16_time = _train(cfg.data, [*flags, *budget, "--precision", "bf16"], root / "bf16-time")
    steps = ["--steps", str(fp32["steps"]), "--eval-interval", str(fp32["steps"])]
    bf16_steps = _train(cfg.data, [*flags, *steps, "--precision", "bf16"], root / "bf16-steps")
    return {"data": cfg.data, "budget_s": BUDGET, "rows": {"fp32": fp32, "bf16, same time": bf16_time,
                                                                  "bf16, same steps": bf16_steps},
            "same_steps_ratio": bf16_steps["valid_loss"] / fp32["valid_loss"],
            "passes": bf16_steps["valid_loss"] <= fp32["valid_loss"] * (1 + SAME_STEPS_TOLERANCE)}


HEADERS = ["run", "command", "valid loss (nats/char)", "vs fp32", "steps", "tokens/s", "training s"]


def markdown(results: dict, image: str | None = None) -> str:
    base = results["rows"]["fp32"]
    rows = [[name, f"`{r['command']}`", f"{r['valid_loss']:.4f}", f"{r['valid_loss'] / base['valid_loss']:.4f}",
             f"{r['steps']:,}", f"{r['tokens_per_s']:,.0f}", f"{r['train_s']:.0f}"]
            for name, r in results["rows"].items()]
    verdict = "pass" if results["passes"] else "FAIL"
    parts = [f"## Precision: `lstmkit train --precision bf16` against fp32 on {Path(results['data']).name}",
             report.provenance(results["env"]),
             f"A plain one-layer {results['budget_s'] / 60:g}-minute recipe (the quality study's before layer norm, "
             "whose loop has no bf16 products), three processes: fp32 for the time "
             "budget, bf16 for the same time, and bf16 for exactly as many steps as fp32 took. bf16 runs the products "
             "under torch.autocast with float32 master weights, gradients, optimizer state and evaluation. Target: "
             f"at the same steps, bf16's validation loss within +{SAME_STEPS_TOLERANCE:.1%} of fp32's: "
             f"{results['same_steps_ratio']:.4f}× ({verdict}).",
             report.table(HEADERS, rows)]
    return "\n\n".join(parts)


def plot(results: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results["rows"].items():
        ax.plot([m["step"] for m in r["curve"]], [m["valid_loss"] for m in r["curve"]], marker="o", ms=3, label=name)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("lstmkit train: fp32 and bf16")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
