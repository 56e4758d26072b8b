"""Synthetic long-memory tasks: the adding problem and the copy-memory task, generated on the fly.

Both come from Hochreiter & Schmidhuber (1997), in the forms of Le et al. (2015, adding) and
Arjovsky et al. (2016, copy). Each reports its metric next to the score of a model without memory.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit.config import DataConfig, ModelConfig
from lstmkit.models.structure import build_lstm
from lstmkit.models.task import Batch

VALID_SEQUENCES = 1024  # size of the fixed validation set


class SequenceModel(nn.Module):
    """An LSTM with a linear readout at every step, or at the last step only."""

    def __init__(self, input_size: int, output_size: int, cfg: ModelConfig, last_only: bool):
        super().__init__()
        awd = {flag: p for flag, p in (("--weight-drop", cfg.weight_drop),
                                       ("--embedding-dropout", cfg.embedding_dropout),
                                       ("--locked-input-dropout", cfg.locked_input_dropout),
                                       ("--locked-output-dropout", cfg.locked_output_dropout)) if p}
        if awd:
            raise ValueError(f"{', '.join(awd)} regularize the language model (--task lm); the long-memory tasks "
                             f"have no embedding or such options; given {awd}")
        self.lstm = build_lstm(cfg, input_size)
        self.readout = nn.Linear(cfg.proj_size or cfg.hidden_size, output_size)
        self.last_only = last_only

    def forward(self, x: torch.Tensor, state=None):
        y, state = self.lstm(x, state)  # (T, B, P or H)
        if self.last_only:
            y = y[-1]  # (B, P or H)
        return self.readout(y), state  # (B, O) or (T, B, O)


class SyntheticTask:
    """Shared plumbing: batches drawn from a generator seeded by the step, a fixed validation set."""

    name: str
    final_splits = ()
    input_size: int
    output_size: int
    last_only: bool

    def __init__(self, data_cfg: DataConfig, seed: int):
        self.seq_len, self.batch_size, self.seed = data_cfg.seq_len, data_cfg.batch_size, seed
        if self.seq_len < 2:
            raise ValueError(f"--seq-len must be at least 2 for the {type(self).__name__}; given {self.seq_len}")
        self.valid = self.generate(VALID_SEQUENCES, torch.Generator().manual_seed(seed << 32))

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}: T={self.seq_len}, {VALID_SEQUENCES} validation sequences"

    def metadata(self) -> dict:
        return {}

    def build_model(self, cfg: ModelConfig) -> SequenceModel:
        return SequenceModel(self.input_size, self.output_size, cfg, self.last_only)

    def batch(self, step: int, rows: slice) -> Batch:
        x, y = self.generate(self.batch_size, torch.Generator().manual_seed((self.seed << 32) + step + 1))
        return Batch(x[:, rows], y[..., rows], carry=False)  # the batch dimension is the target's last

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int | None = None, split: str = "valid") -> dict[str, float]:
        device = next(model.parameters()).device
        n = VALID_SEQUENCES if max_batches is None else min(VALID_SEQUENCES, max_batches * self.batch_size)
        x, y = self.valid[0][:, :n].to(device), self.valid[1][..., :n].to(device)
        output, _ = model(x)
        return self.metrics(output, y)

    def sample(self, model: nn.Module, length: int, seed: int) -> None:
        return None


class AddingTask(SyntheticTask):
    """Two channels of length T: numbers drawn from U(0, 1), and markers on two of them (one in each
    half). The target is the sum of the two marked numbers; always answering 1 scores the variance
    of that sum, 2/12 = 0.167, so a useful model must remember the marked numbers."""

    name, input_size, output_size, last_only = "adding problem", 2, 1, True
    BASELINE_MSE = 2 / 12  # variance of the sum of two independent U(0, 1)

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        T, half = self.seq_len, self.seq_len // 2
        values = torch.rand(T, n, generator=generator)  # (T, B)
        first = torch.randint(0, half, (n,), generator=generator)  # (B,)
        second = torch.randint(half, T, (n,), generator=generator)  # (B,)
        markers = torch.zeros(T, n)
        batch = torch.arange(n)
        markers[first, batch] = markers[second, batch] = 1.0
        target = values[first, batch] + values[second, batch]  # (B,)
        return torch.stack([values, markers], dim=-1), target  # (T, B, 2), (B,)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.squeeze(-1), target)  # (B,) vs (B,)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return {"valid_loss": self.loss(output, target).item(), "baseline_loss": self.BASELINE_MSE}

    def report(self, metrics: dict[str, float], split: str = "valid") -> str:
        return f"valid MSE {metrics['valid_loss']:.4f} (memoryless baseline {metrics['baseline_loss']:.4f})"


class CopyTask(SyntheticTask):
    """Input: 10 symbols from an alphabet of 8, T-1 blanks, a recall marker, 10 blanks (T+20 steps).
    Target: blanks for T+10 steps, then the 10 symbols. A model without memory outputs blanks and
    then guesses: cross-entropy 10 ln(8) / (T+20), recall accuracy 1/8."""

    SYMBOLS, LENGTH, BLANK, MARKER = 8, 10, 0, 9  # symbols are 1..8
    name, last_only = "copy memory", False
    input_size = output_size = SYMBOLS + 2

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        T, K = self.seq_len, self.LENGTH
        symbols = torch.randint(1, self.SYMBOLS + 1, (K, n), generator=generator)  # (K, B)
        inputs = torch.full((T + 2 * K, n), self.BLANK)
        inputs[:K] = symbols
        inputs[T + K - 1] = self.MARKER
        target = torch.full((T + 2 * K, n), self.BLANK)
        target[T + K:] = symbols
        return F.one_hot(inputs, self.input_size).float(), target  # (T+20, B, 10), (T+20, B)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.flatten(0, 1), target.flatten())  # (T*B, 10) vs (T*B,)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        recall = slice(-self.LENGTH, None)
        accuracy = (output[recall].argmax(-1) == target[recall]).float().mean().item()
        return {"valid_loss": self.loss(output, target).item(), "valid_accuracy": accuracy,
                "baseline_loss": self.LENGTH * math.log(self.SYMBOLS) / (self.seq_len + 2 * self.LENGTH),
                "baseline_accuracy": 1 / self.SYMBOLS}

    def report(self, metrics: dict[str, float], split: str = "valid") -> str:
        return (f"valid loss {metrics['valid_loss']:.4f} (memoryless baseline {metrics['baseline_loss']:.4f}), "
                f"recall accuracy {metrics['valid_accuracy']:.3f} (baseline {metrics['baseline_accuracy']:.3f})")
