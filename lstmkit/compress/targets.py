"""The matrices compression works on: every W_ih, W_hh and W_hr of every lstmkit.LSTM inside a model."""
from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from lstmkit import maps
from lstmkit.layer import LSTM


def lstm_weights(model: nn.Module) -> Iterator[tuple[LSTM, str, maps.Map]]:
    """(lstm, name, map) for each weight matrix of each lstmkit.LSTM in `model` (biases, peepholes, embeddings and
    output layers are not LSTM weight matrices)."""
    for lstm in (m for m in model.modules() if isinstance(m, LSTM)):
        for names in lstm._weight_names():
            for name in names:
                if not name.startswith("bias"):
                    yield lstm, name, getattr(lstm, name)


def replace_weight(lstm: LSTM, name: str, new: maps.Map) -> None:
    """Put `new` (a LinearMap module, or a dense tensor) in place of the weight `name`, whatever it was."""
    if name in lstm._parameters:
        del lstm._parameters[name]
    elif name in lstm._modules:
        del lstm._modules[name]
    if isinstance(new, nn.Module):
        lstm.add_module(name, new)
    else:
        lstm.register_parameter(name, new if isinstance(new, nn.Parameter) else nn.Parameter(new))


def lstms(model: nn.Module) -> list[tuple[nn.Module, str, LSTM]]:
    """(parent, attribute, lstm) for each lstmkit.LSTM in `model` (the model itself excluded)."""
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if isinstance(child, LSTM)]
