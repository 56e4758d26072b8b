"""Quantized maps: int8 within its derived error bound for every kernel, bf16, Q4.12 fixed point, inference-only
errors, and quantized LSTMs (sizes, structure kept, checkpoint round trip)."""
import pytest
import torch

import lstmkit
from lstmkit.compress import quantize
from lstmkit.compress.saved import read, save_compressed
from lstmkit.compress.summary import stored_bytes
from lstmkit.maps import int8
from lstmkit.maps.quantized import BFloat16Map, Fixed16Map, Int8Map
from assertions import assert_rel

KERNELS = ["int_mm"] + [k for k in int8.PACKED if int8.packed_available(k)]


def _weights(seed=0, out=48, inp=40):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(out, inp, generator=gen) * torch.rand(out, 1, generator=gen)  # rows of different scales
    x = torch.randn(9, inp, generator=gen)
    x[0] *= 20  # an outlier row: per-tensor activation scales suffer, the bound must still hold
    return W, x


def test_int8_weights_are_per_channel_symmetric():
    W, _ = _weights()
    m = Int8Map.from_dense(W)
    assert m.weight.dtype == torch.int8 and m.weight.abs().max() <= 127
    assert_rel(m.scale, W.abs().amax(1) / 127, 1e-6)
    assert ((m.to_dense() - W).abs() <= m.scale[:, None] / 2 + 1e-7).all()  # weight rounding ≤ half a step
    assert m.weight.abs().amax(1).eq(127).all()  # every row uses its full range


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("seed", range(4))
def test_int8_output_within_the_derived_bound(kernel, seed):
    """|x Wᵀ − forward(x)| ≤ (s_o/2)·‖x_b‖₁ + δ_b·‖Ŵ_o‖₁ (Int8Map docstring), and the bound is not vacuous."""
    W, x = _weights(seed)
    m = Int8Map.from_dense(W, kernel).eval()
    with torch.no_grad():
        y, exact, bound = m(x), x @ W.t(), m.error_bound(x)
    assert (y - exact).abs().le(bound).all(), ((y - exact).abs() / bound).max()
    typical = m.error_bound(x[1:])  # without the outlier row (it widens a per-tensor activation scale)
    assert (typical / exact[1:].abs().amax(1, keepdim=True)).max() < 0.25  # worst case: all errors of one sign


def test_int8_kernels_agree_on_the_products():
    W, x = _weights()
    outputs = [Int8Map.from_dense(W, k).eval()(x) for k in KERNELS]
    with torch.no_grad():
        exact = x @ W.t()
    for y in outputs:
        assert_rel(y, exact, 0.1)


@pytest.mark.parametrize("cls", [Int8Map, BFloat16Map, Fixed16Map])
def test_quantized_maps_are_inference_only(cls):
    W, x = _weights()
    m = cls.from_dense(W)
    assert list(m.parameters()) == [] and m.reference().dtype == torch.float32
    with pytest.raises(RuntimeError, match="inference-only"):
        m(x)  # training mode, autograd on
    with pytest.raises(RuntimeError, match="inference-only"):
        m.eval()(x.requires_grad_())
    with pytest.raises(RuntimeError, match="inference-only"):
        m.transpose(torch.ones(2, W.shape[0]))
    with pytest.raises(RuntimeError, match="inference-only"):
        m.weight_grads(x, torch.ones(len(x), W.shape[0]))
    small = x.detach()[1:] / 4  # inside Q4.12's range [-8, 8)
    with torch.no_grad():
        assert_rel(m(small), small @ m.to_dense().t(), 0.05)


def test_bf16_map():
    W, x = _weights()
    m = BFloat16Map.from_dense(W).eval()
    assert m.weight.dtype == torch.bfloat16
    with torch.no_grad():
        y = m(x)
    # each of x and W rounded to 8 significant bits: |Δ(xw)| ≤ (2·2⁻⁸ + 2⁻¹⁶)|x||w|, plus the float32 sum
    bound = (2 * 2 ** -8 + 2 ** -16) * (x.abs() @ W.abs().t()) + 1e-5
    assert ((y - x @ W.t()).abs() <= bound).all()


