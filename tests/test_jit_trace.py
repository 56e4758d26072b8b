"""torch.jit.trace of lstmkit.LSTM: correct for new T and B (the trace holds aten::lstm), or a clear refusal;
torch.jit.script: a clear refusal."""
import contextlib
import warnings

import pytest
import torch

import lstmkit
from assertions import assert_rel

I, H = 4, 6


def trace(module, *example, no_grad=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit.trace's deprecation and its TracerWarnings, as for torch.nn.LSTM
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            return torch.jit.trace(module, example)


def kinds(traced) -> list[str]:
    return [n.kind() for n in traced.inlined_graph.nodes()]


CONFIGS = [dict(), dict(num_layers=2), dict(bidirectional=True), dict(num_layers=2, bidirectional=True, proj_size=3),
           dict(batch_first=True, num_layers=2), dict(output_size=3, output_activation="tanh")]


@pytest.mark.parametrize("no_grad", [True, False])
@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_traced_at_one_shape_is_right_at_another(kw, no_grad):
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, **kw)
    bf = kw.get("batch_first", False)
    shape = lambda T, B: (B, T, I) if bf else (T, B, I)  # noqa: E731
    traced = trace(lstm, torch.randn(shape(5, 3)), no_grad=no_grad)
    assert "aten::lstm" in kinds(traced)
    for T, B in ((9, 2), (1, 1), (5, 3)):
        x = torch.randn(shape(T, B))
        with torch.no_grad():
            out, (h, c) = traced(x)
            out_e, (h_e, c_e) = lstm(x)  # eager: lstmkit's own engine
        assert_rel(out, out_e, 1e-5, f"output at T={T} B={B}")
        assert_rel(h, h_e, 1e-5, "h_n")
        assert_rel(c, c_e, 1e-5, "c_n")


def test_traced_with_given_state_and_gradients():
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, 2, bidirectional=True)
    state = lambda B: (torch.randn(4, B, H), torch.randn(4, B, H))  # noqa: E731
    traced = trace(lstm, torch.randn(5, 3, I), state(3), no_grad=False)
    x, hx = torch.randn(8, 2, I, requires_grad=True), state(2)
    out = traced(x, hx)[0]
    out_e = lstm(x, hx)[0]
    assert_rel(out, out_e, 1e-5, "output")
    g, = torch.autograd.grad(out.square().sum(), x)
    g_e, = torch.autograd.grad(out_e.square().sum(), x)
    assert_rel(g, g_e, 1e-5, "dL/dx")
    w = torch.autograd.grad(traced(x, hx)[0].sum(), traced.weight_hh_l0)[0]
    assert_rel(w, torch.autograd.grad(lstm(x, hx)[0].sum(), lstm.weight_hh_l0)[0], 1e-5, "dL/dW_hh")


@pytest.mark.parametrize("impl", ["fused", "native", "reference"])
def test_any_impl_traces_as_aten_lstm(impl):
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, impl=impl)
    traced = trace(lstm, torch.randn(5, 3, I))
    x = torch.randn(7, 2, I)
    assert_rel(traced(x)[0], lstm(x)[0].detach(), 1e-5, "output")


@pytest.mark.parametrize("build,named", [(dict(peephole=True), "peephole=True"),
                                         (dict(recurrent=lstmkit.LowRank(rank=2)), "weight_hh_l0 is a LowRankMap"),
                                         (dict(input=lstmkit.Grouped(groups=2)), "weight_ih_l0 is a GroupedMap")])
def test_trace_refuses_what_aten_lstm_cannot_hold(build, named):
    lstm = lstmkit.LSTM(I, H, **build)
    with pytest.raises(RuntimeError, match=f"torch.jit.trace.*{named}.*torch.export or torch.compile"):
        trace(lstm, torch.randn(5, 3, I))


def test_eager_after_a_refused_trace_still_runs():
    lstm = lstmkit.LSTM(I, H, peephole=True)
    with pytest.raises(RuntimeError):
        trace(lstm, torch.randn(5, 3, I))
    assert lstm(torch.randn(5, 3, I))[0].shape == (5, 3, H)


def test_script_refuses_clearly():
    with pytest.raises(RuntimeError, match="torch.jit.script cannot compile lstmkit.LSTM.*torch.jit.trace"):
        torch.jit.script(lstmkit.LSTM(I, H))


def test_script_of_a_model_holding_one_refuses_clearly():
    model = torch.nn.Sequential(lstmkit.LSTM(I, H))
    with pytest.raises(RuntimeError, match="torch.jit.script cannot compile lstmkit.LSTM"):
        torch.jit.script(model)
