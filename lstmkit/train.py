"""Train a language model or a long-memory task; writes a run folder (checkpoint, config, metrics, curve, sample).

With no arguments: a character-level LSTM language model on the English text that ships with
Python, for --time-budget seconds. Under `torchrun --nproc_per_node N -m lstmkit train ...` the
global batch is split across N processes (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import fields, replace
from pathlib import Path

import torch

from lstmkit import config, schema
from lstmkit.checkpoint import LATEST, PREVIOUS, checkpoint_path, load_checkpoint
from lstmkit.config import CONFIGS, DataConfig, ModelConfig, TrainConfig
from lstmkit.distributed import setup, teardown
from lstmkit.engine import native
from lstmkit.errors import report_errors
from lstmkit.models import build_task
from lstmkit.run import RunFolder, new_run_path
from lstmkit.runlock import RunLock
from lstmkit.trainer import Diverged, Trainer

INTERRUPTED = 130  # exit code, as for a shell's Ctrl-C
# settings a resumed run may change; the model, its data and the optimizer kind are fixed at the start
RESUMABLE = {f.name for f in fields(TrainConfig)} - {"optimizer", "seed", "out", "resume", "allow_unverified"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for cls in CONFIGS.values():
        config.add_arguments(parser, cls)


def given(cfg) -> dict:
    """The fields of `cfg` that differ from their defaults, i.e. were set on the command line."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if getattr(cfg, f.name) != f.default}


def resume_configs(saved: dict, model_cfg, data_cfg, train_cfg, source: str) -> tuple:
    """The saved run's configs; command-line training settings override, anything else must agree."""
    out = []
    for name, cfg in zip(CONFIGS, (model_cfg, data_cfg, train_cfg)):
        saved_cfg = config.from_dict(CONFIGS[name], saved["config"][name], f"{source} {name} config")
        changes = {k: v for k, v in given(cfg).items()  # the run stays in its folder; this reading is this one's
                   if k not in ("resume", "out", "allow_unverified")}
        for key, value in changes.items():
            if key not in RESUMABLE and value != getattr(saved_cfg, key):
                flag = config.flag_names(next(f for f in fields(cfg) if f.name == key))[0]
                raise ValueError(f"{source} was trained with {flag} {getattr(saved_cfg, key)!r}; given {flag} "
                                 f"{value!r}. Expected the same setting (only training settings can change on resume)")
        out.append(replace(saved_cfg, **{k: v for k, v in changes.items() if k in RESUMABLE}))
    return tuple(out)


def dry_run_configs(data_cfg: DataConfig, train_cfg: TrainConfig, world_size: int) -> tuple:
    """One tiny batch: a row per process, a few time steps, one step, a short sample."""
    data_cfg = replace(data_cfg, batch_size=world_size, bptt=min(data_cfg.bptt, 8), seq_len=min(data_cfg.seq_len, 8))
    return data_cfg, replace(train_cfg, steps=1, eval_interval=0, sample_length=min(train_cfg.sample_length, 20))


