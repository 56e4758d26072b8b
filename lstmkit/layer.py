"""LSTM: a drop-in for torch.nn.LSTM (same arguments, inputs, outputs and state_dict), run by lstmkit's engine."""
from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from lstmkit import autocast, checks, maps
from lstmkit.cell import OutputLayer
from lstmkit.engine import aten, layer_function, reference_layer
from lstmkit.engine.onnx import refuse_packed_export
from lstmkit.engine.regularized import regularized_layer_function, regularized_reference_layer
from lstmkit.engine.regularized_cell import Norm, Regularization, bernoulli_mask, keep_mask
from lstmkit.errors import InputError
from lstmkit.locked_dropout import locked_dropout, locked_dropout_packed
from lstmkit.maps import MapSpec


class LSTM(nn.Module):
    """Multi-layer, optionally bidirectional LSTM with projection (LSTMP) and peepholes.

    The arguments, forward inputs/outputs and parameter names are torch.nn.LSTM's, so weights load both ways:
    per layer k and direction suffix ("" or "_reverse"): weight_ih_l{k} (4H, I_k), weight_hh_l{k} (4H, P or H),
    bias_ih_l{k}, bias_hh_l{k} (4H), weight_hr_l{k} (P, H) when proj_size > 0.
    lstmkit adds (keyword-only): `peephole` (weight_peephole_l{k}, (3, H): w_ci, w_cf, w_co), an output layer
    y_t = φ(W_y h_t + b_y) on the top layer's outputs (`output_size`, `output_activation`) and the engine
    implementation `impl` ("auto", "fused", "native", "reference", "aten": torch's own kernel; see lstmkit.engine).
    `layer_norm=True` adds per layer and direction torch.nn.LayerNorm submodules layer_norm_ih_l{k} and
    layer_norm_hh_l{k} (4H) and layer_norm_c_l{k} (H); `cell_zoneout` and `hidden_zoneout` (z in [0, 1]) keep
    each unit's previous c (h, or r with projection) with probability z in training, and mix in z in eval; the
    equations are in lstmkit/engine/regularized_cell.py. `zoneout_mask(rows, width, z, like)` draws the masks
    (torch's generator; replaceable, e.g. to fix them in a test). `locked_dropout=True` makes the `dropout`
    between layers AWD-LSTM's locked (variational) dropout: one mask per sequence, shared by all its steps.

    Weight structures (see lstmkit.maps): `input`, `recurrent` and `projection` take a MapSpec for W_ih, W_hh
    and W_hr; `gates` one for the joint [W_ih, W_hh]. A structured weight is a submodule under the same name
    (weight_hh_l0.<its parameters>) in place of the dense parameter.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None, *, peephole: bool = False, output_size: int = 0,
                 output_activation: str = "identity", impl: str = "auto", input: MapSpec | None = None,
                 recurrent: MapSpec | None = None, projection: MapSpec | None = None, gates: MapSpec | None = None,
                 layer_norm: bool = False, cell_zoneout: float = 0.0, hidden_zoneout: float = 0.0,
                 locked_dropout: bool = False):
        super().__init__()
        self.input_size = checks.positive_int("input_size", input_size)
        self.hidden_size = checks.positive_int("hidden_size", hidden_size)
        self.num_layers = checks.positive_int("num_layers", num_layers)
        self.proj_size = checks.nonnegative_int("proj_size", proj_size)
        self.dropout = checks.probability("dropout", dropout)
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size={hidden_size}, got {proj_size}")
        if dropout > 0 and num_layers == 1:  # torch.nn.LSTM's warning, word for word
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                          f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}")
        layer_function(impl)  # validates the name
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.peephole, self.impl, self.locked_dropout = bool(peephole), impl, bool(locked_dropout)
        self.layer_norm = bool(layer_norm)
        self.cell_zoneout = checks.probability("cell_zoneout", cell_zoneout)
        self.hidden_zoneout = checks.probability("hidden_zoneout", hidden_zoneout)
        self.zoneout_mask = bernoulli_mask
        if self._regularizers():
            regularized_layer_function(impl, self._regularizers())  # validates impl for these options
            if peephole:
                raise ValueError("layer norm and zoneout are written for the LSTM without peepholes (as haste's "
                                 f"LayerNormLSTM); given peephole=True with {self._regularizers()}")
        self.mode = "LSTM"
        kw = {"device": device, "dtype": dtype}
        H, P = hidden_size, proj_size or hidden_size
        D = 2 if bidirectional else 1
        for k in range(num_layers):
            layer_input = input_size if k == 0 else D * P
            for sfx in self._suffixes():
                if gates is not None:
                    if input is not None or recurrent is not None:
                        raise ValueError("give either gates= (the joint [W_ih, W_hh]) or input=/recurrent=, not both")
                    w_ih, w_hh = gates.build_pair(layer_input, P, 4 * H, **kw)
                    self.add_module(f"weight_ih_l{k}{sfx}", w_ih)
                    self.add_module(f"weight_hh_l{k}{sfx}", w_hh)
                else:
                    self._add_weight(f"weight_ih_l{k}{sfx}", input, layer_input, 4 * H, kw)
                    self._add_weight(f"weight_hh_l{k}{sfx}", recurrent, P, 4 * H, kw)
                if bias:
                    self.register_parameter(f"bias_ih_l{k}{sfx}", nn.Parameter(torch.empty(4 * H, **kw)))
                    self.register_parameter(f"bias_hh_l{k}{sfx}", nn.Parameter(torch.empty(4 * H, **kw)))
                if proj_size:
                    self._add_weight(f"weight_hr_l{k}{sfx}", projection, H, P, kw)
                elif projection is not None:
                    raise ValueError("projection= needs proj_size > 0")
                if peephole:
                    self.register_parameter(f"weight_peephole_l{k}{sfx}", nn.Parameter(torch.empty(3, H, **kw)))
                if layer_norm:
                    for name, features in (("ih", 4 * H), ("hh", 4 * H), ("c", H)):
                        self.add_module(f"layer_norm_{name}_l{k}{sfx}", nn.LayerNorm(features, eps=1e-5, **kw))
        self.output_layer = (OutputLayer(D * P, checks.positive_int("output_size", output_size), output_activation,
                                         **kw) if output_size else None)
        self.reset_parameters()

    def _regularizers(self) -> str:
        """The options that change the cell equations beyond torch.nn.LSTM's, e.g. "layer_norm=True"; empty if none."""
        return ", ".join(f"{name}={getattr(self, name)!r}" for name, default in (
            ("layer_norm", False), ("cell_zoneout", 0.0), ("hidden_zoneout", 0.0)) if getattr(self, name) != default)

    def _regularization(self, k: int, sfx: str, like: Tensor, dtype: torch.dtype | None = None) -> dict:
        """{"regularization": the record of layer k, direction sfx} for x `like` (N, ...) rows; {} without these
        options. Zoneout masks are drawn here, once per call (each layer and direction its own)."""
        if not self._regularizers():
            return {}
        cast = (lambda t: t) if dtype is None else (lambda t: autocast.cast(t, dtype))  # noqa: E731
        norms = [None] * 3
        if self.layer_norm:
            norms = [Norm(cast(m.weight), cast(m.bias), m.eps) for m in (
                getattr(self, f"layer_norm_{name}_l{k}{sfx}") for name in ("ih", "hh", "c"))]
        N, H, P = like.shape[0], self.hidden_size, self.proj_size or self.hidden_size
        keep_c = keep_mask(self.cell_zoneout, N, H, self.training, like, self.zoneout_mask)  # (N, H)
        keep_h = keep_mask(self.hidden_zoneout, N, P, self.training, like, self.zoneout_mask)  # (N, P)
        return {"regularization": Regularization(*norms, keep_c, keep_h)}

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def _add_weight(self, name: str, spec: MapSpec | None, in_features: int, out_features: int, kw: dict) -> None:
        """A dense (out, in) parameter named as in torch.nn.LSTM, or the structure `spec` builds, under `name`."""
        if spec is None:
            self.register_parameter(name, nn.Parameter(torch.empty(out_features, in_features, **kw)))
        else:
            self.add_module(name, spec.build(in_features, out_features, **kw))

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every dense LSTM weight and bias, as torch.nn.LSTM; structures keep their own."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self._parameters.values():
            nn.init.uniform_(p, -bound, bound)
        for name, m in self.named_children():
            if name.startswith("layer_norm_"):  # gain 1, bias 0
                m.reset_parameters()

    def flatten_parameters(self) -> None:
        """As torch.nn.LSTM's: on CUDA, dense weights become views into one flat cuDNN buffer, so torch's kernel
        (impl="auto" on CUDA) reads them in place; a no-op elsewhere. forward calls it where the weights have
        left the buffer (a move to CUDA, a reassigned parameter)."""
        aten.flatten(self)

    @property
    def _flat_weights_names(self) -> list[str]:
        """Every LSTM weight's name in torch.nn.LSTM's order: per layer and direction w_ih, w_hh, b_ih, b_hh, w_hr."""
        return [name for names in self._weight_names() for name in names]

    @property
    def _flat_weights(self) -> list:
        """The weights under `_flat_weights_names`, read now (so a parametrization, weight_norm or prune hook's
        new tensor is seen): tensors, or a structure's module; None while a hook has removed one."""
        return [getattr(self, name, None) for name in self._flat_weights_names]

    def __prepare_scriptable__(self):
        raise RuntimeError("torch.jit.script cannot compile lstmkit.LSTM (its engine is Python and C++ that "
                           "TorchScript does not parse). Use torch.jit.trace (dense layers without peepholes "
                           "record torch's aten::lstm), torch.export or torch.compile")

    @property
    def all_weights(self) -> list[list[Tensor]]:
        return [[getattr(self, n) for n in names] for names in self._weight_names()]

    def _weight_names(self) -> list[list[str]]:
        names = []
        for k in range(self.num_layers):
            for sfx in self._suffixes():
                layer = [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
                layer += [f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"] if self.bias else []
                layer += [f"weight_hr_l{k}{sfx}"] if self.proj_size else []
                names.append(layer)
        return names

    def _direction(self, k: int, sfx: str, dtype: torch.dtype | None = None) -> dict:
        """The maps and vectors of layer k, direction sfx, as the engine takes them; cast to `dtype` (through
        autograd) where given (autocast)."""
        get = lambda name: getattr(self, f"{name}_l{k}{sfx}", None)  # noqa: E731
        bias = get("bias_ih") + get("bias_hh") if self.bias else None  # (4H,): both biases add to every gate
        for w in (get("weight_ih"), get("weight_hh")):  # a structure may tie gate biases (coupled: b_f = -b_i)
            bias = w.gate_bias(bias) if bias is not None and hasattr(w, "gate_bias") else bias
        cast = (lambda m: m) if dtype is None else (lambda m: autocast.cast(m, dtype))  # noqa: E731
        return {"weight_ih": cast(get("weight_ih")), "weight_hh": cast(get("weight_hh")), "bias": cast(bias),
                "peephole": cast(get("weight_peephole")), "weight_hr": cast(get("weight_hr")),
                "reverse": sfx == "_reverse"}

    def forward(self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None):
        """input: (T, B, I), (B, T, I) with batch_first, unbatched (T, I), or a PackedSequence.
        hx = (h_0, c_0): (num_layers * D, B, P) and (num_layers * D, B, H); unbatched without the B dim.
        Returns output (T, B, D * P) (or a PackedSequence, or y_t with an output layer) and (h_n, c_n).
        """
        if aten.selected(self):  # torch's own kernel: CUDA dense layers, impl="aten", or torch.jit.trace
            return aten.forward(self, input, hx)
        ref = maps.reference(self.weight_ih_l0)  # the dtype and device inputs must match
        amp = autocast.compute_dtype(ref)  # under torch.autocast: the dtype this call computes in; else None
        L, D, H = self.num_layers, 2 if self.bidirectional else 1, self.hidden_size
        P = self.proj_size or H
        packed = isinstance(input, PackedSequence)
        if packed:
            refuse_packed_export()  # under torch.onnx.export, batch_sizes would be data-dependent
            x, sizes, sorted_indices, unsorted_indices = input
            checks.input_tensor(x, self.input_size, ref, ranks=(2,), layout=" (PackedSequence.data: (N, I))",
                                autocast=amp)
            batch_sizes = checks.batch_sizes(sizes)
            if sum(batch_sizes) != x.shape[0]:
                raise InputError(f"PackedSequence.data has {x.shape[0]} rows but batch_sizes sum to {sum(batch_sizes)}")
            B, batched = batch_sizes[0], True
            checks.packed_indices(sorted_indices, unsorted_indices, B, x.device)
        else:
            layout = " (unbatched (T, I) or batched " + ("(B, T, I))" if self.batch_first else "(T, B, I))")
            checks.input_tensor(input, self.input_size, ref, ranks=(2, 3), layout=layout, autocast=amp)
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)  # (T, 1, I) when unbatched
            if batched and self.batch_first:
                x = x.transpose(0, 1)  # (T, B, I)
            T, B, _ = x.shape
            if T == 0:  # torch.nn.LSTM: RuntimeError "Expected sequence length to be larger than 0"
                raise InputError(f"input must have at least one time step, got shape {tuple(input.shape)}{layout}")
            batch_sizes = None  # a padded batch: [B] * T, left implicit so T may stay symbolic
            x = x.reshape(T * B, self.input_size)  # (T*B, I): packed rows

        h0, c0 = self._initial_state(hx, L * D, B, P, batched, x, amp)
        if packed and sorted_indices is not None:
            h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)

        regularized = self._regularizers()
        run = regularized_layer_function(self.impl, regularized) if regularized else layer_function(self.impl)
        if not packed and B == 0:  # an empty batch: the reference loop's empty products keep the weights' graph
            run, batch_sizes = regularized_reference_layer if regularized else reference_layer, [0] * T
        engine = contextlib.nullcontext()
        if amp is not None:  # everything cast here, through autograd; the engine then runs with autocast off
            dtypes = autocast.lstm_dtypes(ref.device.type, amp, x.dtype, c0.dtype, packed=packed,
                                          projected=self.proj_size > 0, empty=B == 0)
            x, h0, c0 = autocast.cast(x, amp), autocast.cast(h0, amp), autocast.cast(c0, amp)
            engine = autocast.engine(ref.device.type, operand_outputs=True)
        h_n, c_n = [], []
        with engine:
            for k in range(L):
                outputs = []
                for d, sfx in enumerate(self._suffixes()):
                    out, h, c = run(x, batch_sizes, h0[k * D + d], c0[k * D + d], **self._direction(k, sfx, amp),
                                    **self._regularization(k, sfx, x, amp))
                    outputs.append(out)  # (N, P)
                    h_n.append(h)
                    c_n.append(c)
                x = torch.cat(outputs, 1) if D == 2 else outputs[0]  # (N, D*P)
                # the next layer's input, as torch's would be: in the autocast dtype (as float32 for the engine);
                # the last layer's output as it is where the native loop made it in that dtype already
                if amp is not None and (k < L - 1 or x.dtype != amp):
                    x = autocast.cast(x, amp)
                if self.dropout and self.training and k < L - 1:
                    x = self._drop_between_layers(x, batch_sizes if packed else None, B)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)  # (L*D, B, P), (L*D, B, H)
        if amp is not None:  # the dtypes torch.nn.LSTM returns under the same autocast
            x, h_n, c_n = x.to(dtypes[0]), h_n.to(dtypes[1]), c_n.to(dtypes[2])
        if self.output_layer is not None:
            x = self.output_layer(x)  # y_t = φ(W_y h_t + b_y), under the caller's autocast

        if packed:
            if unsorted_indices is not None:
                h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
            return PackedSequence(x, sizes, sorted_indices, unsorted_indices), (h_n, c_n)
        output = x.view(T, B, x.shape[-1])  # (T, B, F)
        if not batched:
            return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (output.transpose(0, 1) if self.batch_first else output), (h_n, c_n)

    def _initial_state(self, hx, LD: int, B: int, P: int, batched: bool, x: Tensor,
                       amp: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """(h_0, c_0) as (L*D, B, P) and (L*D, B, H): zeros like x when hx is None, else checked (never broadcast;
        under autocast, `amp`, any dtype it casts)."""
        H = self.hidden_size
        if hx is None:
            return x.new_zeros(LD, B, P), x.new_zeros(LD, B, H)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx must be a tuple (h_0, c_0), got {type(hx).__name__}"
                            + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""))
        shape = (lambda n: (LD, B, n)) if batched else (lambda n: (LD, n))
        h0 = checks.state_tensor("h_0", hx[0], shape(P), x, amp)
        c0 = checks.state_tensor("c_0", hx[1], shape(H), x, amp)
        return (h0, c0) if batched else (h0.unsqueeze(1), c0.unsqueeze(1))

    def _drop_between_layers(self, x: Tensor, batch_sizes: list[int] | None, B: int) -> Tensor:
        """Dropout on layer k's output x (N, D*P) before layer k + 1: torch.nn.LSTM's (a mask per step), on the
        (T, B, D*P) view as it does, so a shared seed draws the same mask; or with `locked_dropout`, one mask per
        sequence for all its steps (AWD-LSTM's locked dropout between layers)."""
        if not self.locked_dropout:
            return nn.functional.dropout(x if batch_sizes else x.view(-1, B, x.shape[1]), self.dropout,
                                         True).reshape(x.shape)
        if batch_sizes:
            return locked_dropout_packed(x, batch_sizes, self.dropout)
        return locked_dropout(x.view(-1, B, x.shape[1]), self.dropout, True).reshape(x.shape)

    @classmethod
    def from_torch(cls, lstm: nn.LSTM, **options) -> "LSTM":
        """An lstmkit.LSTM with the same configuration, (copied) weights, train/eval mode and requires_grad flags as
        a torch.nn.LSTM."""
        w = lstm.weight_ih_l0
        new = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first,
                  float(lstm.dropout), lstm.bidirectional, lstm.proj_size, device=w.device, dtype=w.dtype, **options)
        new.load_state_dict(lstm.state_dict(), strict=not new.peephole and new.output_layer is None)
        _copy_flags(lstm, new)
        return new

    def to_torch(self) -> nn.LSTM:
        """The torch.nn.LSTM computing the same function, structured weights made dense with `to_dense()`
        (requires no peepholes and no output layer)."""
        if self.peephole or self.output_layer is not None:
            raise ValueError("torch.nn.LSTM has no peepholes or output layer; this LSTM has "
                             f"peephole={self.peephole}, output layer={self.output_layer is not None}")
        if self._regularizers():
            raise ValueError("torch.nn.LSTM has no layer norm or zoneout, so no torch.nn.LSTM computes this LSTM's "
                             f"function; this LSTM has {self._regularizers()}")
        if self.locked_dropout and self.dropout:
            warnings.warn(f"torch.nn.LSTM's dropout={self.dropout} between layers draws a mask per step; this LSTM's "
                          "(locked_dropout=True) one per sequence: the same function in eval, not in training")
        w = maps.reference(self.weight_ih_l0)
        lstm = nn.LSTM(self.input_size, self.hidden_size, self.num_layers, self.bias, self.batch_first, self.dropout,
                       self.bidirectional, self.proj_size, device=w.device, dtype=w.dtype)
        lstm.load_state_dict({name: maps.to_dense(w) if isinstance(w, nn.Module) else w
                              for name, w in ((n, getattr(self, n)) for names in self._weight_names() for n in names)})
        with torch.no_grad():
            for k in range(self.num_layers):
                for sfx in self._suffixes():
                    tied = [w for w in (getattr(self, f"weight_ih_l{k}{sfx}"), getattr(self, f"weight_hh_l{k}{sfx}"))
                            if hasattr(w, "gate_bias")]
                    if self.bias and tied:  # the bias the gates really use (e.g. coupled b_f = -b_i), all in b_ih
                        getattr(lstm, f"bias_ih_l{k}{sfx}").copy_(self._direction(k, sfx)["bias"])
                        getattr(lstm, f"bias_hh_l{k}{sfx}").zero_()
        _copy_flags(self, lstm)
        return lstm

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("proj_size", 0), ("peephole", False), ("impl", "auto"),
                              ("layer_norm", False), ("cell_zoneout", 0.0), ("hidden_zoneout", 0.0),
                              ("locked_dropout", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s


def _copy_flags(source: nn.Module, target: nn.Module) -> None:
    """target takes source's train/eval mode and, parameter by parameter name, its requires_grad flags."""
    target.train(source.training)
    params = dict(target.named_parameters())
    for name, p in source.named_parameters():
        if name in params:
            params[name].requires_grad_(p.requires_grad)
