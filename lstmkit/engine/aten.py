"""torch's own LSTM kernel (ATen's `lstm`: cuDNN on CUDA) for a whole lstmkit.LSTM of dense layers.

torch.nn.LSTM.forward is one call, `torch._VF.lstm(input, hx, flat_weights, ...)`, over all layers and directions,
with the weights in one list in torch's order (`_flat_weights`: per layer and direction w_ih, w_hh, b_ih, b_hh,
w_hr). lstmkit's dense parameters have the same names, shapes and layout, so the same call runs them: on CUDA it
is cuDNN's kernel, reading the weights from one flat buffer (`flatten`) with no copy per call. `runs_aten` decides
when: every weight a plain tensor and no peepholes (an output layer is applied after), and either the tensors are
CUDA under impl="auto", impl="aten" (any device), or torch.jit.trace is recording (the trace then holds one
aten::lstm, correct for every T and B). Everything else keeps lstmkit's per-layer engine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, _VF, nn
from torch.nn.utils.rnn import PackedSequence

from lstmkit import checks, maps


@dataclass(frozen=True)
class Layers:
    """What the dispatch needs to know of a module's layers."""
    device_type: str  # where the weights are: "cpu", "cuda", ...
    blockers: tuple[str, ...]  # why torch's kernel cannot run them, e.g. "peephole=True"; empty where it can


def layers(module: nn.Module) -> Layers:
    """The `Layers` of an lstmkit.LSTM: its device and what in it torch's kernel has no form for."""
    blockers = ("peephole=True",) if module.peephole else ()
    blockers += (module._regularizers(),) if module._regularizers() else ()  # layer norm, zoneout
    blockers += tuple(f"{name} is a {type(w).__name__}" for name, w in zip(module._flat_weights_names,
                                                                           module._flat_weights)
                      if not isinstance(w, Tensor))  # a weight structure (lstmkit.maps), not a dense tensor
    return Layers(maps.reference(module.weight_ih_l0).device.type, blockers)


def runs_aten(impl: str, layers: Layers, tracing: bool) -> bool:
    """Whether the module runs torch's kernel: dense layers without peepholes, and impl="aten", impl="auto" on
    CUDA, or torch.jit.trace recording. Where impl="aten" or a trace asks for it and the layers have no such form,
    raises, naming what is in the way."""
    if tracing and layers.blockers:
        raise RuntimeError("torch.jit.trace can record lstmkit.LSTM only as torch's aten::lstm, which needs dense "
                           f"weights and no peepholes; this LSTM has {', '.join(layers.blockers)}. Use torch.export "
                           "or torch.compile, which run lstmkit's own engine")
    if impl == "aten" and layers.blockers:
        raise ValueError("impl='aten' runs torch's own LSTM kernel, which needs dense weights and no peepholes; "
                         f"this LSTM has {', '.join(layers.blockers)}. Use impl='auto' or 'fused'")
    if layers.blockers:
        return False
    return tracing or impl == "aten" or (impl == "auto" and layers.device_type == "cuda")


def tracing() -> bool:
    """torch.jit.trace is recording (ONNX's legacy exporter, which traces too, is left to lstmkit/engine/onnx.py)."""
    return torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()


def selected(module: nn.Module) -> bool:
    """Whether `module.forward` runs torch's kernel now (see `runs_aten`); cheap where the answer is plainly no."""
    impl, trace = module.impl, tracing()
    if not (impl == "aten" or trace or (impl == "auto" and maps.reference(module.weight_ih_l0).is_cuda)):
        return False  # fused, native, reference, or auto off CUDA: lstmkit's engine
    return runs_aten(impl, layers(module), trace)


