"""Time lstmkit.LSTM against torch.nn.LSTM (or run a study) and write BENCHMARKS.md, JSON and plots.

`lstmkit bench` prints the main table (`--precision bf16`: its bf16 twin, lstmkit/bench/bf16.py; `--precision int8`:
int8 inference against torch.nn.LSTM in bf16 and fp32, lstmkit/bench/int8.py); `--study fusion`
runs the gate-fusion study instead. With `--out DIR`
a study writes DIR/<study>.json and DIR/<study>.png and rewrites its own marked section of BENCHMARKS.md;
a study with a write-up (fusion) also regenerates docs/<study>.md next to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path

import torch

from lstmkit.bench import report
from lstmkit.bench.config import BenchConfig, add_arguments, from_args
from lstmkit.bench.timing import use_cores
from lstmkit.errors import report_errors

# study name -> module with SECTION, run(cfg) -> dict, markdown(results, image) -> str, plot(results, path),
# and optionally document(results, links) -> str for docs/<study>.md
STUDIES = {"engine": "lstmkit.bench.dense", "fusion": "lstmkit.bench.fusion",
           "structures": "lstmkit.bench.structures", "compress": "lstmkit.bench.compress",
           "quality": "lstmkit.bench.quality", "precision": "lstmkit.bench.precision",
           "forecast": "lstmkit.bench.forecast", "layer-norm": "lstmkit.bench.layer_norm"}
# (study, precision) -> the module of a precision other than fp32
PRECISIONS = {("engine", "bf16"): "lstmkit.bench.bf16", ("engine", "int8"): "lstmkit.bench.int8"}


def run_study(cfg: BenchConfig) -> dict:
    """Run one study and write what `cfg` asks for; returns the results (as written to JSON)."""
    if cfg.study not in STUDIES:
        raise SystemExit(f"unknown study {cfg.study!r}; choose from {list(STUDIES)}")
    if cfg.precision != "fp32" and (cfg.study, cfg.precision) not in PRECISIONS:
        raise SystemExit(f"--precision {cfg.precision} runs with the study {[s for s, _ in PRECISIONS]}, "
                         f"not {cfg.study!r}")
    study = importlib.import_module(PRECISIONS.get((cfg.study, cfg.precision), STUDIES[cfg.study]))
    command = cfg.command()
    if cfg.quick:
        cfg = dataclasses.replace(cfg, repeats=1, rounds=1, warmup=1, threads=cfg.threads or 1)  # steady when busy
    threads_before = torch.get_num_threads()
    use_cores(cfg.threads)
    try:
        load_before = report.load_average()
        results = study.run(cfg)
        results["env"] = report.environment(command, cfg.device, load_before)
    finally:
        torch.set_num_threads(threads_before)  # a caller in the same process (a test) keeps its setting

    json_path, png_path, md_path = cfg.json, cfg.plot, None
    if cfg.out:
        out = Path(cfg.out)
        json_path = json_path or out / f"{study.SECTION}.json"
        png_path = png_path or out / f"{study.SECTION}.png"
        md_path = Path(cfg.markdown) if cfg.markdown else out.resolve().parent / "BENCHMARKS.md"
    if json_path:
        report.write_json(json_path, results)
    if png_path:
        Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        study.plot(results, png_path)
    print(study.markdown(results))
    if md_path:
        image = report.link(png_path, md_path) if png_path else None
        report.update_section(md_path, study.SECTION, study.markdown(results, image))
        if hasattr(study, "document"):
            doc_path = md_path.parent / "docs" / f"{study.SECTION}.md"
            links = {"json": report.link(json_path, doc_path), "png": report.link(png_path, doc_path)}
            report.write_text(doc_path, study.document(results, links))
    return results


@report_errors
def main(args: argparse.Namespace) -> int:
    run_study(from_args(args))
    return 0


__all__ = ["add_arguments", "main", "run_study", "BenchConfig", "STUDIES"]
