"""Training one forecaster: AdamW on the pinball loss, mini-batches in a seeded order, early stopping on the
validation windows (the weights of the best validation epoch are kept)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from lstmkit.forecast.model import Forecaster
from lstmkit.forecast.quantile import pinball
from lstmkit.forecast.windows import Batch


@dataclass
class Fitted:
    model: Forecaster  # in eval mode, with the best validation epoch's weights
    history: list[dict]  # per epoch: epoch, train_loss, valid_loss (scaled pinball loss)
    best_epoch: int


def evaluate(model: Forecaster, data: Batch, q: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(pinball(model(data.x), data.y, q))


def fit(model: Forecaster, train: Batch, valid: Batch, q: torch.Tensor, cfg, seed: int, tick=None) -> Fitted:
    """Train `model` on `train` for at most cfg.epochs epochs, stopping after cfg.patience epochs without a
    better loss on `valid`. `tick(epoch, valid_loss)` is called after each epoch (a progress bar)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    B = train.x.shape[1]
    history, best, best_state, best_epoch = [], float("inf"), None, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        for rows in torch.randperm(B, generator=generator).split(cfg.batch_size):
            loss = pinball(model(train.x[:, rows]), train.y[rows], q)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        valid_loss = evaluate(model, valid, q)
        history.append({"epoch": epoch, "train_loss": total / B, "valid_loss": valid_loss})
        if valid_loss < best:
            best, best_state, best_epoch = valid_loss, copy.deepcopy(model.state_dict()), epoch
        if tick:
            tick(epoch, valid_loss)
        if epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    return Fitted(model.eval(), history, best_epoch)
