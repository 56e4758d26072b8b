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

