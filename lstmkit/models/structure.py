"""Registry of LSTM weight structures: the hook through which compressed variants plug into the models.

Each entry builds the recurrent core from a model config and the input size; today only the dense
`lstmkit.LSTM` exists. Structured variants (low-rank, grouped, circulant, ...) register here later,
and every model and command picks them up through `ModelConfig.structure`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

from lstmkit.layer import LSTM

if TYPE_CHECKING:
    from lstmkit.config import ModelConfig


def dense(cfg: ModelConfig, input_size: int) -> nn.Module:
    return LSTM(input_size, cfg.hidden_size, cfg.num_layers,
                dropout=cfg.dropout if cfg.num_layers > 1 else 0.0, proj_size=cfg.proj_size)


STRUCTURES: dict[str, Callable[[ModelConfig, int], nn.Module]] = {"dense": dense}


def build_lstm(cfg: ModelConfig, input_size: int) -> nn.Module:
    """The LSTM (time-major, (h0, c0) state) for `cfg`; its outputs have size P or H."""
    return STRUCTURES[cfg.structure](cfg, input_size)
