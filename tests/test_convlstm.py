"""ConvLSTM: convolution maps obey the protocol; the engine-run model equals Shi et al.'s equations stepped naively."""
import pytest
import torch
from torch.nn import functional as F

import lstmkit
from lstmkit.cell import lstm_pointwise
from lstmkit.maps import Conv2dMap, SeparableConv2dMap
from lstmkit.models.convlstm import ConvLSTM
from assertions import assert_rel
from map_checks import check_protocol, gradcheck_engine

F64 = {"dtype": torch.float64}
C, HC, K, HS, WS, T, B = 2, 3, 3, 4, 5, 4, 2


@pytest.mark.parametrize("make", [
    lambda: Conv2dMap(2, 8, 3, 4, 3, **F64),
    lambda: Conv2dMap(4, 8, 5, 3, 3, groups=2, **F64),
    lambda: Conv2dMap(3, 3, 3, 4, 4, groups=3, **F64),  # depthwise
    lambda: Conv2dMap(3, 8, 1, 2, 3, **F64),  # pointwise
    lambda: SeparableConv2dMap(3, 8, 3, 4, 3, **F64),
], ids=["standard", "grouped", "depthwise", "pointwise", "separable"])
def test_conv_map_protocol(make):
    torch.manual_seed(0)
    check_protocol(make(), rows=5)


@pytest.mark.parametrize("separable", [False, True])
def test_gradcheck_through_the_engine(separable):
    torch.manual_seed(0)
    spec = lstmkit.Conv(3, 3, 2, separable=separable)
    w_ih, w_hh = spec.build(1 * 6, 4 * 1 * 6, **F64), spec.build(1 * 6, 4 * 1 * 6, **F64)  # C = Hc = 1, 3×2 maps
    gradcheck_engine(w_ih, w_hh, peephole=True, batch_sizes=(2, 2), fast_mode=True)


def conv(m, x):
    """The gate convolution of a map, with F.conv2d directly on (B, C, Hs, Ws)."""
    if isinstance(m, SeparableConv2dMap):
        return conv(m.outer, conv(m.inner, x))
    return F.conv2d(x, m.weight, padding=m.kernel_size // 2, groups=m.groups)


def reference(model: ConvLSTM, x, h0, c0):
    """Shi et al. stepped one time step at a time; a standard layer's two convolutions are ONE on [X_t; H_{t-1}]."""
    h_n, c_n = [], []
    for k in range(model.num_layers):
        w_ih, w_hh = getattr(model, f"weight_ih_l{k}"), getattr(model, f"weight_hh_l{k}")
        b, w_c = getattr(model, f"bias_l{k}"), getattr(model, f"weight_peephole_l{k}", None)
        h, c, outs = h0[k], c0[k], []
        for x_t in x:
            if isinstance(w_ih, Conv2dMap):
                G = F.conv2d(torch.cat((x_t, h), 1), torch.cat((w_ih.weight, w_hh.weight), 1), padding=K // 2)
            else:
                G = conv(w_ih, x_t) + conv(w_hh, h)
            G = G + b.view(1, -1, 1, 1)  # (B, 4Hc, Hs, Ws)
            hf, cf, _ = lstm_pointwise(G.flatten(1), c.flatten(1), None if w_c is None else w_c.flatten(1))
            h, c = hf.view_as(h), cf.view_as(c)
            outs.append(h)
        x = torch.stack(outs)
        h_n.append(h)
        c_n.append(c)
    return x, (torch.stack(h_n), torch.stack(c_n))


@pytest.mark.parametrize("separable,peephole", [(False, False), (False, True), (True, True)])
def test_convlstm_equals_the_equations(separable, peephole):
    torch.manual_seed(0)
    model = ConvLSTM(C, HC, K, HS, WS, num_layers=2, peephole=peephole, separable=separable, **F64)
    x = torch.randn(T, B, C, HS, WS, **F64, requires_grad=True)
    hx = tuple(torch.randn(2, B, HC, HS, WS, **F64, requires_grad=True) for _ in range(2))
    params = list(model.parameters())
    results = []
    for run in (model, lambda *a: reference(model, *a)):
        out, (h, c) = run(x, hx) if run is model else run(x, *hx)
        loss = (out * torch.cos(out)).sum() + (h * h).sum() + c.sum()
        results.append((out, h, c, *torch.autograd.grad(loss, [x, *hx, *params])))
    for a, e in zip(*results):
        assert_rel(a, e, 1e-10)
    assert results[0][0].shape == (T, B, HC, HS, WS)


def test_batch_first_and_default_state():
    torch.manual_seed(0)
    model = ConvLSTM(C, HC, K, HS, WS, batch_first=True)
    x = torch.randn(B, T, C, HS, WS)
    out, (h, c) = model(x)
    ref, (h_ref, _) = reference(model, x.transpose(0, 1), torch.zeros(1, B, HC, HS, WS), torch.zeros(1, B, HC, HS, WS))
    assert_rel(out, ref.transpose(0, 1), 1e-5)
    assert_rel(h, h_ref, 1e-5)


def test_conv_gates_plug_into_the_lstm_layer():
    """The same maps as `input=` / `recurrent=` of lstmkit.LSTM (per-position biases) equal its dense to_torch()."""
    torch.manual_seed(0)
    S = HS * WS
    lstm = lstmkit.LSTM(C * S, HC * S, input=lstmkit.Conv(K, HS, WS), recurrent=lstmkit.Conv(K, HS, WS, separable=True))
    x = torch.randn(T, B, C * S)
    with torch.no_grad():
        assert_rel(lstm(x)[0], lstm.to_torch()(x)[0], 1e-5)


def test_parameter_counts():
    k2, S = K * K, HS * WS
    standard = 4 * HC * C * k2 + 4 * HC * HC * k2 + 4 * HC
    assert lstmkit.count_parameters(ConvLSTM(C, HC, K, HS, WS)) == standard
    assert lstmkit.count_parameters(ConvLSTM(C, HC, K, HS, WS, peephole=True)) == standard + 3 * HC * S
    separable = (C * k2 + 4 * HC * C) + (HC * k2 + 4 * HC * HC) + 4 * HC
    assert lstmkit.count_parameters(ConvLSTM(C, HC, K, HS, WS, separable=True)) == separable
    two = standard + 4 * HC * HC * k2 * 2 + 4 * HC
    assert lstmkit.count_parameters(ConvLSTM(C, HC, K, HS, WS, num_layers=2)) == two


@pytest.mark.parametrize("make,match", [
    (lambda: ConvLSTM(C, HC, 4, HS, WS), "kernel_size must be odd .* got 4"),
    (lambda: ConvLSTM(C, 0, K, HS, WS), "hidden_channels must be a positive int, got 0"),
    (lambda: ConvLSTM(C, HC, K, HS, WS)(torch.randn(T, B, C, HS, WS + 1)),
     r"input must be \(T, B, C=2, Hs=4, Ws=5\), got \(4, 2, 2, 4, 6\)"),
    (lambda: ConvLSTM(C, HC, K, HS, WS)(torch.randn(T, B, C, HS, WS),
                                         (torch.zeros(1, B, HC, HS, WS), torch.zeros(2, B, HC, HS, WS))),
     r"expected c_0 of shape \(1, 2, 3, 4, 5\), got \(2, 2, 3, 4, 5\)"),
    (lambda: lstmkit.Conv(3, 4, 5).build(21, 80), r"height \* width must divide in_features=21, got 20"),
    (lambda: Conv2dMap(4, 6, 3, 2, 2, groups=4), "groups must divide out_channels=6, got 4"),
])
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
