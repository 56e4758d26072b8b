"""convert: a trained dense LSTM into a structured one, each matrix fitted by `from_dense`, with its error."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmkit import maps
from lstmkit.layer import LSTM
from lstmkit.maps import MapSpec
from lstmkit.params import count_parameters


@dataclass
class MatrixError:
    """How well one structured matrix Ŵ approximates the dense W it was fitted to.

    For inputs x with independent zero-mean unit-variance entries, E||(W − Ŵ)x||² = tr((W − Ŵ)ᵀ(W − Ŵ) E[xxᵀ])
    = ||W − Ŵ||_F², so `output_rms` = ||W − Ŵ||_F / √out is the predicted RMS error of each output entry, and
    `rel_error` = ||W − Ŵ||_F / ||W||_F is also the predicted relative output error sqrt(E||ΔW x||² / E||W x||²).
    """

    name: str  # e.g. "weight_hh_l0"
    structure: str  # the spec, e.g. "LowRank(rank=64)"
    shape: tuple[int, int]  # (out, in)
    params: int  # numbers the structured map stores (a shared tensor counts in each map that uses it)
    rel_error: float
    output_rms: float


@dataclass
class ConversionReport:
    matrices: list[MatrixError]
    params_before: int  # count_parameters of the dense model
    params_after: int  # count_parameters of the structured model

    def __str__(self) -> str:
        lines = [f"parameters {self.params_before} -> {self.params_after} "
                 f"({self.params_after / self.params_before:.1%})",
                 f"{'matrix':<22} {'structure':<36} {'shape':>12} {'params':>9} {'rel err':>8} {'out rms':>9}"]
        for m in self.matrices:
            shape = f"{m.shape[0]}x{m.shape[1]}"
            lines.append(f"{m.name:<22} {m.structure:<36} {shape:>12} {m.params:>9} {m.rel_error:>8.4f} "
                         f"{m.output_rms:>9.3g}")
        return "\n".join(lines)


def _rebuild(lstm: LSTM, **specs: MapSpec | None) -> LSTM:
    """An LSTM with `lstm`'s configuration, the given structures (fresh weights) and a copy of its output layer."""
    ref = maps.reference(lstm.weight_ih_l0)  # dtype and device
    new = LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first, lstm.dropout,
               lstm.bidirectional, lstm.proj_size, device=ref.device, dtype=ref.dtype, peephole=lstm.peephole,
               impl=lstm.impl, layer_norm=lstm.layer_norm, cell_zoneout=lstm.cell_zoneout,
               hidden_zoneout=lstm.hidden_zoneout, **specs)
    new.output_layer = copy.deepcopy(lstm.output_layer)
    new.zoneout_mask = lstm.zoneout_mask
    for name, norm in lstm.named_children():
        if name.startswith("layer_norm_"):  # the layer norms' gains and biases, as trained
            new.get_submodule(name).load_state_dict(norm.state_dict())
    return new


def _refit(lstm: LSTM, new: LSTM, fit: Callable[[list[str]], dict[str, maps.Map]]) -> None:
    """Put `fit(names)` (name -> map or dense tensor) for each layer's weight names into `new`, and copy the
    biases (through both models' `gate_bias`, so a coupled bias is stored as used) and peepholes."""
    for names in lstm._weight_names():
        weights = [n for n in names if not n.startswith("bias")]
        with torch.no_grad():
            for name, m in fit(weights).items():
                if isinstance(m, Tensor):
                    getattr(new, name).copy_(m)
                else:
                    setattr(new, name, m)
            sfx = names[0][len("weight_ih"):]  # "_l{k}" or "_l{k}_reverse"
            ties = [getattr(m, f"weight_{w}{sfx}") for m in (lstm, new) for w in ("ih", "hh")]
            for name in [n for n in names if n.startswith("bias")]:
                value = getattr(lstm, name).detach()
                for w in ties:  # the bias the source uses, as the new maps tie it
                    value = w.gate_bias(value) if hasattr(w, "gate_bias") else value
                getattr(new, name).copy_(value)
            if lstm.peephole:
                getattr(new, f"weight_peephole{sfx}").copy_(getattr(lstm, f"weight_peephole{sfx}"))


def _fitter(spec: MapSpec | None):
    if spec is None:
        return lambda w: w.clone()
    if not hasattr(spec, "from_dense"):
        raise TypeError(f"{spec!r} cannot be fitted to a dense matrix: its MapSpec has no from_dense")
    return spec.from_dense


def convert(lstm: LSTM | nn.LSTM, *, input: MapSpec | None = None, recurrent: MapSpec | None = None,
            projection: MapSpec | None = None, gates: MapSpec | None = None) -> tuple[LSTM, ConversionReport]:
    """A new LSTM whose W_ih, W_hh, W_hr have the given structures, each fitted by `from_dense` to the trained
    (dense, or densified) weights of `lstm` (truncated SVD, block averaging, ...); biases, peepholes and the
    output layer are copied. A None spec keeps that matrix dense. `gates=` fits the joint [W_ih, W_hh].
    Returns the model and a report of each matrix's approximation error (see MatrixError).
    """
    if isinstance(lstm, nn.LSTM):
        lstm = LSTM.from_torch(lstm)
    if gates is not None and (input is not None or recurrent is not None):
        raise ValueError("give either gates= (the joint [W_ih, W_hh]) or input=/recurrent=, not both")
    new = _rebuild(lstm, input=input, recurrent=recurrent, projection=projection, gates=gates)
    errors: list[MatrixError] = []

    def fit(names: list[str]) -> dict[str, maps.Map]:
        dense = {n: maps.to_dense(getattr(lstm, n)).detach() for n in names}
        w_ih, w_hh, *w_hr = names
        if gates is not None:
            if not hasattr(gates, "pair_from_dense"):
                raise TypeError(f"{gates!r} cannot be fitted to dense matrices: its MapSpec has no pair_from_dense")
            fitted = dict(zip((w_ih, w_hh), gates.pair_from_dense(dense[w_ih], dense[w_hh])))
        else:
            fitted = {w_ih: _fitter(input)(dense[w_ih]), w_hh: _fitter(recurrent)(dense[w_hh])}
        if w_hr:
            fitted[w_hr[0]] = _fitter(projection)(dense[w_hr[0]])
        spec = {w_ih: gates or input, w_hh: gates or recurrent, **{n: projection for n in w_hr}}
        for name, m in fitted.items():
            W, diff = dense[name], dense[name] - maps.to_dense(m).detach()
            errors.append(MatrixError(name, repr(spec[name]) if spec[name] else "dense", tuple(W.shape),
                                      sum(t.numel() for t in maps.tensors(m)),
                                      float(diff.norm() / W.norm().clamp_min(1e-30)),
                                      float(diff.norm() / math.sqrt(W.shape[0]))))
        return fitted

    _refit(lstm, new, fit)
    return new, ConversionReport(errors, count_parameters(lstm), count_parameters(new))


def densify(lstm: LSTM) -> LSTM:
    """The dense LSTM computing the same function: every map replaced by its `to_dense()`, biases through the maps'
    `gate_bias`; unlike `LSTM.to_torch()` it keeps peepholes and the output layer."""
    new = _rebuild(lstm)
    _refit(lstm, new, lambda names: {n: maps.to_dense(getattr(lstm, n)).detach() for n in names})
    return new
