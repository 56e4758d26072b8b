"""lstmkit.LSTM against torch.nn.LSTM: outputs, final states and every gradient, over the configuration grid."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine import IMPLEMENTATIONS
from assertions import assert_rel, run_and_grad

I, H, T, B = 5, 7, 6, 4
GRID = list(itertools.product([1, 2, 3], [False, True], [False, True], [0, 3]))  # layers, bidir, batch_first, proj


def make_pair(impl, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, dtype=dtype, **kw)
    ours = lstmkit.LSTM(I, H, dtype=dtype, impl=impl, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def make_input(kind, batch_first, dtype=torch.float32, initial_state=False, layers=1, D=1, P=H):
    """kind: 'padded' | 'packed' | 'unbatched'. Returns (x for ref, x for ours, hx for ref, hx for ours)."""
    gen = torch.Generator().manual_seed(1)
    shape = (T, I) if kind == "unbatched" else ((B, T, I) if batch_first else (T, B, I))
    x = torch.randn(shape, generator=gen, dtype=dtype)
    hx = None
    if initial_state:
        lead = (layers * D,) if kind == "unbatched" else (layers * D, B)
        hx = (torch.randn(*lead, P, generator=gen, dtype=dtype), torch.randn(*lead, H, generator=gen, dtype=dtype))
    copies = []
    for _ in range(2):
        xi = x.clone().requires_grad_()
        hxi = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
        if kind == "packed":
            xi = pack_padded_sequence(xi, torch.tensor([T, 2, T - 1, 1]), batch_first, enforce_sorted=False)
        copies.append((xi, hxi))
    (x_ref, hx_ref), (x_ours, hx_ours) = copies
    return x_ref, x_ours, hx_ref, hx_ours


def check_equal(ref, ours, x_ref, x_ours, hx_ref, hx_ours, tol=1e-5):
    out_r, h_r, c_r, g_r = run_and_grad(ref, x_ref, hx_ref)
    out_o, h_o, c_o, g_o = run_and_grad(ours, x_ours, hx_ours)
    assert_rel(out_o, out_r, tol, "output")
    assert_rel(h_o, h_r, tol, "h_n")
    assert_rel(c_o, c_r, tol, "c_n")
    assert g_o.keys() == g_r.keys()
    for name in g_r:
        assert_rel(g_o[name], g_r[name], tol, f"grad {name}")


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("kind", ["padded", "packed", "unbatched"])
@pytest.mark.parametrize("layers,bidirectional,batch_first,proj", GRID)
def test_matches_torch(impl, kind, layers, bidirectional, batch_first, proj):
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, proj_size=proj)
    ref, ours = make_pair(impl, **kw)
    D, P = 2 if bidirectional else 1, proj or H
    for initial_state in (False, True):
        check_equal(ref, ours, *make_input(kind, batch_first, initial_state=initial_state, layers=layers, D=D, P=P))


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
def test_float64_matches_torch_tightly(impl):
    ref, ours = make_pair(impl, dtype=torch.float64, num_layers=2, bidirectional=True, proj_size=3)
    check_equal(ref, ours, *make_input("packed", False, torch.float64, True, 2, 2, 3), tol=1e-12)


def test_dropout_draws_the_same_mask_as_torch():
    kw = dict(num_layers=3, dropout=0.5)
    ref, ours = make_pair("auto", **kw)
    ref.train(), ours.train()
    x = torch.randn(T, B, I)
    torch.manual_seed(123)
    y_ref, _ = ref(x)
    torch.manual_seed(123)
    y_ours, _ = ours(x)
    assert_rel(y_ours, y_ref, 1e-5, "output with dropout")
    torch.manual_seed(124)
    y_other, _ = ours(x)
    assert (y_other - y_ref).abs().max() > 1e-3, "a different seed must draw a different mask"
    ours.eval()
    ref.eval()
    assert_rel(ours(x)[0], ref(x)[0], 1e-5, "eval mode: no dropout")


def test_state_dict_loads_both_ways():
    ours = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3)
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I)
    assert_rel(ref(x)[0], ours(x)[0], 1e-5)
    back = lstmkit.LSTM.from_torch(ours.to_torch())
    assert_rel(back(x)[0], ours(x)[0], 0)


def test_truncated_bptt_by_passing_state_back():
    _, ours = make_pair("auto", num_layers=2)
    x = torch.randn(2 * T, B, I, requires_grad=True)
    y_full, (h_full, c_full) = ours(x)
    y1, state = ours(x[:T])
    y2, (h2, c2) = ours(x[T:], tuple(s.detach() for s in state))
    assert_rel(torch.cat((y1, y2)), y_full, 1e-6)
    assert_rel(h2, h_full, 1e-6)
    g = torch.autograd.grad(y2.sum(), x)[0]
    assert g[:T].abs().max() == 0, "the detached state must stop the gradient at the chunk boundary"
    assert g[T:].abs().max() > 0


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
def test_peephole_and_output_layer(impl):
    torch.manual_seed(0)
    ours = lstmkit.LSTM(I, H, num_layers=2, peephole=True, output_size=2, output_activation="tanh", impl=impl)
    ref = lstmkit.LSTM(I, H, num_layers=2, peephole=True, output_size=2, output_activation="tanh", impl="reference")
    ref.load_state_dict(ours.state_dict())
    assert ours.weight_peephole_l1.shape == (3, H)
    x = torch.randn(T, B, I, requires_grad=True)
    y, (h, c) = ours(x)
    assert y.shape == (T, B, 2) and y.abs().max() < 1
    check_equal(ref, ours, *make_input("packed", False, initial_state=True, layers=2))
    # the output layer is y = tanh(W_y h + b_y) on the top layer's hidden states
    ours.output_layer = None
    h_top, _ = ours(x)
    layer = ref.output_layer.linear
    assert_rel(y, torch.tanh(h_top @ layer.weight.t() + layer.bias), 1e-6)


def test_peephole_changes_the_function():
    torch.manual_seed(0)
    m = lstmkit.LSTM(I, H, peephole=True)
    x = torch.randn(T, B, I)
    y, _ = m(x)
    with torch.no_grad():
        m.weight_peephole_l0.zero_()
    plain = lstmkit.LSTM(I, H)
    plain.load_state_dict(m.state_dict(), strict=False)
    assert (y - m(x)[0]).abs().max() > 1e-4
    assert_rel(m(x)[0], plain(x)[0], 1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    ref, ours = make_pair("auto", num_layers=2, bidirectional=True, proj_size=3)
    x = torch.randn(T, B, I)
    y_cpu, (h_cpu, _) = ours(x)
    y_gpu, (h_gpu, _) = ours.cuda()(x.cuda())
    assert_rel(y_gpu.cpu(), y_cpu, 1e-5)
    assert_rel(h_gpu.cpu(), h_cpu, 1e-5)
