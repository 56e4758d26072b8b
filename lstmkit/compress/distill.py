"""Knowledge distillation (Hinton et al. 2015): train a student on a teacher's softened outputs plus the labels.

`DistillationTask` wraps a task for lstmkit's model-agnostic Trainer: each batch's target carries the teacher's
logits (the teacher runs in the batch, carrying its own state across chunks as the student does), and the loss
mixes cross-entropy with the temperature-scaled KL divergence. Evaluation is the wrapped task's, labels only.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmkit.models.task import Batch, Task, map_state


def distillation_loss(logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float = 2.0,
                      alpha: float = 0.5) -> Tensor:
    """alpha · CE(logits, target) + (1 − alpha) · T² · KL(softmax(teacher/T) ‖ softmax(logits/T)).

    logits, teacher_logits (..., V); target (...) class ids. The T² keeps the soft term's gradient on the
    scale of the hard term's as T grows (the softened gradients shrink as 1/T²).
    """
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"expected temperature > 0 and alpha in [0, 1]; given {temperature}, {alpha}")
    V = logits.shape[-1]
    student = F.log_softmax(logits.reshape(-1, V) / temperature, -1)  # (N, V)
    teacher = F.log_softmax(teacher_logits.reshape(-1, V).detach() / temperature, -1)
    soft = F.kl_div(student, teacher, reduction="batchmean", log_target=True)  # mean over the N positions
    hard = F.cross_entropy(logits.reshape(-1, V), target.reshape(-1))
    return alpha * hard + (1 - alpha) * temperature ** 2 * soft


class SoftTarget(NamedTuple):
    target: Tensor  # the task's target, (T, B) token ids
    teacher: Tensor  # the teacher's logits, (T, B, V)

    def to(self, device) -> "SoftTarget":
        return SoftTarget(self.target.to(device), self.teacher.to(device))


class DistillationTask:
    """`task` with the teacher's logits in every training target and the distillation loss (see module doc)."""

    def __init__(self, task: Task, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5):
        distillation_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), temperature,
                          alpha)  # validates the weights now, not at the first step
        self.task, self.teacher = task, teacher.eval()
        self.temperature, self.alpha = temperature, alpha
        self.state = None  # the teacher's carried state

    def __getattr__(self, name: str):  # batch_size, final_splits, evaluate, report, sample, ...: the task's
        return getattr(self.__dict__["task"], name)

    @torch.no_grad()
    def batch(self, step: int, rows: slice) -> Batch:
        x, y, carry = self.task.batch(step, rows)
        device = next(self.teacher.parameters()).device
        logits, state = self.teacher(x.to(device), self.state if carry else None)
        self.state = map_state(Tensor.detach, state)
        return Batch(x, SoftTarget(y, logits), carry)

    def loss(self, output: Tensor, target) -> Tensor:
        if isinstance(target, SoftTarget):
            return distillation_loss(output, target.teacher, target.target, self.temperature, self.alpha)
        return self.task.loss(output, target)
