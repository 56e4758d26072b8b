"""The compress study's model half: a character LSTM on Tiny Shakespeare pruned, quantized and distilled.

A teacher is trained for a fixed number of steps; then (1) 80 % AGP pruning during fine-tuning, next to the dense
model fine-tuned for the same steps (so that the gain of merely training longer is visible), (2) int8, bf16 and
fixed16 quantization of the teacher, (3) a small student trained with and without the teacher for equal steps.
All settings are in SETTINGS (QUICK for the test suite) and recorded in the results.
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from lstmkit.compress import quantize, summary
from lstmkit.compress.command import CompressConfig, finetune
from lstmkit.compress.distill import DistillationTask
from lstmkit.compress.prune import prune
from lstmkit.config import DataConfig, ModelConfig, TrainConfig
from lstmkit.distributed import Context
from lstmkit.models import LanguageModelTask
from lstmkit.trainer import Trainer

# the shared data folder sits beside the repository (as in CI); LSTMKIT_TINY_SHAKESPEARE overrides
DATA = Path(os.environ.get("LSTMKIT_TINY_SHAKESPEARE",
                           Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"))
SETTINGS = {"hidden_size": 256, "embedding_dim": 64, "bptt": 64, "batch_size": 32, "lr": 3e-3, "warmup": 50,
            "teacher_steps": 1500, "finetune_steps": 800, "finetune_lr": 3e-3, "sparsity": 0.8,
            "student_hidden_size": 128, "student_steps": 600, "temperature": 1.0, "alpha": 0.0, "seed": 0}
QUICK = {**SETTINGS, "hidden_size": 32, "embedding_dim": 16, "bptt": 16, "batch_size": 8, "warmup": 2,
         "teacher_steps": 6, "finetune_steps": 4, "student_hidden_size": 16, "student_steps": 4}
TARGETS = {"prune_loss_change": 0.02, "distill_gain": 0.02, "int8_ppl_change": 0.01}


def train(task, model_cfg: ModelConfig, s: dict, steps: int, distill_from=None) -> tuple[torch.nn.Module, float]:
    """A language model trained `steps` steps from seed s["seed"]; returns it (eval mode) and the seconds taken."""
    torch.manual_seed(s["seed"])
    model = task.build_model(model_cfg)
    cfg = TrainConfig(steps=steps, lr=s["lr"], warmup=s["warmup"], eval_interval=steps, seed=s["seed"])
    if distill_from is not None:
        task = DistillationTask(task, distill_from, s["temperature"], s["alpha"])
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        Trainer(task, model, cfg, Context(0, 1, torch.device("cpu"))).fit()
    return model.eval(), time.perf_counter() - start


def run_lm(cfg) -> dict:
    s = QUICK if cfg.quick else SETTINGS
    data = "" if cfg.quick else str(DATA)  # quick: the text shipped with Python
    if data and not DATA.is_file():
        raise FileNotFoundError(f"Tiny Shakespeare not found at {DATA}; set LSTMKIT_TINY_SHAKESPEARE to its path")
    task = LanguageModelTask(DataConfig(data=data, bptt=s["bptt"], batch_size=s["batch_size"]))
    model_cfg = ModelConfig(hidden_size=s["hidden_size"], embedding_dim=s["embedding_dim"])
    seconds = {}
    print(f"teacher: {s['teacher_steps']} steps", file=sys.stderr, flush=True)
    teacher, seconds["teacher"] = train(task, model_cfg, s, s["teacher_steps"])

    print("pruning during fine-tuning, and the dense control", file=sys.stderr, flush=True)
    train_cfg = TrainConfig(seed=s["seed"], warmup=s["warmup"])
    models = {"fp32": teacher}
    for name, options in ((f"pruned {s['sparsity']:.0%} (AGP) + fine-tuned",
                           {"prune": s["sparsity"], "prune_schedule": "agp"}), ("dense fine-tuned (control)", {})):
        model = copy.deepcopy(teacher)
        start = time.perf_counter()
        finetune(task, model, teacher, CompressConfig(finetune_steps=s["finetune_steps"], lr=s["finetune_lr"],
                                                      **options), train_cfg)
        seconds[name], models[name] = time.perf_counter() - start, model
    models[f"pruned {s['sparsity']:.0%} one-shot, no fine-tuning"] = prune(copy.deepcopy(teacher), s["sparsity"])
    for mode in ("int8", "bf16", "fixed16"):
        models[mode] = quantize(copy.deepcopy(teacher), mode)

    print("distillation: the student with and without the teacher", file=sys.stderr, flush=True)
    student_cfg = replace(model_cfg, hidden_size=s["student_hidden_size"])
    students = {}
    for name, source in (("student", None), ("student distilled", teacher)):
        students[name], seconds[name] = train(task, student_cfg, s, s["student_steps"], source)

    print("comparing", file=sys.stderr, flush=True)
    batch = task.batch(0, slice(None)).input  # (T, B)
    rows = summary.measure({**models, **students}, task, batch, 1 if cfg.quick else cfg.repeats, cfg.warmup,
                           2 if cfg.quick else None)
    by = {r["model"]: r for r in rows}
    student, distilled = by["student"]["valid_loss"], by["student distilled"]["valid_loss"]
    results = {"settings": s, "data": data or "pydoc topics", "seconds": seconds, "rows": rows, "targets": TARGETS,
               "distill_gain": 1 - distilled / student}
    results["prune_loss_change"] = by[f"pruned {s['sparsity']:.0%} (AGP) + fine-tuned"]["loss_change"]
    results["int8_ppl_change"] = by["int8"]["ppl_change"]
    return results
