"""The layer under `torch.onnx.export`: one ONNX `LSTM` node per layer and direction, T and B left symbolic.

The engine contract (see lstmkit/engine/__init__.py), emitted as ONNX instead of run: a padded batch becomes
X (T, B, I) for ONNX's LSTM operator, whose gate order is i, o, f, c (lstmkit's is i, f, g, o) and whose peephole
order is i, o, f (lstmkit's w_ci, w_cf, w_co), so W, R, B and P are reordered in the graph. A structured map is
exported as its dense equivalent, `maps.to_dense(w)`, computed in the graph from the map's own parameters: the
same function, not a structure-aware graph (a quantized map, which also rounds its input, is refused). ONNX's LSTM
has no projection: a layer with W_hr (proj_size > 0) runs lstmkit's own step in a `torch.ops.higher_order.scan`,
which the exporter writes as an ONNX `Scan`. Refused with a clear error: the legacy TorchScript exporter
(`dynamo=False`) and PackedSequence input.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch._higher_order_ops.scan import scan

from lstmkit import maps
from lstmkit.cell import lstm_pointwise
from lstmkit.maps import Map

ONNX_GATES = [0, 3, 1, 2]  # ONNX's i, o, f, c as lstmkit's gate blocks i, f, g, o
ONNX_PEEPHOLES = [0, 2, 1]  # ONNX's P = [p_i, p_o, p_f] as rows of lstmkit's (w_ci, w_cf, w_co)


def gate_rows(w: Tensor) -> Tensor:
    """(4H, ...) in lstmkit's gate order -> (4H, ...) in ONNX's i, o, f, c."""
    return w.unflatten(0, (4, -1))[ONNX_GATES].flatten(0, 1)


def dense(w: Map) -> Tensor:
    """(out, in): the matrix of a map whose forward is exactly its dense product, in the graph."""
    if not isinstance(w, Tensor) and not w.dense_is_exact:
        raise NotImplementedError(f"ONNX export of {type(w).__name__} is not supported: it rounds its input at run "
                                  "time, which the exported dense graph would not; export the model before quantizing")
    return maps.to_dense(w)


def refuse_packed_export(packed: bool = True) -> None:
    """Under ONNX export, a PackedSequence's batch_sizes are data-dependent: refuse it by name."""
    if packed and torch.onnx.is_in_onnx_export():
        raise NotImplementedError("ONNX export of a PackedSequence input is not supported: export a padded "
                                  "(T, B, I) batch, with T and B dynamic (dynamic_shapes=)")


def refuse_legacy_exporter() -> None:
    """The TorchScript exporter (`dynamo=False`) traces the engine's Python loop with T and B frozen and cannot run
    the symbolic ops below: refuse it rather than write a graph that is wrong at other shapes."""
    if torch.jit.is_tracing():
        raise RuntimeError("lstmkit.LSTM exports with the default ONNX exporter, torch.onnx.export(model, args, "
                           "dynamo=True, dynamic_shapes=...); the legacy TorchScript exporter (dynamo=False) is not "
                           "supported")


def onnx_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih: Map, weight_hh: Map,
               bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr: Map | None = None,
               reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The engine contract under ONNX export: x (N, I) -> out (N, P), h_n (B, P), c_n (B, H)."""
    if not torch.onnx.is_in_onnx_export():  # its ONNX node has no values outside an export
        raise RuntimeError("onnx_layer only writes a graph under torch.onnx.export; run impl='auto' otherwise")
    refuse_legacy_exporter()
    refuse_packed_export(batch_sizes is not None and any(n != h0.shape[0] for n in batch_sizes))  # [B] * T: padded
    B, H = c0.shape
    x = x.view(-1, B, x.shape[1])  # (T, B, I)
    w_ih, w_hh = dense(weight_ih), dense(weight_hh)  # (4H, I), (4H, P): computed in the graph
    if weight_hr is not None:
        out, h_n, c_n = scan_layer(x, h0, c0, w_ih, w_hh, bias, peephole, dense(weight_hr), reverse)
    else:
        out, h_n, c_n = lstm_node(x, h0, c0, w_ih, w_hh, bias, peephole, reverse)
    return out.flatten(0, 1), h_n, c_n  # (N, P), (B, P), (B, H)


def lstm_node(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor | None,
              peephole: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One ONNX LSTM node: x (T, B, I) -> Y (T, B, H), Y_h (B, H), Y_c (B, H)."""
    T, B, _ = x.shape
    H = c0.shape[1]
    W, R = gate_rows(w_ih).unsqueeze(0), gate_rows(w_hh).unsqueeze(0)  # (1, 4H, I), (1, 4H, H)
    biases = None  # ONNX's default: zeros
    if bias is not None:  # (1, 8H): [W_b, R_b], lstmkit's bias being b_ih + b_hh
        biases = torch.cat((gate_rows(bias), torch.zeros_like(bias))).unsqueeze(0)
    P = peephole[ONNX_PEEPHOLES].reshape(1, 3 * H) if peephole is not None else None  # (1, 3H)
    Y, Y_h, Y_c = torch.onnx.ops.symbolic_multi_out(
        "LSTM", [x, W, R, biases, None, h0.unsqueeze(0), c0.unsqueeze(0), P],
        {"hidden_size": H, "direction": "reverse" if reverse else "forward"},
        dtypes=[x.dtype] * 3, shapes=[[T, 1, B, H], [1, B, H], [1, B, H]])
    return Y.squeeze(1), Y_h.squeeze(0), Y_c.squeeze(0)


def scan_layer(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor | None,
               peephole: Tensor | None, w_hr: Tensor, reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    """An LSTMP layer as a scan over time: x (T, B, I) -> r (T, B, P), r_n (B, P), c_n (B, H)."""
    gates_x = x @ w_ih.t()  # (T, B, 4H): the input half of every step in one product
    if bias is not None:
        gates_x = gates_x + bias

    def step(carry, g_x):
        r, c = carry
        h, c, _ = lstm_pointwise(g_x + r @ w_hh.t(), c, peephole)  # (B, H)
        r = h @ w_hr.t()  # (B, P): r_t = W_hr h_t
        return (r, c), r.clone()

    (r_n, c_n), out = scan(step, (h0, c0), gates_x, reverse=reverse)
    return out, r_n, c_n
