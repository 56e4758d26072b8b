"""Counting parameters: each distinct tensor once, however many modules share it."""
from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> int:
    """The number of trainable numbers in `model`: a parameter shared by several modules (the joint low-rank
    gates' W2, tied embeddings) counts once. Structured weights count what they store (LowRank: r·(in + out))."""
    return sum(p.numel() for p in model.parameters())  # parameters() yields each tensor once
