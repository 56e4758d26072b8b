"""The native loop with int8 weights (inference): each step equal to the same computation in PyTorch ops (Int8Map's
int_mm kernel: int8 weights with their scales, h and x quantized per row, float32 math) to float32 rounding; one step
within Int8Map's error bound of the float32 cell; the same bits on the portable path (LSTMKIT_PORTABLE_INT8=1), on
1 and 2 threads and run to run; and a quantized lstmkit.LSTM (bidirectional, 2 layers, projection, packed input)
running it, near the fused engine's int8 result and the float32 model."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import lstmkit
from assertions import assert_rel
from lstmkit.cell import lstm_pointwise
from lstmkit.compress import quantize
from lstmkit.engine import native, ops_int8
from lstmkit.engine.schedule import Carry, resolve, steps
from lstmkit.maps import int8
from lstmkit.maps.quantized import Int8Map

pytestmark = pytest.mark.skipif(not native.available(), reason="native extension unavailable")
I, H, P = 21, 37, 11  # odd on purpose: K not a multiple of 4, H and P not multiples of a vector
PADDED = [13] * 5
PACKED = [13, 13, 11, 8, 8, 3, 1]
CASES = [(sizes, proj, reverse) for sizes in (PADDED, PACKED) for proj in (False, True) for reverse in (False, True)]


def q8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = Int8Map.from_dense(w, kernel="int_mm")
    return m.weight, m.scale


def operands(batch_sizes, proj, seed=0, peephole=False, dims=(I, H, P)):
    """The op's float operands and int8 weights: x, (q_ih, s_ih), bias, h0, c0, (q_hh, s_hh), peephole, (q_hr, s_hr)."""
    I, H, P = dims  # noqa: N806
    gen = torch.Generator().manual_seed(seed)
    R = P if proj else H

    def t(*shape, scale=0.5):
        return scale * torch.randn(*shape, generator=gen)

    return (t(sum(batch_sizes), I), q8(t(4 * H, I, scale=0.3)), t(4 * H), t(batch_sizes[0], R), t(batch_sizes[0], H),
            q8(t(4 * H, R, scale=0.3)), t(3, H) if peephole else None, q8(t(P, H, scale=0.3)) if proj else None)


def run_op(args, batch_sizes, reverse=False, keep_h=False):
    x, (q_ih, s_ih), bias, h0, c0, (q_hh, s_hh), peep, hr = args
    q_hr, s_hr = hr if hr is not None else (None, None)
    return ops_int8.lstm_forward_int8(x, q_ih, s_ih, bias, h0, c0, q_hh, s_hh, peep, q_hr, s_hr,
                                      batch_sizes=batch_sizes, reverse=reverse, keep_h=keep_h)


def stepwise_reference(args, batch_sizes, reverse, out, h_seq):
    """Each step of the loop in PyTorch ops from the op's own r_{t-1} (and h_t before a projection): int_mm_linear's
    products (per-row quantized rows, exact int32 sums, (sum · s_x) · s_w), the sums in the loop's order, the cell
    in float32. Fed the op's state, a step differs only by float32 rounding: no quantization boundary moves.
    Returns (out, h_seq or None, c_n) as the reference computes them."""
    x, (q_ih, s_ih), bias, h0, c0, (q_hh, s_hh), peep, hr = args
    gates_x = int8.int_mm_linear(x, q_ih, s_ih)  # (N, 4H)
    schedule = steps(resolve(batch_sizes, x, h0), reverse)
    state = Carry(h0, c0, schedule[0][2])
    want_out, want_h = [x] * len(schedule), [x] * len(schedule)
    for t, start, rows in schedule:
        r, c = state.enter(rows)
        gates = gates_x[start:start + rows] + int8.int_mm_linear(r, q_hh, s_hh) + bias  # G_t in the loop's order
        h, c, _ = lstm_pointwise(gates, c, peep)
        own = out[start:start + rows]
        if hr is not None:
            want_h[t] = h
            want_out[t] = int8.int_mm_linear(h_seq[start:start + rows], *hr)  # r_t from the op's own h_t
        else:
            want_out[t] = h
        state.leave(own, c)
    _, c_n = state.final()
    return torch.cat(want_out), torch.cat(want_h) if hr is not None else None, c_n


@pytest.mark.parametrize("batch_sizes,proj,reverse", CASES)
def test_each_step_equals_the_int8_reference_to_fp32_rounding(batch_sizes, proj, reverse):
    args = operands(batch_sizes, proj)
    out, h_n, c_n, h_seq = run_op(args, batch_sizes, reverse, keep_h=True)
    want_out, want_h, want_c = stepwise_reference(args, batch_sizes, reverse, out, h_seq)
    assert out.dtype == h_n.dtype == c_n.dtype == torch.float32
    assert_rel(out, want_out, 1e-5, "out")
    assert_rel(c_n, want_c, 1e-5, "c_n")
    if proj:
        assert_rel(h_seq, want_h, 1e-5, "h_seq")


