"""The inference loop (lstmkit/engine/inference.py): equal to the autograd path for every kind of map and every
layout, and taken exactly when no gradient is needed."""
import collections
import itertools

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from lstmkit import LSTM, Circulant, Conv, Coupled, Diagonal, Grouped, LowRank, SharedGates, maps
from lstmkit.compress import prune, quantize
from lstmkit.compress.targets import lstm_weights, replace_weight
from lstmkit.engine import bptt, native
from assertions import assert_rel

I, H, P = 4, 8, 4
LENGTHS = [3, 5, 2]  # unsorted: the packed batch has sorted_indices
TOL = {torch.float64: 1e-12, torch.float32: 1e-6}


def dense_maps(model):
    for lstm, name, w in list(lstm_weights(model)):
        replace_weight(lstm, name, maps.Dense.from_dense(w.detach()))
    return model


# kind -> (LSTM keywords, what is done to the built model, whether it has a projection's P != H)
KINDS = {
    "dense": ({}, None, True),
    "Dense": ({}, dense_maps, True),
    "lowrank": ({"input": LowRank(2), "recurrent": LowRank(2), "projection": LowRank(2)}, None, True),
    "lowrank-joint": ({"gates": LowRank(3)}, None, True),
    "grouped": ({"input": Grouped(2), "recurrent": Grouped(2, mix=True)}, None, True),
    "diagonal": ({"recurrent": Diagonal(bound=1.0)}, None, False),  # u ⊙ h needs P = H
    "circulant": ({"input": Circulant(2), "recurrent": Circulant(2)}, None, True),
    "shared": ({"gates": SharedGates(("i", "f", "o"))}, None, True),
    "coupled": ({"gates": Coupled()}, None, True),
    "conv": ({"input": Conv(3, 2, 2), "recurrent": Conv(3, 2, 2, separable=True)}, None, True),
    "sparse": ({}, lambda m: prune(m, 0.5), True),
    "sparse-csr": ({}, lambda m: prune(m, 0.95), True),  # eval: the CSR product
    "int8": ({}, lambda m: quantize(m, "int8"), True),
    "bf16": ({}, lambda m: quantize(m, "bf16"), True),
    "fixed16": ({}, lambda m: quantize(m, "fixed16"), True),
}
QUANTIZED = ("int8", "bf16", "fixed16")  # float32 only; inference-only maps in a single layer (see `compare`)


def build(kind, dtype, *, proj=True, bidirectional=True, peephole=True, num_layers=2, impl="fused"):
    options, post, can_project = KINDS[kind]
    torch.manual_seed(0)
    model = LSTM(I, H, num_layers, bidirectional=bidirectional, proj_size=P if proj and can_project else 0,
                 peephole=peephole, impl=impl, dtype=dtype, **options)
    return (post(model) if post else model).eval()


def inputs(dtype, packed: bool):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(max(LENGTHS), len(LENGTHS), I, generator=gen, dtype=dtype)  # (T, B, I)
    return pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False) if packed else x


def compare(model, x, dtype):
    """The model's outputs and states under torch.no_grad (the inference loop) against those of the autograd path
    (every parameter, and h0, requiring grad). A quantized map refuses an input that requires grad, so such a model
    has a single layer: its input product then sees the data, and its recurrent products run inside Recurrence."""
    D = 2 if model.bidirectional else 1
    gen = torch.Generator().manual_seed(2)
    h0 = torch.randn(model.num_layers * D, len(LENGTHS), model.proj_size or H, generator=gen, dtype=dtype)
    c0 = torch.randn(model.num_layers * D, len(LENGTHS), H, generator=gen, dtype=dtype)
    with torch.no_grad():
        fast, (h_fast, c_fast) = model(x, (h0, c0))
    slow, (h_slow, c_slow) = model(x, (h0.clone().requires_grad_(), c0))
    if isinstance(x, PackedSequence):
        fast, slow = fast.data, slow.data  # (N, D*P)
    assert slow.grad_fn is not None and fast.grad_fn is None
    for what, a, e in (("output", fast, slow), ("h_n", h_fast, h_slow), ("c_n", c_fast, c_slow)):
        assert_rel(a, e.detach(), TOL[dtype], what)


CASES = [(k, d) for k in KINDS for d in ((torch.float32,) if k in QUANTIZED else (torch.float64, torch.float32))]


@pytest.mark.parametrize("kind,dtype", CASES, ids=[f"{k}-{str(d)[6:]}" for k, d in CASES])
def test_every_map_equals_the_autograd_path(kind, dtype):
    model = build(kind, dtype, num_layers=1 if kind in QUANTIZED else 2)
    compare(model, inputs(dtype, packed=True), dtype)


GRID = list(itertools.product([False, True], repeat=4))  # packed, bidirectional, proj, peephole


@pytest.mark.parametrize("kind,dtype", [("dense", torch.float64), ("int8", torch.float32)])
@pytest.mark.parametrize("packed,bidirectional,proj,peephole", GRID)
def test_layouts_equal_the_autograd_path(kind, dtype, packed, bidirectional, proj, peephole):
    model = build(kind, dtype, proj=proj, bidirectional=bidirectional, peephole=peephole,
                  num_layers=1 if kind in QUANTIZED else 2)
    compare(model, inputs(dtype, packed), dtype)


@pytest.fixture
def calls(monkeypatch):
    """How often fused_layer runs the inference loop and the autograd Function `Recurrence`."""
    counts = collections.Counter()

    def spy(name, fn):
        def counted(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return counted

    monkeypatch.setattr(bptt, "inference_layer", spy("inference", bptt.inference_layer))
    monkeypatch.setattr(bptt.Recurrence, "apply", staticmethod(spy("autograd", bptt.Recurrence.apply)))
    return counts


@pytest.mark.parametrize("kind", ["dense", "lowrank", "sparse", "int8"])
def test_the_loop_runs_exactly_when_no_gradient_is_needed(kind, calls):
    model, x = build(kind, torch.float32, num_layers=1), inputs(torch.float32, packed=False)
    with torch.no_grad():
        model(x)
    assert calls == {"inference": 2}  # one call per direction
    model(x)  # grad enabled: the biases and peepholes require grad
    assert calls == {"inference": 2, "autograd": 2}
    model.requires_grad_(False)
    out, _ = model(x)  # grad enabled, but nothing requires it
    assert calls == {"inference": 4, "autograd": 2} and out.grad_fn is None


def test_auto_runs_the_loop_for_structured_weights_and_native_for_dense(calls):
    x = inputs(torch.float32, packed=False)
    with torch.no_grad():
        build("int8", torch.float32, num_layers=1, impl="auto")(x)  # int8 maps: the native int8 loop, where built
        assert calls == ({} if native.available() else {"inference": 2})
        build("dense", torch.float32, num_layers=1, impl="auto")(x)
    assert calls == ({} if native.available() else {"inference": 4})


def test_the_caller_state_is_not_written():
    model, x = build("lowrank", torch.float64), inputs(torch.float64, packed=True)
    h0, c0 = torch.randn(4, len(LENGTHS), P, dtype=torch.float64), torch.randn(4, len(LENGTHS), H, dtype=torch.float64)
    saved = h0.clone(), c0.clone()
    with torch.no_grad():
        model(x, (h0, c0))
    assert torch.equal(h0, saved[0]) and torch.equal(c0, saved[1])
