"""Magnitude pruning of LSTM weights: one-shot, or gradual on the AGP schedule (Zhu & Gupta 2017) while fine-tuning.

Pruned weights stay pruned through training and saving because the mask lives in the map (lstmkit.maps.sparse):
it is applied in forward and to the gradients, and it is a buffer of the state dict. The trainer needs no hook.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lstmkit.compress.targets import lstm_weights, replace_weight
from lstmkit.maps.sparse import SparseMap, check_sparsity


def prune(model: nn.Module, sparsity: float, mode: str = "unstructured", block: int = 1) -> nn.Module:
    """Prune every LSTM weight matrix of `model` in place to `sparsity` by magnitude (see `magnitude_mask`).

    A dense weight becomes a SparseMap holding the same Parameter values (create the optimizer afterwards);
    a SparseMap is pruned further (its pruned entries stay pruned). Returns `model`.
    """
    check_sparsity(sparsity)
    for lstm, name, m in lstm_weights(model):
        if isinstance(m, SparseMap):
            m.mode, m.block = mode, block
            m.prune_(sparsity)
        elif isinstance(m, Tensor):
            new = SparseMap.from_dense(m.detach(), sparsity, mode, block)
            new.weight.requires_grad_(m.requires_grad)
            replace_weight(lstm, name, new)
        else:
            raise ValueError(f"pruning works on dense LSTM weights; {name} is a {type(m).__name__} "
                             "(prune before converting to another structure, or leave --prune out)")
    return model


def sparsity(model: nn.Module) -> float:
    """The fraction of zero entries over all LSTM weight matrices of `model` (dense ones count their zeros)."""
    zeros = total = 0
    for _, _, m in lstm_weights(model):
        w = m.to_dense() if isinstance(m, nn.Module) else m
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


def agp_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0, frequency: int = 1) -> float:
    """The AGP schedule: s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(t_end − t₀))³ for t₀ ≤ t ≤ t_end, pruning at
    every `frequency`-th step from t₀ (s_i before t₀, s_f from t_end on). Fast at first, while many weights are
    redundant, then slowly, so that training recovers between the last pruning steps."""
    if step < begin:
        return initial
    if step >= end:
        return final
    t = begin + (step - begin) // frequency * frequency  # the last pruning step
    return final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3


class GradualPruner:
    """Prunes a model's LSTM weights on the AGP schedule while it trains, without the trainer knowing.

    The constructor makes every LSTM weight a SparseMap with a full mask (build the optimizer afterwards).
    A forward pre-hook counts training steps, one per training-mode forward with autograd on (lstmkit's
    Trainer runs one such forward per optimizer step; evaluation runs in eval mode without autograd), and
    prunes before the forward of each step where the schedule's sparsity changes. `update(step)` does the
    same for a given step; `remove()` detaches the hook and leaves every matrix at the final sparsity.
    """

    def __init__(self, model: nn.Module, final: float, begin: int, end: int, frequency: int = 1,
                 mode: str = "unstructured", block: int = 1):
        check_sparsity(final)
        if not 0 <= begin < end or frequency < 1:
            raise ValueError(f"expected 0 <= begin < end and frequency >= 1; given begin={begin}, end={end}, "
                             f"frequency={frequency}")
        self.final, self.begin, self.end, self.frequency = final, begin, end, frequency
        prune(model, 0.0, mode, block)
        self.maps = [m for _, _, m in lstm_weights(model)]
        self.step, self.current = 0, 0.0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args) -> None:
        if module.training and torch.is_grad_enabled():
            self.update(self.step)
            self.step += 1

    def update(self, step: int) -> float:
        s = agp_sparsity(step, self.final, self.begin, self.end, 0.0, self.frequency)
        if s != self.current:
            for m in self.maps:
                m.prune_(s)
            self.current = s
        return s

    def remove(self) -> None:
        self.handle.remove()
        self.update(self.end)
