"""autocast.rounded, the rounding of float32 operands to bf16 under CPU autocast: the native one-pass kernel gives
t.to(torch.bfloat16).to(torch.float32)'s values bit for bit (NaN stays NaN), and code that a tracer or a torch.func
transform sees gets the plain conversions."""
import pytest
import torch

from lstmkit import autocast
from lstmkit.engine import build, native

BF16, F32 = torch.bfloat16, torch.float32


def specials(n: int) -> torch.Tensor:
    """n float32 values: normal ones of every scale, ties to even, both zeros, subnormals, the largest finite values
    (which round to infinity), infinities and NaN."""
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(n, generator=gen) * torch.logspace(-40, 38, n).flip(0)
    s = torch.tensor([0.0, -0.0, 1e-45, -1e-40, 3.4e38, -3.39e38, float("inf"), -float("inf"), float("nan"),
                      1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20])  # ties: to even, and past one
    t[:len(s)] = s
    t[-1] = float("nan")
    return t


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bits, NaN counted equal to NaN (their payloads may differ)."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a.view(torch.int32)[~nan], b.view(torch.int32)[~nan])


@pytest.mark.skipif(not native.available(), reason="native extension unavailable")
@pytest.mark.parametrize("n", [12, 16 * 4099 + 13, (4 << 20) // 4 + 5], ids=["tail", "vectors", "pooled"])
def test_the_native_rounding_equals_two_conversions(n):
    t = specials(n)
    got = native.extension().rounded_to_bf16(t)
    assert got.dtype == F32 and got.shape == t.shape
    assert same_values(got, t.to(BF16).to(F32))


@pytest.mark.skipif(not native.available(), reason="native extension unavailable")
def test_rounded_takes_any_layout_and_refuses_other_dtypes():
    t = specials(64 * 33).view(64, 33)[:, 1:]  # not contiguous
    assert same_values(autocast.rounded(t, BF16), t.to(BF16).to(F32))
    with pytest.raises(RuntimeError, match="float32 CPU tensor"):
        native.extension().rounded_to_bf16(t.double())


def test_rounded_under_a_torch_func_transform_is_the_plain_conversion(monkeypatch):
    calls = []
    ext = native.extension()
    if ext is not None:
        monkeypatch.setattr(build, "extension", lambda: calls.append(1) or ext)
    x = specials(40)
    rows = torch.func.vmap(lambda row: autocast.rounded(row, BF16))(x.view(4, 10))
    assert same_values(rows.reshape(-1), x.to(BF16).to(F32))
    assert not calls  # the extension was not asked: it can't read a transform's tensors


def _autocast_step(model, x, packed):
    """Output, final state and every gradient of one training step under CPU autocast to bf16."""
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    inp = torch.nn.utils.rnn.pack_padded_sequence(x, [5, 4, 2], enforce_sorted=True) if packed else x
    with torch.autocast("cpu", dtype=BF16):
        out, (h, c) = model(inp)
    out = out.data if packed else out
    (out.float().square().sum() + h.float().sum() + c.float().sum()).backward()
    return [out, h, c, x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.skipif(not native.available(), reason="native extension unavailable")
@pytest.mark.parametrize("options,packed", [(dict(num_layers=2), False), (dict(bidirectional=True, proj_size=4), False),
                                            (dict(num_layers=2, dropout=0.0), True)])
def test_the_fast_autocast_path_gives_the_bits_of_the_plain_one(options, packed, monkeypatch):
    """The native loop's bf16 output taken as it is (autocast.operand_outputs) and the eager rounding Function give
    the dtypes and bits of a float32 round trip and the torch.func-ready Function. Checked to fail with the last
    layer's bf16 output left unrounded for inner layers as well (their input then bf16)."""
    import lstmkit
    torch.manual_seed(0)
    model = lstmkit.LSTM(6, 8, **options)
    x = torch.randn(5, 3, 6)
    fast = _autocast_step(model, x, packed)
    plain_engine = autocast.engine
    monkeypatch.setattr(autocast, "engine", lambda device_type, operand_outputs=False: plain_engine(device_type))
    monkeypatch.setattr(autocast, "_RoundedEager", autocast._Rounded)
    plain = _autocast_step(model, x, packed)
    assert len(fast) == len(plain)
    for a, b in zip(fast, plain):
        assert a.dtype == b.dtype and torch.equal(a, b)
