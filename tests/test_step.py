"""The per-step kernels of the Python engines (lstmkit/engine/step.py): native equals lstmkit.cell's equations."""
import pytest
import torch

from lstmkit.cell import lstm_pointwise, lstm_pointwise_backward
from lstmkit.engine import native, step

pytestmark = pytest.mark.skipif(not native.available(), reason="the native extension is not built here")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("H", [1, 7, 16, 37])
def test_native_step_equals_the_equations(dtype, tol, peephole, H):
    g = torch.Generator().manual_seed(H)
    rows = 5
    a = torch.randn(rows, 4 * H, generator=g, dtype=dtype) * 3
    c_prev = torch.randn(rows, H, generator=g, dtype=dtype)
    peep = torch.randn(3, H, generator=g, dtype=dtype) if peephole else None
    h_ref, c_ref, ifgo = lstm_pointwise(a, c_prev, peep)
    gates, c, h = a.clone(), torch.empty_like(c_prev), torch.empty_like(c_prev)
    step.step_forward(gates, c_prev, peep, c, h)
    for got, want in ((gates, torch.cat(ifgo, 1)), (c, c_ref), (h, h_ref)):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)

    dh, dc = torch.randn(rows, H, generator=g, dtype=dtype), torch.randn(rows, H, generator=g, dtype=dtype)
    d_ref, dc_ref = lstm_pointwise_backward(dh, dc, gates, c, c_prev, peep)
    d_gates, dc_inout = torch.empty_like(gates), dc.clone()
    step.step_backward(dh, dc_inout, gates, c, c_prev, peep, d_gates)
    torch.testing.assert_close(d_gates, d_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(dc_inout, dc_ref, rtol=tol, atol=tol)


def test_step_in_place_on_the_cell_and_strided_rows():
    """c may be c_prev itself (the inference loop); rows may be strided (a slice of a wider buffer)."""
    H = 9
    wide = torch.randn(4, 8 * H, dtype=torch.float64)
    a = wide[:, :4 * H]  # rows 8H apart
    c_prev = torch.randn(4, H, dtype=torch.float64)
    h_ref, c_ref, _ = lstm_pointwise(a, c_prev)
    c, h = c_prev.clone(), torch.empty(4, H, dtype=torch.float64)
    step.step_forward(a, c, None, c, h)
    torch.testing.assert_close(c, c_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)


def test_the_kernel_refuses_mismatched_shapes():
    native.extension()  # loads the library that registers torch.ops.lstmkit.step_forward
    with pytest.raises(RuntimeError, match=r"gates \(rows, 4H\)"):
        torch.ops.lstmkit.step_forward(torch.zeros(2, 12), torch.zeros(2, 4), None, torch.zeros(2, 4),
                                       torch.zeros(2, 3))


def test_the_step_kernels_are_registered_operators_with_their_writes_in_the_schema():
    native.extension()
    forward = str(torch.ops.lstmkit.step_forward.default._schema)
    backward = str(torch.ops.lstmkit.step_backward.default._schema)
    assert "Tensor(a!) gates" in forward and "Tensor(b!) c" in forward and "Tensor(c!) h" in forward
    assert "Tensor(a!) dc" in backward and "Tensor(b!) d_gates" in backward


def test_non_contiguous_columns_fall_back_to_the_equations():
    H = 4
    a = torch.randn(3, 4 * H, dtype=torch.float64)
    c_prev = torch.randn(H, 3, dtype=torch.float64).t()  # columns 3 apart: not the kernel's layout
    h_ref, c_ref, _ = lstm_pointwise(a, c_prev)
    gates, c, h = a.clone(), torch.empty(3, H, dtype=torch.float64), torch.empty(3, H, dtype=torch.float64)
    step.step_forward(gates, c_prev, None, c, h)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
