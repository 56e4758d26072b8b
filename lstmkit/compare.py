"""Train several configurations under the same budget each; writes a Markdown table, a plot and JSON.

Each `--config` is a comma-separated list of settings (`hidden=256,layers=2,lr=0.002`) applied on
top of the other flags; every configuration trains in its own run folder inside the output folder.
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

from lstmkit import config
from lstmkit.checkpoint import atomic_write
from lstmkit.config import CONFIGS, CompareConfig
from lstmkit.errors import report_errors
from lstmkit.run import new_run_path
from lstmkit.runlock import RunLock
from lstmkit.train import train

COLUMNS = (("config", "configuration", "{}"), ("params", "parameters", "{:,}"), ("valid_loss", "valid loss", "{:.4f}"),
           ("tokens_per_s", "tokens/s", "{:,.0f}"), ("step", "steps", "{:,}"), ("tokens", "tokens", "{:,}"))
NOT_COMPARED = ("out", "resume", "tensorboard")  # TrainConfig flags that make no sense here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, CompareConfig)
    for cls in CONFIGS.values():
        config.add_arguments(parser, cls, skip=NOT_COMPARED)


def apply_settings(spec: str, configs: dict) -> dict:
    """`configs` ({'model': ModelConfig, ...}) with the settings of `spec` ('hidden=256,layers=2') applied."""
    changes = {name: {} for name in configs}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--config {spec!r}: expected settings like 'hidden=256,layers=2'; given {item!r}")
        cls, name = config.field_by_name(key)
        if name in NOT_COMPARED:
            raise ValueError(f"--config {spec!r}: {key} cannot differ between configurations")
        changes[next(k for k, c in CONFIGS.items() if c is cls)][name] = config.parse_value(cls, name, value.strip())
    return {name: replace(cfg, **changes[name]) for name, cfg in configs.items()}


def slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", spec.replace(",", "_")).strip("-_") or "base"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path) -> None:
    """Validation loss against parameters and against training throughput."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "tokens_per_s", "training tokens/s")):
        for row in rows:
            ax.scatter(row[key], row["valid_loss"])
            ax.annotate(row["config"], (row[key], row["valid_loss"]), fontsize=8, xytext=(3, 3),
                        textcoords="offset points")
        ax.set(xlabel=label, xscale="log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


@report_errors
def main(args: argparse.Namespace) -> int:
    cfg = config.from_args(CompareConfig, args)
    base = {name: config.from_args(cls, args) for name, cls in CONFIGS.items()}
    plans = [(spec, apply_settings(spec, base)) for spec in cfg.config]  # all parsed before anything trains
    out = new_run_path(cfg.out, prefix="compare")
    with RunLock(out) as lock:  # one comparison per folder; each configuration's run locks its own folder inside
        lock.remove_stale_temp_files()
        return _compare(plans, out)


def _compare(plans: list, out: Path) -> int:
    rows = []
    for i, (spec, configs) in enumerate(plans):
        print(f"== [{i + 1}/{len(plans)}] {spec}")
        configs["train"] = replace(configs["train"], out=str(out / slug(spec)))
        summary = train(configs["model"], configs["data"], configs["train"])
        if summary["status"] == "interrupted":
            break
        if summary["status"] != "done":
            print(f"{spec}: {summary['status']}; left out of the comparison")
            continue
        rows.append({"config": spec, **summary})
    if rows:
        atomic_write(out / "results.json", json.dumps(rows, indent=2) + "\n")
        atomic_write(out / "results.md", markdown_table(rows))
        plot(rows, out / "compare.png")
        print(markdown_table(rows))
    print(f"results in {out}")
    return 0 if len(rows) == len(plans) else 1
