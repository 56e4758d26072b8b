"""Input validation: every message says what was expected and what was given."""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from lstmkit.autocast import CASTS
from lstmkit.errors import InputError, InputTypeError


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def same_dtype_device(name: str, t: Tensor, ref: Tensor, ref_name: str = "the weights",
                      autocast: torch.dtype | None = None) -> None:
    """t must have ref's dtype, or under autocast (`autocast`: the dtype it computes in) any dtype it casts."""
    if autocast is None and t.dtype != ref.dtype:
        raise InputTypeError(f"{name} has dtype {t.dtype} but {ref_name} have dtype {ref.dtype}; "
                             f"convert one of them (e.g. .to({ref.dtype}))")
    if autocast is not None and t.dtype not in CASTS:
        raise InputTypeError(f"{name} has dtype {t.dtype} but under autocast to {autocast} {ref_name} take one of "
                             f"{', '.join(map(str, CASTS))} (autocast leaves float64 alone); convert it "
                             f"(e.g. .to({ref.dtype}))")
    if t.device != ref.device:
        raise InputError(f"{name} is on device {t.device} but {ref_name} are on {ref.device}; "
                         f"move one of them (e.g. .to('{ref.device}'))")


def input_tensor(x, feature_size: int, weight: Tensor, ranks: tuple[int, ...], layout: str = "",
                 autocast: torch.dtype | None = None) -> None:
    """x must be a floating tensor of one of `ranks` whose last dim is `feature_size`, like `weight` (see
    `same_dtype_device` for `autocast`)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor or PackedSequence, got {type(x).__name__}")
    if x.dim() not in ranks:
        raise InputError(f"input must have rank {' or '.join(map(str, ranks))}{layout}, "
                         f"got rank {x.dim()} with shape {_shape(x)}")
    if x.shape[-1] != feature_size:
        raise InputError(f"input.size(-1) must equal input_size={feature_size}, got {x.shape[-1]} "
                         f"(input shape {_shape(x)})")
    if not x.is_floating_point():
        raise InputTypeError(f"input must be a floating-point tensor like the weights ({weight.dtype}), got {x.dtype}")
    same_dtype_device("input", x, weight, autocast=autocast)


def state_tensor(name: str, s, expected: tuple[int, ...], ref: Tensor, autocast: torch.dtype | None = None) -> Tensor:
    """A state tensor must have exactly the expected shape (nothing is broadcast) and ref's dtype/device (see
    `same_dtype_device` for `autocast`)."""
    if not isinstance(s, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(s).__name__}")
    if tuple(s.shape) != tuple(expected):
        raise InputError(f"expected {name} of shape ({', '.join(map(str, expected))}), got {_shape(s)}")
    same_dtype_device(name, s, ref, "the input and weights", autocast)
    return s


def batch_sizes(bs: Tensor) -> list[int]:
    """A PackedSequence's batch_sizes: a CPU int64 vector, non-increasing and positive."""
    if bs.dim() != 1 or bs.numel() == 0:
        raise InputError(f"PackedSequence.batch_sizes must be a non-empty 1-D tensor, got shape {_shape(bs)}")
    sizes = [int(b) for b in bs.tolist()]
    if sizes[-1] <= 0 or any(a < b for a, b in zip(sizes, sizes[1:])):
        raise InputError(f"PackedSequence.batch_sizes must be positive and non-increasing, got {sizes}")
    return sizes



def packed_indices(sorted_indices, unsorted_indices, B: int, device: torch.device) -> None:
    """A PackedSequence's sorted_indices and unsorted_indices: both None, or 1-D int64 tensors of length B (the
    first batch size) on the data's device, sorted_indices a permutation of 0..B-1 and unsorted_indices its
    inverse."""
    if (sorted_indices is None) != (unsorted_indices is None):
        given = "sorted_indices" if unsorted_indices is None else "unsorted_indices"
        raise InputError(f"PackedSequence has {given} but not the other; expected both (as "
                         "torch.nn.utils.rnn.PackedSequence makes them) or neither")
    if sorted_indices is None:
        return
    for name, t in (("sorted_indices", sorted_indices), ("unsorted_indices", unsorted_indices)):
        if not isinstance(t, Tensor) or t.dtype != torch.int64 or t.dim() != 1 or t.shape[0] != B:
            given = f"{t.dtype} tensor of shape {_shape(t)}" if isinstance(t, Tensor) else type(t).__name__
            raise InputError(f"PackedSequence.{name} must be a 1-D torch.int64 tensor of length {B} (batch_sizes[0]), "
                             f"got {given}")
        if t.device != device:
            raise InputError(f"PackedSequence.{name} is on device {t.device} but its data is on {device}")
    rows = torch.arange(B, device=device)
    if not torch.equal(sorted_indices.sort().values, rows):
        raise InputError(f"PackedSequence.sorted_indices must be a permutation of 0..{B - 1}, got "
                         f"{sorted_indices.tolist()[:20]}")
    if not torch.equal(unsorted_indices[sorted_indices], rows):
        raise InputError("PackedSequence.unsorted_indices must be the inverse permutation of sorted_indices "
                         f"(unsorted_indices[sorted_indices] == 0..{B - 1}), got sorted_indices "
                         f"{sorted_indices.tolist()[:20]} and unsorted_indices {unsorted_indices.tolist()[:20]}")
