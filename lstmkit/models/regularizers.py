"""AWD-LSTM's regularizers (Merity et al. 2018): weight drop and embedding dropout (locked dropout: its own file)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def embedding_dropout(embedding: nn.Embedding, x: Tensor, p: float, training: bool) -> Tensor:
    """embedding(x) with whole rows of the embedding matrix dropped (each token's vector kept with 1 - p, scaled
    by 1/(1 - p)); one mask per call, so a dropped token is dropped at every step it occurs."""
    if not training or p == 0:
        return embedding(x)
    weight = embedding.weight
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)  # (V, 1)
    return F.embedding(x, weight * mask, embedding.padding_idx)


def recurrent_weights(lstm: nn.Module) -> list[str]:
    """The names of W_hh's floating-point parameters in every layer and direction: the dense weight_hh_l{k}, or
    a structure's tensors (weight_hh_l{k}.<name>)."""
    return [name for name, p in lstm.named_parameters()
            if name.split(".")[0].startswith("weight_hh_l") and p.is_floating_point()]


def weight_drop(lstm: nn.Module, p: float, training: bool) -> dict[str, Tensor]:
    """DropConnect on W_hh (AWD-LSTM's weight drop): {name: the dropped tensor} for `recurrent_weights`, drawn
    once per call, to run the LSTM with (torch.func.functional_call); {} in eval or for p = 0. The dropped weight
    is an ordinary tensor, so every engine (the native loop included) takes it as it takes the parameter."""
    if not training or p == 0:
        return {}
    params = dict(lstm.named_parameters())
    return {name: F.dropout(params[name], p, True) for name in recurrent_weights(lstm)}


def run_with(module: nn.Module, tensors: dict[str, Tensor], *args):
    """module(*args), with the named parameters replaced by `tensors` for this call."""
    if not tensors:
        return module(*args)
    return torch.func.functional_call(module, tensors, args)
