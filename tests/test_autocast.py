"""Under torch.autocast lstmkit computes as torch.nn.LSTM does: the autocast dtype, torch's result dtypes, fp32 grads."""
import itertools
import warnings

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstmkit
import lstmkit.layer
from assertions import assert_rel
from lstmkit.errors import InputTypeError
from lstmkit import maps
from lstmkit.engine import layer_function
from lstmkit.maps import Int8Map

I, H, T, B = 6, 8, 7, 3
BF16, F32, F64 = torch.bfloat16, torch.float32, torch.float64
TOL = 2e-2  # bf16 keeps 8 bits of mantissa: relative error about 2^-8 per rounding
AMP = {"device_type": "cpu", "dtype": BF16}


def loss_and_grads(model, x, hx=None, **amp):
    """Forward under autocast (`amp`, or none), a fixed random projection of output, h_n and c_n taken in float32,
    and its gradients for every parameter. Returns ((output, h_n, c_n), {name: grad})."""
    with torch.autocast(**(amp or {"device_type": "cpu", "enabled": False})):
        out, (h, c) = model(x, hx)
    data = out.data if isinstance(out, PackedSequence) else out
    gen = torch.Generator().manual_seed(0)
    loss = sum((t.float() * torch.randn(t.shape, generator=gen)).sum() for t in (data, h, c))
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(named.values()))
    return (data, h, c), dict(zip(named, grads))


def pair(**kw):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "LSTM with projections is not supported with oneDNN"
        ref = torch.nn.LSTM(I, H, **kw)
    return ref, lstmkit.LSTM.from_torch(ref)


def inputs(x_dtype, state_dtype, packed, batch=B, P=H, LD=1):
    torch.manual_seed(1)
    x = torch.randn(T, batch, I, dtype=x_dtype)
    hx = None if state_dtype is None else (torch.randn(LD, batch, P, dtype=state_dtype) * 0.5,
                                          torch.randn(LD, batch, H, dtype=state_dtype) * 0.5)
    if packed:
        x = pack_padded_sequence(x, [T, T - 2, 2][:batch])
    return x, hx


GRID = [dict(proj=proj, packed=packed, bias=bias, x=x, state=state)
        for proj, packed, bias, x, state in itertools.product((0, 3), (False, True), (True, False), (F32, BF16),
                                                            (None, F32, BF16))]


@pytest.mark.parametrize("case", GRID, ids=lambda c: "-".join(f"{k}={v}".replace("torch.", "") for k, v in c.items()))
def test_dtypes_values_and_grads_match_torch_under_autocast(case):
    ref, lstm = pair(proj_size=case["proj"], bias=case["bias"])
    x, hx = inputs(case["x"], case["state"], case["packed"], P=case["proj"] or H)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, want_grads = loss_and_grads(ref, x, hx, **AMP)
    got, got_grads = loss_and_grads(lstm, x, hx, **AMP)
    for name, g, w in zip(("output", "h_n", "c_n"), got, want):
        assert g.dtype == w.dtype, f"{name}: lstmkit {g.dtype}, torch.nn.LSTM {w.dtype}"
        assert_rel(g.float(), w.float(), TOL, name)
    for name, w in want_grads.items():
        assert got_grads[name].dtype == F32 == w.dtype, name
        assert_rel(got_grads[name], w, 3 * TOL, name)


@pytest.mark.parametrize("kw", [dict(num_layers=2, bidirectional=True), dict(num_layers=2, batch_first=True),
                                dict(bidirectional=True, proj_size=3)], ids=str)
@pytest.mark.parametrize("impl", ["auto", "fused", "reference"])
def test_stacked_and_bidirectional_under_autocast_every_engine(kw, impl):
    ref, lstm = pair(**kw)
    lstm.impl = impl
    x = torch.randn(B, T, I) if kw.get("batch_first") else torch.randn(T, B, I)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, want_grads = loss_and_grads(ref, x, **AMP)
    got, got_grads = loss_and_grads(lstm, x, **AMP)
    for name, g, w in zip(("output", "h_n", "c_n"), got, want):
        assert g.dtype == w.dtype, name
        assert_rel(g.float(), w.float(), TOL, name)
    for name, w in want_grads.items():
        assert got_grads[name].dtype == F32
        assert_rel(got_grads[name], w, 3 * TOL, name)