def train(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig, saved: dict | None = None,
          lock: RunLock | None = None) -> dict:
    """Run the training described by the configs; returns a summary (status, parameters, last metrics).
    `saved` is the checkpoint of the run being resumed; `lock`, the run folder's lock if the caller holds it
    (otherwise the run folder takes it)."""
    ctx, run = setup(train_cfg.device), None
    try:
        if train_cfg.dry_run:
            data_cfg, train_cfg = dry_run_configs(data_cfg, train_cfg, ctx.world_size)
        if not train_cfg.steps and not train_cfg.time_budget:
            raise ValueError("--steps and --time-budget are both 0; expected a budget: --steps N or --time-budget "
                             "SECONDS")
        torch.manual_seed(train_cfg.seed)
        task = build_task(data_cfg, train_cfg.seed, saved["metadata"] if saved else None)
        if saved:  # the stored weights have the shapes the config gives, before any memory is taken for them
            schema.fits(lambda: task.build_model(model_cfg), saved["trainer"]["model"], train_cfg.resume)
        model = task.build_model(model_cfg)
        native.extension()  # the first use compiles the native engine (cached): do it before the time budget starts
        configs = {"model": dataclasses.asdict(model_cfg), "data": dataclasses.asdict(data_cfg),
                   "train": dataclasses.asdict(train_cfg)}
        if ctx.is_main:
            run = RunFolder(new_run_path(train_cfg.out), train_cfg.tensorboard, lock)
            run.write_json("config.json", configs)
            for key, value in task.metadata().items():
                run.write_json(f"{key}.json", value)
        trainer = Trainer(task, model, train_cfg, ctx, run, {"config": configs, "metadata": task.metadata()})
        if saved:
            trainer.load_state_dict(saved["trainer"], train_cfg.resume)
        log = print if ctx.is_main else (lambda *a, **k: None)
        params = sum(p.numel() for p in model.parameters())
        log(f"run folder {run.path if run else '-'} ({ctx.world_size} process{'es' * (ctx.world_size > 1)}, "
            f"{ctx.device})\ndata: {task.describe()}\nmodel: {params:,} parameters, {model_cfg}")
        summary = {"params": params, "run": str(run.path) if run else None}
        try:
            summary["status"] = trainer.fit()
        except Diverged as e:
            kept = f"the last good checkpoint is kept: step {trainer.saved_step} in {run.checkpoint}" \
                if trainer.saved_step is not None and run else "no checkpoint was written"
            log(f"stopped: {e}; {kept}. Expected a finite loss: try a lower --lr or a --clip value.", file=sys.stderr)
            return {**summary, "status": "diverged"}
        summary.update(trainer.history[-1] if trainer.history else {})
        if summary["status"] == "interrupted":
            log(f"interrupted at step {trainer.step}; continue with: lstmkit train --resume {run.path if run else ''}")
        else:
            summary.update(finish(task, model.eval(), train_cfg, run, log))
        return summary
    finally:
        if run:
            run.close()
        teardown()


def finish(task, model, train_cfg: TrainConfig, run: RunFolder | None, log) -> dict:
    """After training: the held-out splits (e.g. test) once, and a generated sample."""
    results = {}
    for split in task.final_splits:
        results.update(task.evaluate(model, max_batches=1 if train_cfg.dry_run else None, split=split))
        log(task.report(results, split))
    text = task.sample(model, train_cfg.sample_length, train_cfg.seed)
    if text is not None and run:
        run.write_text("sample.txt", text)
        log(f"sample:\n{text}")
    return results


def run_lock(train_cfg: TrainConfig) -> RunLock | None:
    """The lock of the folder this command writes, taken before anything reads or checks it: --resume's folder or
    --out's. None for a torchrun process other than rank 0 (which alone writes, see lstmkit.distributed), and for a
    new runs/<timestamp> folder (the run folder locks it), or a --resume path that does not exist (loading says so)."""
    folder = checkpoint_path(train_cfg.resume).parent if train_cfg.resume else train_cfg.out
    if os.environ.get("RANK", "0") != "0" or not folder or (train_cfg.resume and not Path(train_cfg.resume).exists()):
        return None
    return RunLock(folder).acquire()


@report_errors
def main(args: argparse.Namespace) -> int:
    model_cfg, data_cfg, train_cfg = (config.from_args(cls, args) for cls in CONFIGS.values())
    lock = run_lock(train_cfg)
    try:
        saved = None
        if train_cfg.resume:
            saved = load_checkpoint(train_cfg.resume, train_cfg.allow_unverified)
            schema.check_run(saved, str(checkpoint_path(train_cfg.resume)), resume=True)
            model_cfg, data_cfg, saved_train_cfg = resume_configs(saved, model_cfg, data_cfg, train_cfg,
                                                                  train_cfg.resume)
            train_cfg = replace(saved_train_cfg, resume=train_cfg.resume,
                                out=str(checkpoint_path(train_cfg.resume).parent))
        elif train_cfg.out and any((Path(train_cfg.out) / name).exists() for name in (LATEST, PREVIOUS)):
            raise ValueError(f"{train_cfg.out} already holds a run ({LATEST}); expected a new folder for --out, "
                             f"or --resume {train_cfg.out} to continue it")
        summary = train(model_cfg, data_cfg, train_cfg, saved, lock)
    finally:
        if lock:
            lock.release()
    return {"done": 0, "interrupted": INTERRUPTED, "diverged": 1}[summary["status"]]
