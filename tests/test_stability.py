"""Numerical stability: very long sequences and saturated gates stay finite, forward and backward."""
import pytest
import torch

import lstmkit
from lstmkit.engine import IMPLEMENTATIONS


@pytest.mark.parametrize("impl", ["auto", pytest.param("fused", marks=pytest.mark.slow)])
def test_ten_thousand_steps_forward_and_backward_float32(impl):
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(4, 8, impl=impl, proj_size=4)
    x = torch.randn(10_000, 2, 4, requires_grad=True)
    y, (h, c) = lstm(x)
    loss = y[-100:].pow(2).sum() + c.sum()
    loss.backward()
    for name, t in [("output", y), ("c_n", c), ("input grad", x.grad)] + [(n, p.grad) for n, p in
                                                                         lstm.named_parameters()]:
        assert torch.isfinite(t).all(), f"{name} has NaN or inf after 10 000 steps"
    # the cell can grow by at most 1 per step in magnitude: |c_t| <= |c_{t-1}| + 1
    assert c.abs().max() <= 10_000


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_saturated_gates_give_saturated_outputs_not_nan(impl, sign):
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(3, 5, impl=impl, peephole=True)
    with torch.no_grad():
        lstm.weight_ih_l0.fill_(sign * 100 / 3)  # pre-activations of ±100 on every gate
        lstm.weight_hh_l0.zero_()
        lstm.bias_ih_l0.zero_()
        lstm.bias_hh_l0.zero_()
    x = torch.ones(20, 2, 3, requires_grad=True)
    y, (h, c) = lstm(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in lstm.parameters())
    if sign > 0:  # i = f = o = 1, g = 1: c_t = c_{t-1} + 1, h_t = tanh(c_t) -> 1
        assert torch.allclose(c[0], torch.full_like(c[0], 20.0))
        assert torch.allclose(y[-1], torch.ones_like(y[-1]))
    else:  # i = f = o = σ(-100) ≈ 4e-44: c_t ≈ 0, h_t ≈ 0 (how tiny depends on the sigmoid's rounding)
        assert y.abs().max() < 1e-30 and c.abs().max() < 1e-30


def test_extreme_inputs_in_float32_stay_finite():
    lstm = lstmkit.LSTM(3, 5)
    x = torch.full((4, 2, 3), 1e30, requires_grad=True)
    y, (h, c) = lstm(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(c).all() and torch.isfinite(x.grad).all()
