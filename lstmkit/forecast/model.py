"""The forecaster: windows (L, B, F) -> an input layer -> an lstmkit.LSTM of any structure -> a direct
multi-horizon head giving Q quantiles for each of the h steps at once, (B, h, Q)."""
from __future__ import annotations

import torch
from torch import nn

from lstmkit.config import ModelConfig
from lstmkit.models.structure import build_lstm

EMBED = 16  # input layer width: the LSTM's input size I (divisible by every structure's group and block sizes)


def lstm_config(cfg) -> ModelConfig:
    """The ModelConfig the structure registry builds from (the forecast's own sizes)."""
    return ModelConfig(hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, proj_size=cfg.proj_size,
                       dropout=cfg.dropout, structure=cfg.structure, embedding_dim=EMBED, layer_norm=cfg.layer_norm,
                       cell_zoneout=cfg.cell_zoneout, hidden_zoneout=cfg.hidden_zoneout)


class Forecaster(nn.Module):
    def __init__(self, cfg, features: int, horizon: int, quantiles: int):
        """`cfg`: a ForecastConfig (hidden_size, num_layers, proj_size, dropout, structure); `features` F per
        step, `horizon` h steps ahead, `quantiles` Q levels."""
        super().__init__()
        self.horizon, self.quantiles = horizon, quantiles
        self.embed = nn.Linear(features, EMBED)
        self.lstm = build_lstm(lstm_config(cfg), EMBED)
        self.head = nn.Linear(cfg.proj_size or cfg.hidden_size, horizon * quantiles)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L, B, F = x.shape
        out, _ = self.lstm(torch.tanh(self.embed(x)))  # (L, B, P)
        pred = self.head(out[-1]).view(B, self.horizon, self.quantiles)  # (B, h, Q)
        return pred.sort(dim=-1).values if not self.training else pred  # quantiles never cross in a forecast
