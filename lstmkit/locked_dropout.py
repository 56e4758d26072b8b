"""Locked (variational) dropout (Gal & Ghahramani 2016; AWD-LSTM's): one mask per sequence, the same at every step."""
from __future__ import annotations

import torch
from torch import Tensor


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """x (T, B, F) with one dropout mask per sequence (B, F), the same at every step."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, *x.shape[1:]).bernoulli_(1 - p) / (1 - p)  # (1, B, F)
    return x * mask


def locked_dropout_packed(x: Tensor, batch_sizes: list[int], p: float) -> Tensor:
    """The packed rows x (N, F) of sequences whose step t holds the first batch_sizes[t] of them, with one mask per
    sequence (training only)."""
    mask = x.new_empty(batch_sizes[0], x.shape[1]).bernoulli_(1 - p) / (1 - p)  # (B, F)
    sequence = torch.cat([torch.arange(n, device=x.device) for n in batch_sizes])  # (N,): row -> its sequence
    return x * mask[sequence]
