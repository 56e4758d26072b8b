"""The benchmark cases: shapes, variants (dense, projection, packed), and the models and inputs for each."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from lstmkit.bench.flops import lstm_flops

# name -> (T, B, I=H)
SHAPES = {"S": (128, 8, 128), "M": (64, 32, 256), "L": (64, 64, 512), "XL": (32, 64, 1024)}
QUICK_SHAPES = {"Q": (8, 4, 16)}
VARIANTS = ("dense", "proj", "packed")


@dataclass(frozen=True)
class Case:
    shape: str  # a key of SHAPES (or QUICK_SHAPES)
    T: int
    B: int
    H: int  # hidden size; the input size I equals H
    variant: str  # dense; proj (proj_size = H/4); packed (PackedSequence, lengths uniform in [T/2, T])

    @property
    def I(self) -> int:  # noqa: E743
        return self.H

    @property
    def P(self) -> int:
        return self.H // 4 if self.variant == "proj" else 0

    @property
    def name(self) -> str:
        return self.shape if self.variant == "dense" else f"{self.shape}-{self.variant}"

    @property
    def dims(self) -> str:
        return f"T={self.T} B={self.B} I=H={self.H}" + (f" P={self.P}" if self.P else "")


def cases(shape_names: list[str], table: dict[str, tuple[int, int, int]] = SHAPES) -> list[Case]:
    unknown = [s for s in shape_names if s not in table]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; choose from {list(table)}")
    return [Case(s, *table[s], variant=v) for s in shape_names for v in VARIANTS]


def lengths(case: Case, seed: int) -> Tensor | None:
    """Packed case: B sequence lengths drawn uniformly from [T/2, T] with a fixed seed; else None."""
    if case.variant != "packed":
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randint(case.T // 2, case.T + 1, (case.B,), generator=g)  # (B,), on CPU as packing wants


def rows(case: Case, seed: int) -> int:
    """Batch rows summed over steps: T·B, or the sum of the lengths for packed input."""
    lens = lengths(case, seed)
    return case.T * case.B if lens is None else int(lens.sum())


def forward_flops(case: Case, seed: int) -> int:
    return lstm_flops(rows(case, seed), case.I, case.H, case.P)


def models(case: Case, impl: Callable[..., nn.Module], seed: int, device,
           after_load: Callable[[nn.Module], None] | None = None) -> tuple[nn.Module, nn.Module]:
    """(ours, reference): `impl` and torch.nn.LSTM with the same weights, via load_state_dict.

    `after_load(ours)` runs after the weights are copied: a test hook to inject a wrong implementation.
    """
    torch.manual_seed(seed)
    ref = nn.LSTM(case.I, case.H, proj_size=case.P).to(device)
    ours = impl(case.I, case.H, proj_size=case.P).to(device)
    ours.load_state_dict(ref.state_dict())
    if after_load is not None:
        after_load(ours)
    return ours, ref


def inputs(case: Case, seed: int, device) -> Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(case.T, case.B, case.I, generator=g).to(device)  # (T, B, I)


def as_input(x: Tensor, lens: Tensor | None) -> Tensor | PackedSequence:
    """The padded (T, B, I) tensor, or the PackedSequence of its first lens[b] steps per sequence."""
    return x if lens is None else pack_padded_sequence(x, lens, enforce_sorted=False)


def data(out: Tensor | PackedSequence) -> Tensor:
    """The output's values: (T, B, R), or the packed (rows, R)."""
    return out.data if isinstance(out, PackedSequence) else out


def training_step(model: nn.Module, x: Tensor, lens: Tensor | None) -> None:
    """Forward + backward of an MSE loss (against zero) on the output, from fresh gradients.

    Pass x with requires_grad=True to include the input gradient, as for any layer but the first.
    """
    model.zero_grad(set_to_none=True)
    x.grad = None
    out, _ = model(as_input(x, lens))
    data(out).square().mean().backward()


def inference_step(model: nn.Module, x: Tensor, lens: Tensor | None) -> None:
    with torch.no_grad():
        model(as_input(x, lens))