@pytest.mark.parametrize("kw", [{}, {"recurrent": lstmkit.LowRank(3), "proj_size": 3}], ids=["dense", "lowrank"])
def test_the_engine_computes_with_bf16_operands_and_autocast_off(monkeypatch, kw):
    """Not fp32 rounded at the end: the engine gets the inputs, states and weights rounded to bf16 (on the CPU
    held in fp32, so the native fp32 loop runs them: every value exactly a bf16 number), with autocast off."""
    seen = []

    def bf16_valued(t):
        return t.dtype == F32 and torch.equal(t, t.to(BF16).to(F32))

    def spy(impl):
        run = layer_function(impl)

        def layer(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr, reverse):
            weights = [t for w in (weight_ih, weight_hh, weight_hr) for t in maps.tensors(w)]
            seen.append({"operands": all(bf16_valued(t) for t in (x, h0, c0, bias, *weights)),
                         "autocast": torch.is_autocast_enabled("cpu")})
            return run(x, batch_sizes, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr, reverse)
        return layer
    monkeypatch.setattr(lstmkit.layer, "layer_function", spy)
    lstm = lstmkit.LSTM(I, H, num_layers=2, **kw)
    x = torch.randn(T, B, I)
    assert not bf16_valued(x) and not bf16_valued(lstm.weight_ih_l0.detach())  # else the check would be empty
    with torch.autocast(**AMP):
        lstm(x)
    assert seen == [{"operands": True, "autocast": False}] * 2


def test_no_grad_inference_under_autocast():
    ref, lstm = pair(num_layers=2)
    x = torch.randn(T, B, I)
    with torch.no_grad(), torch.autocast(**AMP):
        out, (h, c) = lstm(x)
        want, (hw, cw) = ref(x)
    for g, w in ((out, want), (h, hw), (c, cw)):
        assert g.dtype == w.dtype == BF16
        assert_rel(g.float(), w.float(), TOL)


def test_autocast_linear_feeds_lstm():
    """A bf16 activation from an autocast nn.Linear is accepted (it raised TypeError before), as by torch.nn.LSTM."""
    torch.manual_seed(0)
    embed = torch.nn.Linear(5, I)
    ref, lstm = pair()
    x = torch.randn(T, B, 5)
    with torch.autocast(**AMP):
        a = embed(x)
        assert a.dtype == BF16
        out, (h, c) = lstm(a)
        want, (hw, cw) = ref(a)
    assert (out.dtype, h.dtype, c.dtype) == (want.dtype, hw.dtype, cw.dtype)
    assert_rel(out.float(), want.float(), TOL)
    out.float().sum().backward(retain_graph=True)  # the Linear's graph is shared
    want.float().sum().backward()
    assert embed.weight.grad.dtype == lstm.weight_ih_l0.grad.dtype == F32
    assert_rel(lstm.weight_ih_l0.grad, ref.weight_ih_l0.grad, 3 * TOL)


def test_float64_module_is_left_alone_by_autocast():
    ref, lstm = pair()
    ref.double()
    lstm.double()
    x = torch.randn(T, B, I, dtype=F64)
    with torch.autocast(**AMP):
        out, (h, c) = lstm(x)
        want, _ = ref(x)
    assert out.dtype == h.dtype == c.dtype == want.dtype == F64
    assert torch.equal(out, lstm(x)[0])  # exactly the result without autocast
    assert_rel(out, want, 1e-10)


