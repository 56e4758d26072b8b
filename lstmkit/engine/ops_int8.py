"""The native int8 loop as a PyTorch operator: lstmkit::lstm_forward_int8 (inference only, torch.library).

lstm_forward_int8(x, weight_ih, scale_ih, bias, h0, c0, weight_hh, scale_hh, peephole, weight_hr, scale_hr, *,
batch_sizes, reverse, keep_h) -> (out (N, P), h_n (B, P), c_n (B, H), h_seq (N, H)):
  the weights int8 with their per-row float32 scales as Int8Map stores them (W ≈ diag(scale) q); x (N, I) with
  weight_ih, or the input product already done, x (N, 4H), with weight_ih None; everything else float32. Each
  product quantizes its input rows per row (symmetric, max|x_b| / 127, lstmkit/maps/int8.py's int_mm format),
  sums exactly in int32 and scales back in float32; the cell and c_t in float32 (lstmkit/csrc/int8.h). h_seq
  (every h_t before the projection) only with `keep_h` and a projection, else empty. No autograd: the quantized
  maps are inference-only, and the engine sends a call that needs a gradient elsewhere (lstmkit/engine/native.py).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.engine.build import extension
from lstmkit.engine.ops import _contiguous, _or_empty, _sizes


def forward_int8_kernel(x: Tensor, weight_ih: Tensor | None, scale_ih: Tensor | None, bias: Tensor | None,
                        h0: Tensor, c0: Tensor, weight_hh: Tensor, scale_hh: Tensor, peephole: Tensor | None,
                        weight_hr: Tensor | None, scale_hr: Tensor | None, *, batch_sizes: list[int] | None,
                        reverse: bool, keep_h: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    ext = extension()
    loop = [_contiguous(t) for t in (x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr)]
    options = ext.LoopOptions(batch_sizes=_sizes(batch_sizes, x, h0), reverse=reverse, training=False,
                              keep_h=keep_h, diagonal=False, groups=1, int8=True)
    scales = ext.Int8Scales(weight_ih=_contiguous(scale_ih), weight_hh=_contiguous(scale_hh),
                            weight_hr=_contiguous(scale_hr))
    out, h_n, c_n, _, _, h_seq = ext.forward(*loop, options, scales)
    return out, h_n, c_n, _or_empty(h_seq, x)


# the op's CPU kernel, which an eager call may run directly (lstmkit/engine/dispatch.py)
lstm_forward_int8 = torch.library.custom_op("lstmkit::lstm_forward_int8", mutates_args=(),
                                            device_types="cpu")(forward_int8_kernel)


@lstm_forward_int8.register_fake
def _(x, weight_ih, scale_ih, bias, h0, c0, weight_hh, scale_hh, peephole, weight_hr, scale_hr, *, batch_sizes,
      reverse, keep_h):
    N, (B, P), H = x.shape[0], h0.shape, c0.shape[1]
    h_seq = x.new_empty(N, H) if keep_h and weight_hr is not None else x.new_empty(0)
    return x.new_empty(N, P), x.new_empty(B, P), x.new_empty(B, H), h_seq
