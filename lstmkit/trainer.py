"""The model-agnostic training loop: optimizer, learning-rate schedule, truncated BPTT, evaluation, checkpoints.

The trainer sees a `Task` (batches, loss, evaluation) and a model `forward(x, state) -> (output, state)`;
it knows nothing of what the model is made of. Stop rules: the step or time budget is reached, the
loss is not finite (`Diverged`, the last good checkpoint is kept), or Ctrl-C (the step finishes, a
checkpoint is written, the run can be resumed exactly).
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lstmkit.checkpoint import load_weights
from lstmkit.config import TrainConfig
from lstmkit.distributed import Context
from lstmkit.models.task import Task, map_state
from lstmkit.run import RunFolder

EVALUATIONS_PER_BUDGET = 10  # with --eval-interval 0


class Diverged(RuntimeError):
    pass


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[cfg.optimizer]
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over `cfg.warmup` steps, then constant or cosine decay to `min_lr_ratio` at progress 1.
    A pure function of (step, progress), so the schedule needs no saved state of its own."""
    warmup = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.schedule == "constant":
        return warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return warmup * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


class Trainer:
    def __init__(self, task: Task, model: nn.Module, cfg: TrainConfig, ctx: Context,
                 run: RunFolder | None = None, extra_state: dict | None = None):
        self.task, self.cfg, self.ctx, self.run = task, cfg, ctx, run
        self.extra_state = extra_state or {}  # saved in every checkpoint beside the trainer's state
        self.model = model.to(ctx.device)
        self.module = DistributedDataParallel(self.model) if ctx.world_size > 1 else self.model
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.rows = ctx.rows(task.batch_size)
        self.step, self.elapsed, self.tokens = 0, 0.0, 0  # elapsed: training seconds, evaluation excluded
        self.loss_sum, self.loss_steps = 0.0, 0  # training loss since the last evaluation
        self.next_eval_at = cfg.time_budget / EVALUATIONS_PER_BUDGET
        self.history: list[dict] = []  # one row per evaluation
        self.carry = None  # state carried from the previous chunk
        self.saved_step: int | None = None  # step of the last checkpoint written
        self.stop_requested = False

    # -- budget and schedule ------------------------------------------------------------------
    def progress(self) -> float:
        return self.step / self.cfg.steps if self.cfg.steps else self.elapsed / self.cfg.time_budget

    def finished(self) -> bool:
        return self.progress() >= 1.0

    def bar_position(self) -> int:
        return self.step if self.cfg.steps else min(int(self.elapsed), round(self.cfg.time_budget))

    def lr(self) -> float:
        return self.cfg.lr * lr_factor(self.cfg, self.step, self.progress())

    def eval_due(self) -> bool:
        if self.cfg.eval_interval or self.cfg.steps:
            interval = self.cfg.eval_interval or max(1, self.cfg.steps // EVALUATIONS_PER_BUDGET)
            return self.step % interval == 0
        return self.elapsed >= self.next_eval_at

    # -- one step -----------------------------------------------------------------------------
    def train_step(self) -> tuple[float, int]:
        """One optimizer step on this process's rows of the global batch; returns (loss, time steps x rows)."""
        x, y, carry = self.task.batch(self.step, self.rows)
        x, y = x.to(self.ctx.device), y.to(self.ctx.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        with self.autocast():
            output, state = self.module(x, self.carry if carry else None)
            loss = self.task.loss(output, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.optimizer.step()
        # Truncated BPTT: the next chunk starts from this state, but its gradient stops here, so a step costs O(bptt).
        self.carry = map_state(torch.Tensor.detach, state)
        return loss.item(), x.shape[0] * x.shape[1]

    def autocast(self) -> torch.autocast:
        """The training step's arithmetic (--precision): bf16 products under autocast, the weights staying float32."""
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def evaluate(self) -> dict:
        self.model.eval()
        metrics = self.task.evaluate(self.model, max_batches=1 if self.cfg.dry_run else None)
        self.model.train()
        row = {"step": self.step, "tokens": self.tokens, "elapsed_s": round(self.elapsed, 3),
               "tokens_per_s": round(self.tokens / max(self.elapsed, 1e-9), 1), "lr": self.lr(),
               "train_loss": self.loss_sum / max(self.loss_steps, 1), **metrics}
        if not math.isfinite(metrics["valid_loss"]):
            raise Diverged(f"validation loss became {metrics['valid_loss']} at step {self.step}")
        self.loss_sum, self.loss_steps = 0.0, 0
        if not self.cfg.steps and not self.cfg.eval_interval:  # evaluations by the clock: the next one after now
            interval = self.cfg.time_budget / EVALUATIONS_PER_BUDGET
            self.next_eval_at = (math.floor(self.elapsed / interval) + 1) * interval
        self.history.append(row)
        return row

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> str:
        """Train until the budget is spent ('done') or Ctrl-C ('interrupted'); raises Diverged."""
        total, unit = (self.cfg.steps, "step") if self.cfg.steps else (round(self.cfg.time_budget), "s")
        bar = tqdm(total=total, initial=self.bar_position(), unit=unit, disable=not self.ctx.is_main,
                   dynamic_ncols=True)
        with bar, _stop_on_interrupt(self):
            while not self.finished():
                start = time.perf_counter()
                loss, tokens = self.train_step()
                # one collective per step: every process agrees on the loss, the clock and whether to stop
                loss, seconds, stop = self.ctx.sum([loss, time.perf_counter() - start, float(self.stop_requested)])
                loss, seconds = loss / self.ctx.world_size, seconds / self.ctx.world_size
                if not math.isfinite(loss):
                    raise Diverged(f"training loss became {loss} at step {self.step + 1} (lr {self.lr():.3g})")
                self.step += 1
                self.elapsed += seconds
                self.tokens += tokens * self.ctx.world_size
                self.loss_sum += loss
                self.loss_steps += 1
                bar.update(self.bar_position() - bar.n)
                bar.set_postfix_str(f"loss {loss:.3f}, {self.tokens / self.elapsed:,.0f} tok/s", refresh=False)
                if stop:
                    self.save()
                    return "interrupted"
                if self.eval_due() or self.finished():
                    row = self.evaluate()
                    bar.write(f"step {self.step}: train loss {row['train_loss']:.4f}, {self.task.report(row)}")
                    self.save()
        return "done"

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed": self.elapsed, "tokens": self.tokens, "loss_sum": self.loss_sum,
                "loss_steps": self.loss_steps, "next_eval_at": self.next_eval_at, "history": self.history,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "carry": self.ctx.gather_rows(self.carry), "rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(self.ctx.device)} if self.ctx.device.type == "cuda" else {})}

    def load_state_dict(self, state: dict, source: str) -> None:
        load_weights(self.model, state["model"], source)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"{source}: the optimizer state does not fit --optimizer {self.cfg.optimizer} ({e})") \
                from None
        for key in ("step", "elapsed", "tokens", "loss_sum", "loss_steps", "next_eval_at", "history"):
            setattr(self, key, state[key])
        self.carry = map_state(lambda t: t[:, self.rows].to(self.ctx.device), state["carry"])  # (L, B, H) -> own rows
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.ctx.device)
        self.saved_step = self.step

    def save(self) -> None:
        state = {**self.extra_state, "trainer": self.state_dict()}  # every process joins the gather in state_dict
        if self.run:
            self.run.save(state, self.history)
        self.saved_step = self.step


@contextlib.contextmanager
def _stop_on_interrupt(trainer: Trainer):
    """First Ctrl-C: finish the step, save, stop. Second: stop at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