def test_float64_input_to_float32_module_under_autocast_is_refused_like_torch():
    ref, lstm = pair()
    x = torch.randn(T, B, I, dtype=F64)
    with torch.autocast(**AMP):
        with pytest.raises(RuntimeError):
            ref(x)
        with pytest.raises(InputTypeError, match="float64 but under autocast to torch.bfloat16") as e:
            lstm(x)
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, TypeError)


STRUCTURES = {
    "lowrank": {"input": lstmkit.LowRank(3), "recurrent": lstmkit.LowRank(3)},
    "lowrank-joint": {"gates": lstmkit.LowRank(5)},
    "grouped": {"input": lstmkit.Grouped(2), "recurrent": lstmkit.Grouped(2)},
    "grouped-mix": {"recurrent": lstmkit.Grouped(2, mix=True)},
    "diagonal": {"recurrent": lstmkit.Diagonal(bound=1.0)},
    "circulant": {"input": lstmkit.Circulant(4), "recurrent": lstmkit.Circulant(4)},
    "shared": {"gates": lstmkit.SharedGates(("i", "f", "o"))},
    "coupled": {"gates": lstmkit.Coupled()},
    "sparse": {"recurrent": lstmkit.Sparse(0.5)},
    "lowrank-proj": {"recurrent": lstmkit.LowRank(2), "projection": lstmkit.LowRank(2), "proj_size": 4},
    "circulant-proj": {"recurrent": lstmkit.Circulant(2), "projection": lstmkit.Circulant(2), "proj_size": 4},
}


@pytest.mark.parametrize("case", STRUCTURES)
def test_every_structure_under_autocast_is_close_to_fp32(case):
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, peephole=True, **STRUCTURES[case])
    x = torch.randn(T, B, I)
    fp32, fp32_grads = loss_and_grads(lstm, x)
    got, got_grads = loss_and_grads(lstm, x, **AMP)
    for name, g, w in zip(("output", "h_n", "c_n"), got, fp32):
        assert g.dtype != F32 or name == "c_n" and "proj" in case, f"{name} is {g.dtype}: autocast did nothing"
        assert torch.isfinite(g).all(), name
        assert_rel(g.float(), w, 2 * TOL, name)
    for name, w in fp32_grads.items():
        assert got_grads[name].dtype == F32, name
        assert torch.isfinite(got_grads[name]).all(), name
        assert_rel(got_grads[name], w, 4 * TOL, name)


def test_quantized_map_under_autocast_runs_in_its_own_precision():
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H)
    dense = lstm.weight_hh_l0.detach()
    del lstm.weight_hh_l0
    lstm.weight_hh_l0 = Int8Map.from_dense(dense)
    lstm.eval()
    x = torch.randn(T, B, I)
    with torch.no_grad():
        want = lstm(x)[0]
        with torch.autocast(**AMP):
            out = lstm(x)[0]
    assert out.dtype == BF16
    assert_rel(out.float(), want, 2 * TOL)


CELL_GRID = list(itertools.product((F32, BF16), (None, F32, BF16), (True, False)))


@pytest.mark.parametrize("x_dtype,state_dtype,batched", CELL_GRID, ids=str)
def test_cell_matches_torch_under_autocast(x_dtype, state_dtype, batched):
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(I, H)
    cell = lstmkit.LSTMCell(I, H)
    cell.load_state_dict(ref.state_dict())
    shape = (B,) if batched else ()
    x = torch.randn(*shape, I, dtype=x_dtype)
    hx = None if state_dtype is None else tuple(torch.randn(*shape, H, dtype=state_dtype) for _ in range(2))
    results = []
    for m in (ref, cell):
        with torch.autocast(**AMP):
            h, c = m(x, hx)
        (h.float().sum() + 2 * c.float().sum()).backward()
        results.append((h, c, m.weight_hh.grad))
    (hw, cw, gw), (h, c, g) = results
    assert (h.dtype, c.dtype) == (hw.dtype, cw.dtype)
    assert_rel(h.float(), hw.float(), TOL)
    assert_rel(c.float(), cw.float(), TOL)
    assert g.dtype == F32
    assert_rel(g, gw, 3 * TOL)