@pytest.mark.parametrize("proj", [False, True])
def test_whole_words_of_weights_equal_the_reference(proj):
    """K a multiple of 4 (I, H, P = 32, 48, 16): the weights packed as whole 32-bit words (int8.h's fast packing)."""
    args = operands(PACKED, proj, dims=(32, 48, 16))
    out, _, c_n, h_seq = run_op(args, PACKED, keep_h=True)
    want_out, _, want_c = stepwise_reference(args, PACKED, False, out, h_seq)
    assert_rel(out, want_out, 1e-5, "out")
    assert_rel(c_n, want_c, 1e-5, "c_n")


def test_peephole_and_no_input_weights():
    """Peepholes, and the input product given (weight_ih None: x is (N, 4H), as a structured input map leaves it)."""
    args = list(operands(PADDED, False, peephole=True))
    out, _, c_n, _ = run_op(args, PADDED)
    want_out, _, want_c = stepwise_reference(args, PADDED, False, out, None)
    assert_rel(out, want_out, 1e-5, "out with peepholes")
    x, (q_ih, s_ih) = args[0], args[1]
    gates_x = int8.int_mm_linear(x, q_ih, s_ih)
    got = ops_int8.lstm_forward_int8(gates_x, None, None, *args[2:5], *args[5], args[6], None, None,
                                     batch_sizes=PADDED, reverse=False, keep_h=False)
    assert_rel(got[0], out, 1e-5, "out from the input product")


def test_one_step_is_within_int8maps_error_bound_of_the_fp32_cell():
    """From h_0, c_0: |a_int8 − a_fp32| ≤ ε = bound_ih(x) + bound_hh(h_0) per pre-activation (Int8Map.error_bound,
    the int_mm kernel); σ is 1/4-Lipschitz and tanh 1-Lipschitz, so c_1 and h_1 move at most by the bound below."""
    gen = torch.Generator().manual_seed(3)
    B = 64
    x, h0, c0 = torch.randn(B, I, generator=gen), torch.randn(B, H, generator=gen), torch.randn(B, H, generator=gen)
    w_ih, w_hh, b = 0.3 * torch.randn(4 * H, I, generator=gen), 0.3 * torch.randn(4 * H, H, generator=gen), \
        torch.randn(4 * H, generator=gen)
    m_ih, m_hh = Int8Map.from_dense(w_ih, kernel="int_mm"), Int8Map.from_dense(w_hh, kernel="int_mm")
    out, _, c_n, _ = ops_int8.lstm_forward_int8(x, m_ih.weight, m_ih.scale, b, h0, c0, m_hh.weight, m_hh.scale, None,
                                                None, None, batch_sizes=[B], reverse=False, keep_h=False)
    a = x @ w_ih.t() + h0 @ w_hh.t() + b  # the float32 pre-activations
    eps = m_ih.error_bound(x) + m_hh.error_bound(h0)  # (B, 4H)
    (ai, af, ag, ao), (ei, ef, eg, eo) = a.chunk(4, 1), eps.chunk(4, 1)
    h, c, _ = lstm_pointwise(a, c0, None)
    i, g = torch.sigmoid(ai), torch.tanh(ag)
    dc = ei / 4 * (g.abs() + eg) + (i + ei / 4) * eg + ef / 4 * c0.abs()  # |Δ(i g)| + |Δf c_0|
    dh = eo / 4 + dc  # |Δ(o tanh c)| ≤ |Δo| + |Δc|
    slack = 1e-5
    assert ((c_n - c).abs() <= dc + slack).all(), f"c_1 off by {((c_n - c).abs() - dc).max():.3g} past the bound"
    assert ((out - h).abs() <= dh + slack).all(), f"h_1 off by {((out - h).abs() - dh).max():.3g} past the bound"
    assert (out - h).abs().max() > 0, "no int8 error at all: the loop did not run int8"


SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_int8_native import operands, run_op, PACKED
from lstmkit.engine.build import extension
torch.set_num_threads({threads})
outs = [run_op(operands(PACKED, proj, seed=int(proj)), PACKED, reverse=proj, keep_h=True) for proj in (False, True)]
torch.save({{"vnni": extension().int8_dot_instructions(), "outs": outs}}, {path!r})
"""


def run_elsewhere(tmp_path: Path, name: str, threads: int, env: dict) -> dict:
    path = tmp_path / f"{name}.pt"
    code = SCRIPT.format(tests=str(Path(__file__).parent), threads=threads, path=str(path))
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, **env}, timeout=600)
    return torch.load(path)


def assert_same_bits(a: dict, b: dict, what: str) -> None:
    for run_a, run_b in zip(a["outs"], b["outs"]):
        for x, y in zip(run_a, run_b):
            assert torch.equal(x, y), what


def test_portable_path_gives_the_same_bits(tmp_path):
    fast = run_elsewhere(tmp_path, "fast", 2, {"LSTMKIT_PORTABLE_INT8": "0"})
    portable = run_elsewhere(tmp_path, "portable", 2, {"LSTMKIT_PORTABLE_INT8": "1"})
    assert not portable["vnni"], "LSTMKIT_PORTABLE_INT8=1 did not force the portable tile"
    if not fast["vnni"]:
        pytest.skip("this CPU has no AVX512_VNNI: only the portable path runs")
    assert_same_bits(fast, portable, "the portable int8 tile differs from vpdpbusd's")


def test_one_and_two_threads_and_reruns_give_the_same_bits(tmp_path):
    one = run_elsewhere(tmp_path, "one", 1, {})
    two = run_elsewhere(tmp_path, "two", 2, {})
    assert_same_bits(one, two, "1 and 2 threads differ")
    args = operands(PACKED, True)
    first, second = run_op(args, PACKED, keep_h=True), run_op(args, PACKED, keep_h=True)
    for a, b in zip(first, second):
        assert torch.equal(a, b), "two runs differ"


def quantized_pair(kw, packed, seed=0):
    """(fp32 lstmkit.LSTM, its int8 quantization with the int_mm kernel, input)."""
    torch.manual_seed(seed)
    model = lstmkit.LSTM(I, H, **kw)
    q = quantize(lstmkit.LSTM.from_torch(model.to_torch()), "int8", kernel="int_mm").eval()
    x = torch.randn(9, 6, I)
    if packed:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, [9, 8, 8, 5, 2, 1])
    return model, q, x


def spy_native(monkeypatch) -> list:
    """The options of every native int8 loop call from now on: through the op or its kernel run directly."""
    calls = []

    def spy(forward):
        def call(*args, **kw):
            calls.append(kw)
            return forward(*args, **kw)
        return call
    for name in ("lstm_forward_int8", "forward_int8_kernel"):
        monkeypatch.setattr(ops_int8, name, spy(getattr(ops_int8, name)))
    return calls


KW = [{}, {"proj_size": P}, {"num_layers": 2, "bidirectional": True}, {"num_layers": 2, "proj_size": P}]


@pytest.mark.parametrize("kw", KW, ids=str)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_quantized_model_runs_natively_near_fused_and_fp32(kw, packed, monkeypatch):
    model, q, x = quantized_pair(kw, packed)
    calls = spy_native(monkeypatch)
    data = (lambda o: o.data) if packed else (lambda o: o)  # noqa: E731
    with torch.no_grad():
        got, (got_h, got_c) = q(x)
        layers = len(calls)
        monkeypatch.setattr(native, "available", lambda: False)  # the existing path: fused, Int8Map's int_mm kernel
        fused, (fused_h, fused_c) = q(x)
        fp32, (fp32_h, fp32_c) = model(x)
    directions = 2 if kw.get("bidirectional") else 1
    assert layers == kw.get("num_layers", 1) * directions, "the quantized model did not run the native int8 loop"
    for name, g, f, w in (("output", data(got), data(fused), data(fp32)), ("h_n", got_h, fused_h, fp32_h),
                          ("c_n", got_c, fused_c, fp32_c)):
        assert (g - f).abs().max() <= 2e-3, f"{name}: native int8 vs fused int8"
        assert (g - w).abs().max() <= 5e-2, f"{name}: native int8 vs the fp32 model"
        assert (g - w).abs().max() > 0, f"{name}: no int8 error at all"


def test_grad_and_named_kernels_keep_todays_path(monkeypatch):
    """A call that autograd would record raises as today (the maps are inference-only); a map whose kernel is named
    ("onednn") keeps that kernel on the fused path; "auto" runs natively."""
    _, q, x = quantized_pair({}, False)
    calls = spy_native(monkeypatch)
    with pytest.raises(RuntimeError, match="inference-only"):
        q.train()(x.requires_grad_(True))
    assert not calls
    x = x.detach()
    with torch.no_grad():
        for m in (q.weight_ih_l0, q.weight_hh_l0):
            m.kernel = "onednn" if "onednn" in torch.backends.quantized.supported_engines else "int_mm"
        q.eval()(x)
        named = len(calls)
        for m in (q.weight_ih_l0, q.weight_hh_l0):
            m.kernel = "auto"
        q(x)
    if "onednn" in torch.backends.quantized.supported_engines:
        assert named == 0, "a map with a named kernel ran natively"
    assert len(calls) == named + 1, "an auto-kernel int8 model did not run natively"


def test_a_bad_int8_operand_raises_naming_it():
    args = list(operands(PADDED, False))
    args[5] = (args[5][0].float(), args[5][1])  # weight_hh as float32, not int8
    with pytest.raises(RuntimeError, match="weight_hh must be a contiguous CPU tensor of dtype int8"):
        run_op(args, PADDED)
    args = list(operands(PADDED, False))
    args[5] = (args[5][0], args[5][1][:-1])
    with pytest.raises(RuntimeError, match="needs its float32 scales"):
        run_op(args, PADDED)
