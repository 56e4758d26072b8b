"""Distillation: the loss's pieces, and a distilled student beating the same student trained on labels alone."""
import math

import pytest
import torch
import torch.nn.functional as F

from lstmkit.compress import DistillationTask, distillation_loss
from lstmkit.config import DataConfig, ModelConfig, TrainConfig
from lstmkit.distributed import Context
from lstmkit.models import LanguageModel, LanguageModelTask
from lstmkit.trainer import Trainer

CHARS = "abcdefgh"  # sorted, so the corpus vocabulary numbers them as the generating model does


def test_loss_pieces():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, 8, generator=gen), torch.randn(4, 3, 8, generator=gen)
    y = torch.randint(0, 8, (4, 3), generator=gen)
    ce = F.cross_entropy(s.view(-1, 8), y.view(-1))
    assert distillation_loss(s, t, y, 2.0, alpha=1.0) == pytest.approx(ce.item())
    p = F.softmax(t / 3, -1)
    kl = (p * (p.log() - F.log_softmax(s / 3, -1))).sum(-1).mean()  # KL(teacher ‖ student) per position
    assert distillation_loss(s, t, y, 3.0, alpha=0.0).item() == pytest.approx(9 * kl.item(), rel=1e-5)
    assert distillation_loss(s, t, y, 3.0, alpha=0.25).item() == pytest.approx(0.25 * ce.item() + 0.75 * 9 * kl.item(),
                                                                               rel=1e-5)
    assert distillation_loss(t, t, y, 2.0, alpha=0.0).abs() < 1e-6
    logits = s.clone().requires_grad_()
    distillation_loss(logits, t, y, 2.0, 0.5).backward()
    assert logits.grad is not None and t.grad is None  # the teacher is a constant
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, t, y, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, t, y, 1.0, alpha=1.5)


@pytest.fixture(scope="module")
def task_and_teacher(tmp_path_factory):
    """Text sampled from a small random LSTM language model, which then serves as the (ideal) teacher."""
    torch.manual_seed(0)
    teacher = LanguageModel(len(CHARS), ModelConfig(hidden_size=16, embedding_dim=8)).eval()
    with torch.no_grad():
        teacher.decoder.weight.mul_(100)  # peaked next-character distributions: a learnable pattern
    ids = teacher.generate(torch.tensor([0]), 6000, generator=torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("distill") / "text.txt"
    path.write_text("".join(CHARS[i] for i in ids.tolist()))
    task = LanguageModelTask(DataConfig(data=str(path), bptt=16, batch_size=8))
    assert task.vocab.itos == list(CHARS)
    return task, teacher


def _train(task) -> float:
    torch.manual_seed(0)
    student = LanguageModel(len(CHARS), ModelConfig(hidden_size=8, embedding_dim=8))
    cfg = TrainConfig(steps=40, lr=1e-2, warmup=4, eval_interval=40, seed=0)
    trainer = Trainer(task, student, cfg, Context(0, 1, torch.device("cpu")))
    trainer.fit()
    return trainer.history[-1]["valid_loss"]


def test_distilled_student_beats_the_student_trained_on_labels(task_and_teacher):
    task, teacher = task_and_teacher
    plain = _train(task)
    distilled = _train(DistillationTask(task, teacher, temperature=2.0, alpha=0.5))
    teacher_loss = task.evaluate(teacher)["valid_loss"]
    assert math.isfinite(plain) and teacher_loss < distilled < plain, (teacher_loss, distilled, plain)


def test_distillation_task_carries_the_teacher_state(task_and_teacher):
    task, teacher = task_and_teacher
    wrapped = DistillationTask(task, teacher)
    assert wrapped.batch_size == task.batch_size and wrapped.final_splits == task.final_splits
    first, second = wrapped.batch(0, slice(None)), wrapped.batch(1, slice(None))
    assert torch.equal(first.input, task.batch(0, slice(None)).input) and second.carry
    with torch.no_grad():
        logits, state = teacher(first.input)
        expected, _ = teacher(second.input, state)
    assert torch.allclose(second.target.teacher, expected)
    assert torch.equal(second.target.target, task.batch(1, slice(None)).target)
