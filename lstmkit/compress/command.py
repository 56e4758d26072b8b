"""Compress a trained run: convert, prune, fine-tune (optionally distilled from the original), quantize, compare.

`lstmkit compress RUN_DIR --out DIR --prune 0.8 --finetune-steps 300 --quantize int8` reads RUN_DIR (never writes
it), applies the steps in the order convert (--to), prune, fine-tune, quantize, writes DIR/latest.safetensors
(a compressed checkpoint, see lstmkit.compress.saved), DIR/config.json, and the comparison with the original as
DIR/compress.md (also printed) and DIR/compress.json (printed instead with --json).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from lstmkit import config, schema
from lstmkit.checkpoint import LATEST, atomic_write, checkpoint_path
from lstmkit.compress import saved, summary
from lstmkit.compress.distill import DistillationTask
from lstmkit.compress.prune import GradualPruner
from lstmkit.compress.recipe import apply_step, describe, parse_structure
from lstmkit.config import COUNT, FRACTION, MAX_SIZE, POSITIVE, Range, TrainConfig, option
from lstmkit.distributed import Context
from lstmkit.errors import report_errors
from lstmkit.maps.quantized import FORMATS
from lstmkit.maps.sparse import MODES, check_sparsity
from lstmkit.models import build_task
from lstmkit.runlock import LOCK, RunLock
from lstmkit.train import dry_run_configs
from lstmkit.trainer import Trainer

AGP_END = 0.75  # --prune-schedule agp reaches the final sparsity at this fraction of the fine-tuning steps
AGP_PRUNINGS = 20  # ... in this many pruning steps


@dataclass
class CompressConfig(config.Checked):
    """What `lstmkit compress` does to a run, and how it compares the result with the original."""

    out: str = option("", "output folder for the compressed checkpoint and the comparison (not inside RUN_DIR)")
    to: str = option("", "convert to a structure first, NAME[:ARG]: lowrank:RANK, grouped:GROUPS, "
                         "circulant:BLOCK, diagonal (recurrent only); empty: keep the weights dense")
    prune: float = option(0.0, "fraction of LSTM weights to prune by magnitude; 0: no pruning",
                          range=Range(0, 1, high_open=True))
    prune_mode: str = option("unstructured", "unstructured, or balanced: every block of --prune-block rows "
                                             "keeps the same number of weights (ESE)", choices=MODES)
    prune_block: int = option(1, "balanced pruning: rows per block", range=Range(1, MAX_SIZE))
    prune_schedule: str = option("oneshot", "prune at once before fine-tuning, or gradually during it "
                                            "(AGP cubic schedule, needs --finetune-steps)", choices=("oneshot", "agp"))
    finetune_steps: int = option(0, "optimizer steps of fine-tuning after converting/pruning; 0: none",
                                 range=COUNT)
    lr: float = option(3e-3, "fine-tuning peak learning rate (cosine schedule)", range=POSITIVE)
    distill: bool = option(False, "fine-tune on the original model's soft targets (knowledge distillation)")
    temperature: float = option(1.0, "distillation temperature T (the soft loss is scaled by T²)",
                                 range=Range(0, 100, low_open=True))
    alpha: float = option(0.0, "distillation: weight of the cross-entropy on the labels, 1 - alpha on the soft "
                               "loss (0: match the original's distribution, best in `lstmkit bench --study compress`)",
                          range=FRACTION)
    quantize: str = option("", "quantize the LSTM weights last for inference: int8, bf16 or fixed16 (Q4.12); "
                               "empty: keep float32", choices=("", *FORMATS))
    eval_batches: int = option(0, "validation batches for the loss comparison; 0: the whole split", range=COUNT)
    repeats: int = option(5, "timed inference runs per model (median reported)", range=Range(1, 1000))
    json: bool = option(False, "print the comparison as JSON instead of Markdown")
    allow_unverified: bool = option(False, "read a version-1 checkpoint, which has no checksum (damage or tampering "
                                           "goes unseen)")
    dry_run: bool = option(False, "tiny batches, one fine-tuning step, one validation batch: a smoke test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="run folder (its latest checkpoint) or checkpoint file")
    config.add_arguments(parser, CompressConfig)


def check(cfg: CompressConfig, run: str) -> Path:
    """Every flag checked before anything is loaded; returns the output folder."""
    if not cfg.out:
        raise ValueError("expected --out DIR, the folder for the compressed checkpoint")
    check_sparsity(cfg.prune)
    if cfg.to:
        try:
            parse_structure(cfg.to)
        except ValueError as e:
            raise ValueError(f"--to: {e}") from None
    if not (cfg.to or cfg.prune or cfg.quantize or cfg.finetune_steps):
        raise ValueError("--to, --prune, --finetune-steps and --quantize are all unset: nothing to do; expected at "
                         "least one of them")
    if cfg.distill and not cfg.finetune_steps:
        raise ValueError("--distill trains the compressed model on the original's outputs; expected "
                         "--finetune-steps N > 0")
    if cfg.prune and cfg.prune_schedule == "agp" and not cfg.finetune_steps:
        raise ValueError("--prune-schedule agp prunes during fine-tuning; expected --finetune-steps N > 0")
    source = checkpoint_path(run)
    run_dir, out = (source.parent if source.is_file() else source).resolve(), Path(cfg.out).resolve()
    if out == run_dir or run_dir in out.parents:
        raise ValueError(f"--out {cfg.out} is inside the input run folder {run_dir}; expected a folder elsewhere "
                         "(the input is never modified)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {cfg.out} is a file; expected a new or empty folder for --out")
    return out


def check_empty(out: Path) -> None:
    """Under --out's lock, so no other writer can fill it after the check; the lock's own file aside."""
    if any(entry.name != LOCK for entry in out.iterdir()):
        raise ValueError(f"--out {out} is not empty; expected a new or empty folder for --out (nothing in it is "
                         "overwritten)")


def finetune(task, student: torch.nn.Module, teacher: torch.nn.Module, cfg: CompressConfig,
             train_cfg: TrainConfig) -> None:
    """Fine-tune `student` in place for cfg.finetune_steps with lstmkit's Trainer, distilled or not, pruning on
    the AGP schedule if asked."""
    steps = train_cfg.steps if cfg.dry_run else cfg.finetune_steps
    pruner = None
    if cfg.prune and cfg.prune_schedule == "agp":
        end = max(1, int(AGP_END * steps))
        pruner = GradualPruner(student, cfg.prune, 0, end, max(1, end // AGP_PRUNINGS), cfg.prune_mode,
                               cfg.prune_block)
    train_cfg = dataclasses.replace(train_cfg, steps=steps, lr=cfg.lr, warmup=min(train_cfg.warmup, steps // 10),
                                    eval_interval=steps, out="", resume="", tensorboard=False)
    if cfg.distill:
        task = DistillationTask(task, teacher, cfg.temperature, cfg.alpha)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's log; stdout is for the comparison (--json)
        Trainer(task, student.train(), train_cfg, Context(0, 1, torch.device("cpu"))).fit()
    if pruner:
        pruner.remove()
    student.eval()


@report_errors
def main(args: argparse.Namespace) -> int:
    cfg = config.from_args(CompressConfig, args)
    out = check(cfg, args.run)
    with RunLock(out):  # one writer per folder, for the whole command; FolderBusy names the holder
        check_empty(out)
        return compress(cfg, args.run, out)


def compress(cfg: CompressConfig, run: str, out: Path) -> int:
    source = str(checkpoint_path(run))
    state, recipe = saved.read(run, cfg.allow_unverified)
    configs = state["config"]
    checked = schema.configs(state, source)  # checked in saved.read
    model_cfg, data_cfg, train_cfg = checked["model"], checked["data"], checked["train"]
    if cfg.dry_run:
        data_cfg, train_cfg = dry_run_configs(data_cfg, train_cfg, 1)
    torch.manual_seed(train_cfg.seed)
    task = build_task(data_cfg, train_cfg.seed, state.get("metadata"))
    if cfg.distill and data_cfg.task != "lm":
        raise ValueError(f"--distill needs a language model (soft targets over tokens); {source} is task "
                         f"{data_cfg.task!r}")
    if any(step.get("op") == "quantize" for step in recipe) and (cfg.to or cfg.prune or cfg.finetune_steps):
        raise ValueError(f"{source} is quantized (inference-only): only --quantize applies to it; expected the "
                         "run it was compressed from for --to, --prune or --finetune-steps")
    if not recipe:  # the stored weights fit the config, checked before the model takes memory
        schema.fits(lambda: task.build_model(model_cfg), state["trainer"]["model"], source)
    original = saved.load_into(task.build_model(model_cfg), state, recipe, source).eval()

    student, steps = copy.deepcopy(original), []
    if cfg.to:
        steps.append({"op": "convert", "to": cfg.to})
        apply_step(student, steps[-1])
    if cfg.prune:
        steps.append({"op": "prune", "sparsity": cfg.prune, "mode": cfg.prune_mode, "block": cfg.prune_block})
        if cfg.prune_schedule == "oneshot":
            apply_step(student, steps[-1])
    if cfg.finetune_steps:
        finetune(task, student, original, cfg, train_cfg)
    if cfg.quantize:
        steps.append({"op": "quantize", "mode": cfg.quantize})
        apply_step(student, steps[-1])

    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "json")}
    saved.save_compressed(out / LATEST, student, configs, state.get("metadata", {}), recipe + steps, source,
                          settings=settings)
    atomic_write(out / "config.json", json.dumps(configs, indent=2) + "\n")
    x = task.batch(0, slice(None)).input  # one training batch, (T, B): the speed comparison's input
    rows = summary.measure({"original": original, f"compressed ({describe(steps)})": student}, task, x,
                           1 if cfg.dry_run else cfg.repeats, 0 if cfg.dry_run else 1,
                           1 if cfg.dry_run else (cfg.eval_batches or None))
    files = {"input": checkpoint_path(run).stat().st_size, "output": (out / LATEST).stat().st_size}
    result = {"source": source, "out": str(out), "recipe": recipe + steps, "settings": settings, "rows": rows,
              "checkpoint_bytes": files}
    text = summary.markdown(rows) + (f"\nCheckpoint files: {files['input']:,} bytes in (weights, optimizer state and "
                                     f"more), {files['output']:,} bytes out.\n")
    atomic_write(out / "compress.json", json.dumps(result, indent=2) + "\n")
    atomic_write(out / "compress.md", f"# Compression of {source}\n\nRecipe: {describe(recipe + steps)}.\n\n"
                                      f"{text}")
    print(json.dumps(result, indent=2) if cfg.json else text)
    print(f"compressed checkpoint: {out / LATEST}", file=sys.stderr)
    return 0
