"""Models and the tasks they learn: language model (`lm`), adding problem and copy memory (`tasks`)."""
from __future__ import annotations

from lstmkit.config import DataConfig
from lstmkit.models.lm import LanguageModel, LanguageModelTask
from lstmkit.models.task import Batch, Task
from lstmkit.models.tasks import AddingTask, CopyTask, SequenceModel

__all__ = ["AddingTask", "Batch", "CopyTask", "LanguageModel", "LanguageModelTask", "SequenceModel", "Task",
           "build_task"]


def build_task(data_cfg: DataConfig, seed: int, metadata: dict | None = None) -> Task:
    """The task named by `data_cfg.task`; `metadata` is what a saved run's task recorded (its vocabulary)."""
    if data_cfg.task == "lm":
        return LanguageModelTask(data_cfg, metadata)
    return {"adding": AddingTask, "copy": CopyTask}[data_cfg.task](data_cfg, seed)
