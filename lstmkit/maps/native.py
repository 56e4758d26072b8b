"""A recurrent map's native form: how lstmkit's C++ time loop runs a layer's W_hh (and W_hr), if it can.

Each map answers `native_recurrent(weight_hr)` (LinearMap's default: None, the loop can't), so the engine never
asks a map what class it is; a new structure the loop learns adds a kind here, a method on its map and a policy
in lstmkit/csrc.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

# the kinds the native loop runs, as lstmkit::lstm_forward's `kind` names them
KINDS = ("dense", "low-rank", "diagonal", "grouped")
GROUP_UNITS = 16  # a grouped W_hh runs natively when each group's width is a multiple of the widest vector


@dataclass(frozen=True)
class NativeRecurrent:
    """The operands of the loop's recurrent product: W_hh in the loop's form, W_hr, and its kind.

    dense: weight_hh (4H, P) and weight_hr (P, H) or None, as torch.nn.LSTM has them.
    low-rank: W_hh = U V run as an LSTMP whose projection only feeds the recurrence: weight_hh = U (4H, r),
      weight_hr = V (r, H); the loop's state is r_t = V h_t (from V h_0), and its output is h_t, not r_t.
    diagonal: weight_hh the (4, H) diagonals u_q of a_q += u_q ⊙ h_{t-1}; no projection.
    grouped: weight_hh the (4H, H / groups) rows of a block-diagonal W_hh, row q·H + u holding unit u's gate q on
      its own group of h_{t-1}; no projection.
    The tensors come through autograd from the map's parameters, so the loop's gradients reach them.
    int8 (inference only): a dense kind whose weight_hh (and weight_hr) are int8 with per-row scales, W ≈ diag(s) q
      (lstmkit/maps/quantized.py Int8Map), run by the native int8 loop (lstmkit/engine/ops_int8.py).
    """

    kind: str
    weight_hh: Tensor
    weight_hr: Tensor | None = None
    groups: int = 1
    scale_hh: Tensor | None = None  # int8 weight_hh's per-row scales (4H,), or None: not int8
    scale_hr: Tensor | None = None  # int8 weight_hr's (P,)

    @property
    def int8(self) -> bool:
        return self.scale_hh is not None

    @property
    def internal_projection(self) -> bool:
        """Whether W_hr is the loop's own (low-rank), not the layer's: the output is then h_t (kept by the loop)."""
        return self.kind == "low-rank"

    def initial_state(self, h0: Tensor) -> Tensor:
        """The loop's h_0: r_0 = V h_0 (B, r) for a low-rank W_hh, through autograd; else h_0 itself."""
        return h0 @ self.weight_hr.t() if self.internal_projection else h0