def test_fixed16_is_q4_12():
    r = Fixed16Map.round_to(torch.tensor([0.1, -8.5, 7.9999, 9.0, 2.0 ** -13 * 1.01]), 12)
    assert r.tolist() == [round(0.1 * 4096) / 4096, -8.0, 32767 / 4096, 32767 / 4096, 1 / 4096]
    W, x = _weights()
    m = Fixed16Map.from_dense(W * 0.5).eval()
    assert m.weight.dtype == torch.int16 and "Q4.12" in repr(m)
    assert ((m.to_dense() - W * 0.5).abs() <= 2 ** -13).all()
    with torch.no_grad():
        y = m(x / 10)
    expected = Fixed16Map.round_to(Fixed16Map.round_to(x / 10, 12) @ m.to_dense().t(), 12)
    assert torch.equal(y, expected)  # rounded inputs, exact products, one rounding (and saturation) of the sum
    assert (y * 4096).round().eq(y * 4096).all()


def _lstm():
    torch.manual_seed(0)
    return lstmkit.LSTM(32, 128, num_layers=2, proj_size=32).eval()  # int8 + a float32 scale a row: 4·in/(in + 4)


@pytest.mark.parametrize("mode, size, tol", [("int8", 3.5, 0.05), ("bf16", 1.9, 0.02), ("fixed16", 1.9, 0.01)])
def test_quantized_lstm(mode, size, tol):
    fp32 = _lstm()
    q = quantize(_lstm(), mode)
    assert all(isinstance(getattr(q, n), lstmkit.maps.QuantizedMap) for n in
               ("weight_ih_l0", "weight_hh_l1", "weight_hr_l1"))
    lstm_bytes = lambda m: sum(t.numel() * t.element_size() for k, t in m.state_dict().items()  # noqa: E731
                               if k.startswith("weight") and "peephole" not in k)
    assert lstm_bytes(fp32) / lstm_bytes(q) >= size
    x = torch.randn(10, 3, 32)
    with torch.no_grad():
        assert_rel(q(x)[0], fp32(x)[0], tol)
    with pytest.raises(RuntimeError, match="inference-only"):
        q.train()(x)[0].sum().backward()


def test_quantize_keeps_low_rank_factors():
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(16, 32, gates=lstmkit.LowRank(8)).eval()  # F-LSTM: W_ih and W_hh share W2
    x = torch.randn(5, 2, 16)
    with torch.no_grad():
        expected = lstm(x)[0]
    q = quantize(lstm, "int8")
    assert isinstance(q.weight_ih_l0.inner, Int8Map) and q.weight_ih_l0.outer is q.weight_hh_l0.outer
    with torch.no_grad():
        assert_rel(q(x)[0], expected, 0.05)


@pytest.mark.parametrize("mode", ["int8", "bf16", "fixed16"])
def test_quantized_checkpoint_round_trip(tmp_path, mode):
    from lstmkit.compress.saved import load_into
    model = quantize(torch.nn.ModuleDict({"lstm": _lstm()}), mode)
    save_compressed(tmp_path / "q.safetensors", model, {"model": {}, "data": {}}, {},
                    [{"op": "quantize", "mode": mode}], "test")
    state, recipe = read(tmp_path / "q.safetensors")
    loaded = load_into(torch.nn.ModuleDict({"lstm": lstmkit.LSTM(32, 128, num_layers=2, proj_size=32)}), state,
                       recipe, "test").eval()
    x = torch.randn(4, 2, 32)
    with torch.no_grad():
        assert torch.equal(loaded["lstm"](x)[0], model["lstm"](x)[0])
    assert stored_bytes(loaded) == stored_bytes(model)
