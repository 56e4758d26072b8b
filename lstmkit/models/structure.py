"""Registry of LSTM weight structures: the hook through which compressed variants plug into the models.

Each entry builds the recurrent core from a model config and the input size: the dense `lstmkit.LSTM` or one
with structured weights (lstmkit.maps); every model and command picks them up through `ModelConfig.structure`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

from lstmkit import maps
from lstmkit.layer import LSTM

if TYPE_CHECKING:
    from lstmkit.config import ModelConfig


def dense(cfg: ModelConfig, input_size: int, **structure) -> nn.Module:
    between = cfg.locked_hidden_dropout or cfg.dropout  # dropout between the layers: locked, or --dropout's
    return LSTM(input_size, cfg.hidden_size, cfg.num_layers, dropout=between if cfg.num_layers > 1 else 0.0,
                locked_dropout=cfg.locked_hidden_dropout > 0, proj_size=cfg.proj_size,
                layer_norm=cfg.layer_norm, cell_zoneout=cfg.cell_zoneout, hidden_zoneout=cfg.hidden_zoneout,
                **structure)


def preset(**specs: Callable[[int], maps.MapSpec]) -> Callable[[ModelConfig, int], nn.Module]:
    """A structure whose specs are made from r = min(H, input size) (e.g. rank r/4), applied to every layer."""
    return lambda cfg, input_size: dense(cfg, input_size, **{k: f(min(cfg.hidden_size, input_size))
                                                             for k, f in specs.items()})


STRUCTURES: dict[str, Callable[[ModelConfig, int], nn.Module]] = {
    "dense": dense,
    "lowrank": preset(input=lambda H: maps.LowRank(rank=max(1, H // 4)),
                      recurrent=lambda H: maps.LowRank(rank=max(1, H // 4))),  # F-LSTM on W_ih and W_hh
    "lowrank-joint": preset(gates=lambda H: maps.LowRank(rank=max(1, H // 4))),  # F-LSTM on [W_ih, W_hh]
    "grouped": preset(input=lambda H: maps.Grouped(groups=4), recurrent=lambda H: maps.Grouped(groups=4)),  # G-LSTM
    "diagonal": preset(recurrent=lambda H: maps.Diagonal()),
    "circulant": preset(input=lambda H: maps.Circulant(block=16), recurrent=lambda H: maps.Circulant(block=16)),
    "coupled": preset(gates=lambda H: maps.Coupled()),  # f = 1 - i
}


def build_lstm(cfg: ModelConfig, input_size: int) -> nn.Module:
    """The LSTM (time-major, (h0, c0) state) for `cfg`; its outputs have size P or H."""
    return STRUCTURES[cfg.structure](cfg, input_size)
