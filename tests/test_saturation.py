"""Saturated gates: the native kernels' sigmoid and tanh reach exactly 0 and 1 (±1) where float32's do, and float32
gradients at saturated pre-activations are no further from float64 than torch.nn.LSTM's."""
import math

import pytest
import torch

import lstmkit
from lstmkit.engine import native

pytestmark = pytest.mark.skipif(not native.available(), reason="native extension unavailable")

SATURATED = [12.0, -12.0, 30.0, -30.0, math.inf, -math.inf]


@pytest.mark.parametrize("a", [9.02, 12.0, 30.0, 88.0, 104.0, math.inf])
def test_gates_reach_exactly_what_float32_reaches(a):
    """One step from c_0 = 0 with every pre-activation a (through the bias): the activated gates the native loop
    keeps equal torch's float32 sigmoid and tanh exactly at the extremes."""
    from lstmkit.engine import ops
    H = 32
    for sign in (1.0, -1.0):
        bias = torch.full((4 * H,), sign * a)
        out = ops.lstm_forward(torch.zeros(2, 4 * H), None, bias, torch.zeros(2, H), torch.zeros(2, H),
                               torch.zeros(4 * H, H), None, None, batch_sizes=None, reverse=False, kind="dense",
                               groups=1, training=True, keep_h=False)
        acts = out[3].view(2, 4, H)
        expected = [torch.sigmoid(bias[:H]), torch.sigmoid(bias[:H]), torch.tanh(bias[:H]), torch.sigmoid(bias[:H])]
        for q in range(4):
            if expected[q].abs().min() in (0.0, 1.0):
                assert torch.equal(acts[0, q], expected[q]), (sign * a, q)


def saturated_grads(module_of, dtype, a):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 32, dtype=torch.float64)
    with torch.no_grad():  # half the gates saturated at ±a, half ordinary
        ref.bias_ih_l0[::2] = a
    x = torch.randn(5, 3, 6, dtype=torch.float64).to(dtype).requires_grad_()  # before module_of draws from the RNG
    module = module_of(ref).to(dtype)
    y, (h, c) = module(x)
    (y.pow(2).sum() + c.sum()).backward()
    grads = [x.grad] + [p.grad for p in module.parameters()]
    return [g.double() for g in grads]


@pytest.mark.parametrize("a", SATURATED)
def test_float32_gradients_at_saturated_gates_as_close_to_float64_as_torch(a):
    exact = saturated_grads(lambda m: m, torch.float64, a)
    torch32 = saturated_grads(lambda m: m, torch.float32, a)
    ours32 = saturated_grads(lambda m: lstmkit.LSTM.from_torch(m), torch.float32, a)
    for e, t, o in zip(exact, torch32, ours32):
        assert torch.isfinite(o).all()
        scale = e.abs().max().clamp_min(1e-30)
        torch_err, our_err = ((t - e).abs().max() / scale).item(), ((o - e).abs().max() / scale).item()
        assert our_err <= max(2 * torch_err, 1e-6), (a, our_err, torch_err)
