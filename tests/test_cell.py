"""The cell: lstmkit.LSTMCell against torch.nn.LSTMCell; the fused [x, h] product against separate products."""
import pytest
import torch

import lstmkit
from lstmkit import maps
from lstmkit.cell import lstm_pointwise, lstm_pointwise_backward, lstm_step
from assertions import assert_rel


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("given_state", [True, False])
def test_cell_matches_torch(bias, batched, given_state):
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(5, 7, bias=bias)
    ours = lstmkit.LSTMCell(5, 7, bias=bias)
    ours.load_state_dict(ref.state_dict())
    lead = (3,) if batched else ()
    x = torch.randn(*lead, 5, requires_grad=True)
    hx = (torch.randn(*lead, 7, requires_grad=True), torch.randn(*lead, 7, requires_grad=True)) if given_state else None
    h_r, c_r = ref(x, hx)
    h_o, c_o = ours(x, hx)
    assert_rel(h_o, h_r)
    assert_rel(c_o, c_r)
    leaves = [x, *ours.parameters()] + (list(hx) if hx else [])
    leaves_r = [x, *ref.parameters()] + (list(hx) if hx else [])
    g_o = torch.autograd.grad((h_o * 2 + c_o).sum(), leaves)
    g_r = torch.autograd.grad((h_r * 2 + c_r).sum(), leaves_r)
    for a, e in zip(g_o, g_r):
        assert_rel(a, e)


def test_fused_concat_product_equals_separate_products():
    torch.manual_seed(0)
    x, h, c = torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7)
    w_ih, w_hh, b = torch.randn(28, 5), torch.randn(28, 7), torch.randn(28)
    fused = lstm_step(x, h, c, w_ih, w_hh, b)  # one product on [x, h]
    separate = lstm_step(x, h, c, maps.Dense.from_dense(w_ih), maps.Dense.from_dense(w_hh), b)  # two maps
    for a, e in zip(fused, separate):
        assert_rel(a, e, 1e-6)


@pytest.mark.parametrize("peephole", [False, True])
def test_pointwise_backward_is_the_gradient_of_pointwise(peephole):
    gen = torch.Generator().manual_seed(0)
    gates = torch.randn(4, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    c_prev = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    peep = torch.randn(3, 3, generator=gen, dtype=torch.float64) if peephole else None
    dh, dc = torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(4, 3, generator=gen, dtype=torch.float64)
    h, c, ifgo = lstm_pointwise(gates, c_prev, peep)
    d_gates, d_c_prev = torch.autograd.grad((h * dh + c * dc).sum(), (gates, c_prev))
    ours = lstm_pointwise_backward(dh, dc, torch.cat(ifgo, 1).detach(), c.detach(), c_prev.detach(), peep)
    assert_rel(ours[0], d_gates, 1e-12)
    assert_rel(ours[1], d_c_prev, 1e-12)


def test_cell_peephole_and_output():
    cell = lstmkit.LSTMCell(4, 6, peephole=True, output_size=2, output_activation="sigmoid")
    h, c = cell(torch.randn(3, 4))
    y = cell.output(h)
    assert y.shape == (3, 2) and ((y > 0) & (y < 1)).all()
    with pytest.raises(ValueError, match="output_size > 0"):
        lstmkit.LSTMCell(4, 6).output(h)
