"""Quantize a model's LSTM weights for inference: int8, bf16 or 16-bit fixed point (see lstmkit.maps.quantized).

Each dense weight matrix is replaced by the quantized map of it. A product of maps (Compose: a low-rank pair)
keeps its structure, each factor quantized (a factor shared by two maps stays shared); any other structured or
pruned map is made dense by `to_dense()` first (pruned zeros stay zero). Embeddings, output layers and biases
stay float32. The result is inference-only: its maps raise if autograd reaches them; fine-tune before quantizing.
"""
from __future__ import annotations

from torch import nn

from lstmkit import maps
from lstmkit.compress.targets import lstm_weights, replace_weight
from lstmkit.maps.compose import Compose
from lstmkit.maps.quantized import FORMATS


def _quantized(m: maps.Map, mode: str, options: dict, memo: dict) -> maps.Map:
    if id(m) not in memo:
        if isinstance(m, Compose):
            m.inner, m.outer = (_quantized(f, mode, options, memo) for f in (m.inner, m.outer))
            memo[id(m)] = m
        else:
            memo[id(m)] = FORMATS[mode].from_dense(maps.to_dense(m).detach(), **options)
    return memo[id(m)]


def quantize(model: nn.Module, mode: str, **options) -> nn.Module:
    """In place, every LSTM weight matrix of `model` as `mode` maps (int8, bf16, fixed16); returns `model`.
    `options` go to the map's from_dense (int8: kernel=...; fixed16: frac_bits=...)."""
    if mode not in FORMATS:
        raise ValueError(f"quantization mode must be one of {', '.join(FORMATS)}, got {mode!r}")
    memo: dict = {}
    for lstm, name, m in lstm_weights(model):
        replace_weight(lstm, name, _quantized(m, mode, options, memo))
    return model
