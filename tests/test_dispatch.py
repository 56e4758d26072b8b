"""An eager call that records no gradient runs the native op's kernel directly (lstmkit/engine/dispatch.py): the same
bits as through torch.library's dispatcher, and the op itself wherever something must see it."""
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import lstmkit
from lstmkit import compress
from lstmkit.engine import dispatch, native, ops, ops_int8

pytestmark = pytest.mark.skipif(not native.available(), reason="native extension unavailable")

CASES = {  # name: (module, input dtype)
    "fp32 dense, 2 layers, bidirectional": (lambda: lstmkit.LSTM(12, 16, num_layers=2, bidirectional=True), None),
    "fp32 projection": (lambda: lstmkit.LSTM(12, 16, proj_size=5), None),
    "fp64": (lambda: lstmkit.LSTM(12, 16).double(), torch.float64),
    "bf16 module": (lambda: lstmkit.LSTM(12, 16, num_layers=2).bfloat16(), torch.bfloat16),
    "int8": (lambda: compress.quantize(lstmkit.LSTM(12, 16, proj_size=5), "int8"), None),
}


def _inputs(dtype, packed):
    x = torch.randn(7, 3, 12, generator=torch.Generator().manual_seed(1))
    x = x if dtype is None else x.to(dtype)
    return torch.nn.utils.rnn.pack_padded_sequence(x, [7, 5, 2], enforce_sorted=False) if packed else x


def _flat(result):
    out, (h, c) = result
    return [out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out, h, c]


class _OpCalls:
    """Counts the calls of lstmkit's forward ops that go through the dispatcher."""

    def __init__(self, monkeypatch):
        self.n = 0
        for module, name in ((ops, "lstm_forward"), (ops_int8, "lstm_forward_int8")):
            op = getattr(module, name)
            monkeypatch.setattr(module, name, self._counting(op))

    def _counting(self, op):
        def call(*args, **kwargs):
            self.n += 1
            return op(*args, **kwargs)
        return call


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_direct_kernel_gives_the_bits_of_the_op(case, packed, monkeypatch):
    make, dtype = CASES[case]
    torch.manual_seed(0)
    m, x = make().eval(), _inputs(dtype, packed)
    calls = _OpCalls(monkeypatch)
    with torch.no_grad():
        direct = _flat(m(x))
    assert calls.n == 0  # plain eager inference skipped the dispatcher
    monkeypatch.setattr(native, "kernel_may_run", lambda *tensors: False)
    with torch.no_grad():
        through_op = _flat(m(x))
    assert calls.n > 0
    for a, b in zip(direct, through_op):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_autocast_inference_runs_the_kernel_with_the_bits_of_the_op(monkeypatch):
    torch.manual_seed(0)
    m, x = lstmkit.LSTM(12, 16, num_layers=2), _inputs(None, False)
    calls = _OpCalls(monkeypatch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        direct = _flat(m(x))
    assert calls.n == 0
    monkeypatch.setattr(native, "kernel_may_run", lambda *tensors: False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        through_op = _flat(m(x))
    for a, b in zip(direct, through_op):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_a_call_that_records_a_gradient_goes_through_the_op(monkeypatch):
    m, x = lstmkit.LSTM(12, 16), _inputs(None, False)
    calls = _OpCalls(monkeypatch)
    m(x)[0].sum().backward()
    assert calls.n == 1 and m.weight_hh_l0.grad is not None
    with torch.no_grad():
        m(x)
    assert calls.n == 1


class _Seen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("int8", [False, True], ids=["dense", "int8"])
def test_modes_and_the_profiler_see_the_op(int8):
    m = lstmkit.LSTM(12, 16)
    m = (compress.quantize(m, "int8") if int8 else m).eval()
    name = "lstmkit.lstm_forward_int8" if int8 else "lstmkit.lstm_forward"
    x = _inputs(None, False)
    with torch.no_grad():
        with _Seen() as seen:
            m(x)
        assert any(op.startswith(name) for op in seen.ops)
        with FlopCounterMode(display=False):  # a mode on the stack: no direct call
            assert not dispatch.kernel_may_run(x)
        with torch.profiler.profile() as prof:
            m(x)
        assert any(e.name == name.replace(".", "::") for e in prof.events())
        graph = make_fx(lambda t: m(t)[0], tracing_mode="real")(x).graph  # plain tensors, a tracer's mode on
        assert any(str(node.target).startswith(name) for node in graph.nodes)


class _Sub(torch.Tensor):
    pass


def test_what_keeps_a_call_on_the_op():
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert dispatch.kernel_may_run(x, None, torch.nn.Parameter(torch.randn(2)))
        assert not dispatch.kernel_may_run(x.as_subclass(_Sub))  # a subclass: fake, functional, DTensor, ...
        with torch.device("cpu"):  # a TorchFunctionMode
            assert not dispatch.kernel_may_run(x)
        with _Seen():
            assert not dispatch.kernel_may_run(x)
        with torch.profiler.profile():
            assert not dispatch.kernel_may_run(x)
    w = torch.randn(3, requires_grad=True)
    assert not dispatch.kernel_may_run(x, w)  # a gradient to record
    with torch.no_grad():
        assert dispatch.kernel_may_run(x, w)
    with torch.inference_mode():
        assert dispatch.kernel_may_run(x, w)
    seen = []
    torch.func.vmap(lambda t: seen.append(dispatch.kernel_may_run(t)) or t)(x)
    traced = torch.jit.trace(lambda t: t * (2 if dispatch.kernel_may_run(t) else 3), (x,), check_trace=False)
    assert seen == [False] and torch.equal(traced(x), x * 3)


def test_a_traced_rounding_records_its_ops():
    """autocast.rounded's one-pass kernel is invisible to a tracer's mode: under one, the graph must hold the
    rounding itself, not a buffer from the trace."""
    from lstmkit import autocast
    with torch.no_grad():
        graph = make_fx(lambda t: autocast.rounded(t, torch.bfloat16), tracing_mode="real")(torch.randn(6, 4))
    y = torch.randn(6, 4)
    assert torch.equal(graph(y), y.bfloat16().float())
