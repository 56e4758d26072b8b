"""pack_padded_sequence with the checks torch leaves to a RuntimeError deep inside: lengths in range, sorted (each
error a ValueError and, as torch's, a RuntimeError)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils import rnn

from lstmkit.errors import InputError


def pack_padded_sequence(input: Tensor, lengths: Tensor | list[int], batch_first: bool = False,
                         enforce_sorted: bool = True) -> rnn.PackedSequence:
    """torch.nn.utils.rnn.pack_padded_sequence, after checking that every length is in [1, T] and that
    lengths are non-increasing when enforce_sorted=True. input: (T, B, *) or (B, T, *) with batch_first."""
    if not isinstance(input, Tensor) or input.dim() < 2:
        raise InputError(f"input must be a tensor of shape (T, B, *) or (B, T, *), got "
                         f"{tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__}")
    T, B = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
    lengths_list = (lengths.tolist() if isinstance(lengths, Tensor) else list(lengths))
    if isinstance(lengths, Tensor) and lengths.dim() != 1:
        raise InputError(f"lengths must be 1-D with one entry per sequence ({B}), got shape {tuple(lengths.shape)}")
    if len(lengths_list) != B:
        raise InputError(f"lengths must have one entry per sequence: expected {B}, got {len(lengths_list)}")
    if any(not isinstance(n, int) or isinstance(n, bool) for n in lengths_list):
        raise TypeError(f"lengths must be integers, got {lengths_list}")
    bad = [n for n in lengths_list if not 1 <= n <= T]
    if bad:
        raise InputError(f"every length must be in [1, T={T}], got {bad} in {lengths_list}")
    if enforce_sorted and any(a < b for a, b in zip(lengths_list, lengths_list[1:])):
        raise InputError(f"lengths must be sorted longest first when enforce_sorted=True, got {lengths_list}; "
                         "sort the batch or pass enforce_sorted=False")
    return rnn.pack_padded_sequence(input, torch.as_tensor(lengths_list, dtype=torch.int64), batch_first,
                                    enforce_sorted)
