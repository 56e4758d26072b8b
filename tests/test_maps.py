"""The linear-map protocol, checked on Dense: a module map and a raw weight tensor run the engine identically."""
import torch

import lstmkit
from lstmkit import maps
from lstmkit.engine import fused_layer
from assertions import assert_rel


def test_dense_protocol():
    torch.manual_seed(0)
    m = maps.Dense(5, 8, dtype=torch.float64)
    x, g = torch.randn(11, 5, dtype=torch.float64), torch.randn(11, 8, dtype=torch.float64)
    W = m.to_dense()
    assert_rel(m(x), x @ W.t(), 1e-12)
    assert_rel(m.transpose(g), g @ W, 1e-12)  # the adjoint: <m(x), g> == <x, m^T(g)>
    assert abs((m(x) * g).sum() - (x * m.transpose(g)).sum()) < 1e-10
    (dW,) = m.weight_grads(x, g)
    (dW_autograd,) = maps.LinearMap.weight_grads(m, x, g)  # the generic autograd path of the protocol
    assert_rel(dW, dW_autograd, 1e-12)
    assert m.flops(11) == 11 * 5 * 8 == maps.flops(W, 11)
    assert_rel(maps.Dense.from_dense(W).to_dense(), W, 0)


def test_module_map_equals_tensor_map_in_the_engine():
    torch.manual_seed(0)
    I, H, B, T = 3, 4, 2, 5
    w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H)
    m_ih, m_hh = maps.Dense.from_dense(w_ih), maps.Dense.from_dense(w_hh)
    x = torch.randn(T * B, I)
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
    out_t = fused_layer(x, [B] * T, h0, c0, w_ih.requires_grad_(), w_hh.requires_grad_())
    out_m = fused_layer(x, [B] * T, h0, c0, m_ih, m_hh)
    for a, e in zip(out_m, out_t):
        assert_rel(a, e, 1e-6)
    g_t = torch.autograd.grad(out_t[0].sum(), (w_ih, w_hh))
    g_m = torch.autograd.grad(out_m[0].sum(), (m_ih.weight, m_hh.weight))
    for a, e in zip(g_m, g_t):
        assert_rel(a, e, 1e-6)


def test_layer_weights_are_dense_maps():
    lstm = lstmkit.LSTM(3, 4)
    assert maps.features(lstm.weight_hh_l0) == (4, 16)
    assert maps.tensors(lstm.weight_hh_l0)[0] is lstm.weight_hh_l0


class DenseSpec(maps.MapSpec):
    def build(self, in_features, out_features, *, device=None, dtype=None):
        return maps.Dense(in_features, out_features, device=device, dtype=dtype)


def test_structured_weights_plug_into_the_layer_and_densify():
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, input=DenseSpec(),
                        recurrent=DenseSpec(), projection=DenseSpec())
    assert isinstance(lstm.weight_hh_l1_reverse, maps.Dense)
    assert "weight_hh_l1_reverse.weight" in lstm.state_dict()
    x = torch.randn(5, 2, 3, requires_grad=True)
    dense = lstm.to_torch()  # every map made dense with to_dense()
    y, (h, c) = lstm(x)
    y_ref, (h_ref, c_ref) = dense(x)
    assert_rel(y, y_ref, 1e-5)
    assert_rel(c, c_ref, 1e-5)
    (g,) = torch.autograd.grad(y.sum(), lstm.weight_hh_l0.weight)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), dense.weight_hh_l0)
    assert_rel(g, g_ref, 1e-5)
    joint = lstmkit.LSTM(3, 4, gates=DenseSpec())
    assert isinstance(joint.weight_ih_l0, maps.Dense) and joint.weight_ih_l0.in_features == 3


def test_to_torch_keeps_tied_gate_biases():
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(3, 4, num_layers=2, input=lstmkit.Coupled(), recurrent=lstmkit.Coupled())
    with torch.no_grad():
        for p in lstm.parameters():
            p.uniform_(-1, 1)  # biases not yet coupled: the layer ties them when it runs
    x = torch.randn(5, 2, 3)
    assert_rel(lstm.to_torch()(x)[0], lstm(x)[0], 1e-5)
