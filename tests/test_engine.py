"""The engine: hand-written BPTT passes gradcheck; fused == reference loop == the seed equations written naively."""
import itertools

import pytest
import torch

from lstmkit.engine import IMPLEMENTATIONS, fused_layer, reference_layer
from assertions import assert_rel

I, H, P, B = 3, 4, 2, 3
PACKED = [3, 3, 2, 1]  # batch_sizes of sequences of lengths 4, 3, 2
N = sum(PACKED)


def tensors(proj: bool, peephole: bool, dtype=torch.float64, seed=0):
    """x, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr with requires_grad, for the packed batch."""
    gen = torch.Generator().manual_seed(seed)
    Pr = P if proj else H

    def t(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

    return (t(N, I), t(B, Pr), t(B, H), t(4 * H, I), t(4 * H, Pr), t(4 * H), t(3, H) if peephole else None,
            t(P, H) if proj else None)


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("proj,peephole,reverse", list(itertools.product([False, True], repeat=3)))
def test_gradcheck(impl, proj, peephole, reverse):
    args = tensors(proj, peephole)
    run = IMPLEMENTATIONS[impl]

    def f(x, h0, c0, w_ih, w_hh, b, peep, w_hr):
        return run(x, PACKED, h0, c0, w_ih, w_hh, b, peep, w_hr, reverse=reverse)

    assert torch.autograd.gradcheck(f, args)


def naive_seed_equations(x, batch_sizes, h0, c0, w_ih, w_hh, b):
    """The LSTM as first written: eight separate products per step, one per gate and operand; padded loop
    over whole sequences, one sequence at a time, so it shares no code or layout trick with the engine."""
    W_xi, W_xf, W_xg, W_xo = w_ih.chunk(4)
    W_hi, W_hf, W_hg, W_ho = w_hh.chunk(4)
    b_i, b_f, b_g, b_o = b.chunk(4)
    lengths = [sum(1 for bs in batch_sizes if bs > n) for n in range(batch_sizes[0])]
    starts = [sum(batch_sizes[:t]) for t in range(len(batch_sizes))]
    outs, h_n, c_n = {}, [], []
    for n, length in enumerate(lengths):
        h, c = h0[n], c0[n]
        for t in range(length):
            x_t = x[starts[t] + n]
            i = torch.sigmoid(W_xi @ x_t + W_hi @ h + b_i)
            f = torch.sigmoid(W_xf @ x_t + W_hf @ h + b_f)
            g = torch.tanh(W_xg @ x_t + W_hg @ h + b_g)
            o = torch.sigmoid(W_xo @ x_t + W_ho @ h + b_o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            outs[starts[t] + n] = h
        h_n.append(h)
        c_n.append(c)
    return torch.stack([outs[r] for r in range(len(outs))]), torch.stack(h_n), torch.stack(c_n)


def test_reference_equals_naive_eight_products():
    x, h0, c0, w_ih, w_hh, b, _, _ = tensors(False, False)
    naive = naive_seed_equations(x, PACKED, h0, c0, w_ih, w_hh, b)
    ref = reference_layer(x, PACKED, h0, c0, w_ih, w_hh, b)
    inputs = (x, h0, c0, w_ih, w_hh, b)
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in naive]
    g_naive = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, naive)), inputs)
    g_ref = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ref)), inputs)
    for a, e in zip(ref, naive):
        assert_rel(a, e, 1e-12)
    for a, e in zip(g_ref, g_naive):
        assert_rel(a, e, 1e-12)


@pytest.mark.parametrize("proj,peephole,reverse", list(itertools.product([False, True], repeat=3)))
def test_fused_equals_reference(proj, peephole, reverse):
    args = tensors(proj, peephole, torch.float32)
    x, rest = args[0], args[1:]
    fused = fused_layer(x, PACKED, *rest, reverse=reverse)
    ref = reference_layer(x, PACKED, *rest, reverse=reverse)
    leaves = [a for a in args if a is not None]
    gen = torch.Generator().manual_seed(4)
    weights = [torch.randn(t.shape, generator=gen) for t in ref]
    g_fused = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, fused)), leaves)
    g_ref = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ref)), leaves)
    for a, e in zip(fused, ref):
        assert_rel(a, e, 1e-5)
    for a, e in zip(g_fused, g_ref):
        assert_rel(a, e, 1e-5)


def test_frozen_weights_get_no_gradient_and_inputs_still_do():
    x, h0, c0, w_ih, w_hh, b, peep, w_hr = tensors(True, True)
    w_hh, w_hr, peep = w_hh.detach(), w_hr.detach(), peep.detach()
    out, h, c = fused_layer(x, PACKED, h0, c0, w_ih, w_hh, b, peep, w_hr)
    gx, gw = torch.autograd.grad(out.sum() + h.sum() + c.sum(), (x, w_ih))
    assert gx.abs().sum() > 0 and gw.abs().sum() > 0


@pytest.mark.parametrize("proj,peephole", [(False, True), (True, False)])
def test_gradcheck_fused_without_the_native_step_kernels(monkeypatch, proj, peephole):
    """The fused engine's PyTorch fallback for the per-step kernels (no compiler, CUDA, other dtypes)."""
    monkeypatch.setenv("LSTMKIT_NO_NATIVE", "1")
    args = tensors(proj, peephole)

    def f(x, h0, c0, w_ih, w_hh, b, peep, w_hr):
        return fused_layer(x, PACKED, h0, c0, w_ih, w_hh, b, peep, w_hr, reverse=True)

    assert torch.autograd.gradcheck(f, args)
    with torch.no_grad():  # the inference loop, in place
        for got, want in zip(f(*args), reference_layer(*args[:1], PACKED, *args[1:], reverse=True)):
            assert_rel(got, want, 1e-12)