def forward(module: nn.Module, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None):
    """`lstmkit.LSTM.forward` as one `torch._VF.lstm` call, as torch.nn.LSTM.forward makes it: the same inputs,
    the same checks and messages as lstmkit's engine path, the same outputs."""
    L, D, H = module.num_layers, 2 if module.bidirectional else 1, module.hidden_size
    P = module.proj_size or H
    weights = module._flat_weights
    flatten(module)  # a no-op unless CUDA weights have left cuDNN's flat buffer (moved, reassigned, loaded)
    ref = weights[0]
    if isinstance(input, PackedSequence):
        x, sizes, sorted_indices, unsorted_indices = input
        checks.input_tensor(x, module.input_size, ref, ranks=(2,), layout=" (PackedSequence.data: (N, I))")
        batch_sizes = checks.batch_sizes(sizes)
        if sum(batch_sizes) != x.shape[0]:
            raise ValueError(f"PackedSequence.data has {x.shape[0]} rows but batch_sizes sum to {sum(batch_sizes)}")
        checks.packed_indices(sorted_indices, unsorted_indices, batch_sizes[0], x.device)
        h0, c0 = module._initial_state(hx, L * D, batch_sizes[0], P, True, x)
        if sorted_indices is not None:
            h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        out, h_n, c_n = _VF.lstm(x, sizes, (h0, c0), weights, module.bias, L, module.dropout, module.training,
                                 module.bidirectional)
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        return PackedSequence(output_layer(module, out), sizes, sorted_indices, unsorted_indices), (h_n, c_n)
    layout = " (unbatched (T, I) or batched " + ("(B, T, I))" if module.batch_first else "(T, B, I))")
    checks.input_tensor(input, module.input_size, ref, ranks=(2, 3), layout=layout)
    batched, batch_dim = input.dim() == 3, 0 if module.batch_first else 1
    x = input if batched else input.unsqueeze(batch_dim)  # (T, B, I) or (B, T, I)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"input must have at least one time step and one sequence, got shape {tuple(x.shape)}")
    h0, c0 = module._initial_state(hx, L * D, x.size(batch_dim), P, batched, x)  # x.size: symbolic B in a trace
    out, h_n, c_n = _VF.lstm(x, (h0, c0), weights, module.bias, L, module.dropout, module.training,
                             module.bidirectional, module.batch_first)  # (T, B, D*P) or (B, T, D*P)
    out = output_layer(module, out)
    if not batched:
        return out.squeeze(batch_dim), (h_n.squeeze(1), c_n.squeeze(1))
    return out, (h_n, c_n)


def output_layer(module: nn.Module, out: Tensor) -> Tensor:
    """y_t = φ(W_y h_t + b_y) on the top layer's outputs where the module has an output layer."""
    return out if module.output_layer is None else module.output_layer(out)


def flatten(module: nn.Module) -> None:
    """What torch.nn.LSTM.flatten_parameters does: on CUDA, where cuDNN accepts the weights, make them views into
    one flat buffer in cuDNN's layout, so that its kernel reads them in place rather than copying them on every
    call. A no-op elsewhere, for weights already in one buffer, and for weights that are not leaf tensors
    (computed by a parametrization or a hook each call: cuDNN copies those)."""
    weights = module._flat_weights
    if not all(isinstance(w, Tensor) and w.is_cuda and w.is_leaf and w.dtype == weights[0].dtype for w in weights):
        return
    if not all(torch.backends.cudnn.is_acceptable(w) for w in weights):
        return
    storages = {w.untyped_storage().data_ptr() for w in weights}
    if len(storages) == 1 or len({w.data_ptr() for w in weights}) != len(weights):
        return  # flat already; or aliased weights, which torch too leaves to the copying path
    import torch.backends.cudnn.rnn as rnn

    with torch.cuda.device_of(weights[0]), torch.no_grad():  # the flatten writes the parameters in place
        if torch._use_cudnn_rnn_flatten_weight():
            torch._cudnn_rnn_flatten_weight(weights, (4 if module.bias else 2) + (1 if module.proj_size else 0),
                                            module.input_size, rnn.get_cudnn_mode(module.mode), module.hidden_size,
                                            module.proj_size, module.num_layers, module.batch_first,
                                            bool(module.bidirectional))


def aten_layer(x: Tensor, batch_sizes: list[int] | None, h0: Tensor, c0: Tensor, weight_ih, weight_hh,
               bias: Tensor | None = None, peephole: Tensor | None = None, weight_hr=None,
               reverse: bool = False):
    """impl="aten" has no per-layer function: torch's kernel runs whole modules (`forward`). Raises."""
    raise ValueError("impl='aten' runs torch's own kernel on a whole lstmkit.LSTM of dense layers without "
                     "peepholes (lstmkit.engine.aten.forward), not one layer at a time; use impl='auto', 'fused', "
                     "'native' or 'reference' for the per-layer engine")
