"""The contract between a task (what is learned, from which data) and the model-agnostic trainer."""
from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch
from torch import nn

from lstmkit.config import ModelConfig


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state):
    """Apply `fn` to each tensor of a carried state: None, a tensor, or a tuple of them such as (h, c)."""
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else fn(state)
    return type(state)(map_state(fn, s) for s in state)


class Batch(NamedTuple):
    input: torch.Tensor  # time-major: (T, B) token ids or (T, B, I) features
    target: torch.Tensor  # whatever `Task.loss` compares the model's output with; batch dimension as in input
    carry: bool  # True: this batch continues the previous one, so the model starts from the carried state


class Task(Protocol):
    """A language model corpus (`models.lm`) or a synthetic long-memory task (`models.tasks`).

    Batches are a pure function of the step number, so a resumed run sees exactly the data an
    uninterrupted one would; `rows` selects this process's share of the global batch.
    """

    batch_size: int  # global batch B
    final_splits: tuple[str, ...]  # held-out splits evaluated once at the end of a run (e.g. 'test')

    def describe(self) -> str: ...  # one line for the log

    def metadata(self) -> dict: ...  # JSON saved with the run and given back on resume (e.g. the vocabulary)

    def build_model(self, cfg: ModelConfig) -> nn.Module: ...  # forward(x, state) -> (output, state)

    def batch(self, step: int, rows: slice) -> Batch: ...

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module, max_batches: int | None = None,
                 split: str = "valid") -> dict[str, float]: ...  # '<split>_loss' and more

    def report(self, metrics: dict[str, float], split: str = "valid") -> str: ...  # one line for the log

    def sample(self, model: nn.Module, length: int, seed: int) -> str | None: ...  # shown at the end of a run
