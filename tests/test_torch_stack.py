"""lstmkit inside PyTorch's stack on the default impl="auto": torch.compile, torch.export with a dynamic time
dimension, torch.func (grad, vmap, functional_call) and second derivatives, each against eager lstmkit or
torch.nn.LSTM."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine import native, op_autograd

needs_native = pytest.mark.skipif(not native.available(), reason="native extension unavailable")


def dense(**kw):
    torch.manual_seed(0)
    return lstmkit.LSTM(5, 8, **kw)


def outputs_and_grads(module, x):
    """Outputs, final states and the gradient of every parameter and of the input, for a fixed loss."""
    module.zero_grad()
    x = x.detach().requires_grad_()
    y, (h, c) = module(x)
    (y.pow(2).sum() + h.sum() + 2 * c.sum()).backward()
    return [y, h, c, x.grad] + [p.grad for p in module.parameters()]


def assert_close(ours, ref, tol=1e-5):
    for a, e in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, e, rtol=tol, atol=tol)


STRUCTURES = {  # (constructor options, engine under auto): native kinds, and one that runs the Python loop
    "dense-2x-bidirectional": dict(num_layers=2, bidirectional=True),
    "proj-peephole": dict(proj_size=3, peephole=True),
    "lowrank": dict(recurrent=lstmkit.LowRank(rank=3)),
    "circulant": dict(recurrent=lstmkit.Circulant(block=4)),
}


@pytest.mark.parametrize("backend,name", [("inductor", "dense-2x-bidirectional")]  # inductor: ~10 s a case
                         + [("aot_eager", name) for name in STRUCTURES])
def test_compile_fullgraph_matches_eager(backend, name):
    m = dense(**STRUCTURES[name])
    compiled = torch.compile(m, fullgraph=True, backend=backend)
    for T in (7, 4):
        x = torch.randn(T, 3, 5)
        assert_close(outputs_and_grads(compiled, x), outputs_and_grads(m, x))


@needs_native
def test_compile_trains_through_the_native_backward_and_keeps_t_dynamic(monkeypatch):
    """The compiled graph calls lstmkit::lstm_forward/lstm_backward (not the twice-differentiable recompute),
    and one graph serves every T."""
    calls = []
    monkeypatch.setattr(op_autograd, "_differentiable_backward", lambda *a: calls.append(1))
    m = dense()
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager", dynamic=True)
    for T in (6, 9, 13):
        x = torch.randn(T, 2, 5)
        assert_close(outputs_and_grads(compiled, x), outputs_and_grads(m, x))
    assert calls == []
    graph = torch._dynamo.explain(m)(torch.randn(6, 2, 5))
    assert graph.graph_count == 1 and graph.graph_break_count == 0


@pytest.mark.parametrize("name", ["dense-2x-bidirectional", "proj-peephole", "lowrank"])
def test_export_with_a_dynamic_time_dimension(name):
    """Exported at T=7, run at T=13 and T=2 (and at another batch size) without re-export."""
    m = dense(**STRUCTURES[name]).eval()
    T, B = torch.export.Dim("T", min=2, max=4096), torch.export.Dim("B", min=1, max=1024)
    program = torch.export.export(m, (torch.randn(7, 3, 5),), dynamic_shapes=({0: T, 1: B},))
    for shape in ((13, 3, 5), (2, 5, 5)):
        x = torch.randn(*shape)
        ours, ref = program.module()(x), m(x)
        torch.testing.assert_close(ours[0], ref[0])
        torch.testing.assert_close(ours[1], ref[1])
    assert any("lstmkit.lstm_forward" in str(n.target) for n in program.graph.nodes) == native.available()


def test_func_grad_and_functional_call_match_backward():
    m = dense(num_layers=2, proj_size=4)
    x = torch.randn(6, 3, 5)
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(p, x):
        y, (h, c) = torch.func.functional_call(m, p, (x,))
        return y.pow(2).sum() + c.sum()

    grads = torch.func.grad(loss)(params, x)
    m.zero_grad()
    loss(dict(m.named_parameters()), x).backward()
    for name, p in m.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6)


def test_vmap_over_sequences_and_per_sample_gradients():
    m = dense(bidirectional=True)
    xs = torch.randn(4, 6, 2, 5)
    ys = torch.func.vmap(lambda x: m(x)[0])(xs)
    for i in range(len(xs)):
        torch.testing.assert_close(ys[i], m(xs[i])[0])
    params = {k: v.detach() for k, v in m.named_parameters()}
    per_sample = torch.func.vmap(torch.func.grad(lambda p, x: torch.func.functional_call(m, p, (x,))[0].sum()),
                                 in_dims=(None, 0))(params, xs)
    m.zero_grad()
    m(xs[2])[0].sum().backward()
    torch.testing.assert_close(per_sample["weight_hh_l0"][2], m.weight_hh_l0.grad, rtol=1e-5, atol=1e-6)


def test_vmap_over_an_ensemble_of_weights():
    """Weights vmapped too (torch.func.stack_module_state): every member equals its own eager call."""
    members = [dense() for _ in range(3)]
    for i, m in enumerate(members):
        torch.nn.init.normal_(m.weight_hh_l0, std=0.1 * (i + 1))
    params, buffers = torch.func.stack_module_state(members)
    x = torch.randn(5, 2, 5)
    ys = torch.func.vmap(lambda p, b: torch.func.functional_call(members[0], (p, b), (x,))[0])(params, buffers)
    for i, m in enumerate(members):
        torch.testing.assert_close(ys[i], m(x)[0])


@pytest.mark.parametrize("name", ["dense-2x-bidirectional", "proj-peephole", "lowrank"])
def test_gradient_penalty_equals_torch(name):
    """autograd.grad(create_graph=True) and then backward: the penalty's gradient is exact (it was zero or
    detached before the autograd rule learned to differentiate its own backward)."""
    m = dense(**STRUCTURES[name]).double()
    ref_module = m.to_torch() if name.startswith("dense") else None
    x = torch.randn(6, 3, 5, dtype=torch.float64, requires_grad=True)

    def penalty(module):
        y, (h, c) = module(x)
        g_x, g_w = torch.autograd.grad(y.pow(2).sum() + c.sum(), (x, module.weight_ih_l0), create_graph=True)
        total = g_x.pow(2).sum() + g_w.pow(2).sum()
        return torch.autograd.grad(total, list(module.parameters()))

    ours = penalty(m)
    assert all(g.abs().sum() > 0 for g in ours)
    if ref_module is not None:
        for a, e in zip(ours, penalty(ref_module)):
            torch.testing.assert_close(a, e)
    else:  # peepholes and structures: the reference engine (autograd all the way) is the oracle
        ref = dense(**STRUCTURES[name], impl="reference").double()
        ref.load_state_dict(m.state_dict())
        for a, e in zip(ours, penalty(ref)):
            torch.testing.assert_close(a, e)


@pytest.mark.parametrize("kw", [dict(), dict(proj_size=2, peephole=True), dict(recurrent=lstmkit.Diagonal()),
                                dict(recurrent=lstmkit.LowRank(rank=2))])
def test_gradgradcheck_through_the_default_engine(kw):
    torch.manual_seed(0)
    m = lstmkit.LSTM(3, 4, dtype=torch.float64, **kw)
    names = [n for n, _ in m.named_parameters()][:3]
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    weights = [m.get_parameter(n).detach().clone().requires_grad_() for n in names]

    def f(x, *ws):
        y, (h, c) = torch.func.functional_call(m, dict(zip(names, ws)), (x,))
        return y, c

    assert torch.autograd.gradgradcheck(f, (x, *weights))


def test_packed_input_compiles_with_a_graph_break():
    """A PackedSequence's batch_sizes are data (a tensor) the loop needs as numbers: torch.compile breaks the graph
    there and stays right; fullgraph=True refuses with torch's data-dependent error, never a wrong result."""
    m = dense(bidirectional=True)
    x = pack_padded_sequence(torch.randn(6, 3, 5), [6, 4, 2])
    ref = m(x)
    torch._dynamo.reset()
    out = torch.compile(m, backend="aot_eager")(x)
    torch.testing.assert_close(out[0].data, ref[0].data)
    torch.testing.assert_close(out[1][0], ref[1][0])
    torch._dynamo.reset()
    with pytest.raises(Exception, match="data-dependent"):
        torch.compile(m, fullgraph=True, backend="aot_eager")(x)


def test_func_grad_of_a_structure_the_fused_engine_runs():
    """A circulant W_hh has no native form: under torch.func.grad it runs the reference loop, exactly."""
    m = dense(**STRUCTURES["circulant"])
    x = torch.randn(5, 2, 5)
    params = {k: v.detach() for k, v in m.named_parameters()}
    grads = torch.func.grad(lambda p: torch.func.functional_call(m, p, (x,))[0].pow(2).sum())(params)
    m.zero_grad()
    m(x)[0].pow(2).sum().backward()
    for name, p in m.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(impl="fused"), STRUCTURES["circulant"]])
def test_the_fused_engine_refuses_a_backward_with_graph(kw):
    """Its hand-written backward has no graph: create_graph=True raises, naming what to use, never a silent zero."""
    m = dense(**kw)
    y, _ = m(torch.randn(4, 2, 5))
    with pytest.raises(RuntimeError, match="first derivative only.*impl='reference'"):
        torch.autograd.grad(y.pow(2).sum(), m.weight_ih_l0, create_graph=True)


def test_export_of_a_python_loop_layer_refuses_a_dynamic_time_axis_clearly():
    """A circulant W_hh runs the reference loop, which export can only trace at a fixed T: a dynamic T is refused
    naming why and what to do; a dynamic batch and a static T export and run right."""
    m = dense(**STRUCTURES["circulant"]).eval()
    with pytest.raises(ValueError, match="fixed sequence length"):
        torch.export.export(m, (torch.randn(7, 3, 5),), dynamic_shapes=({0: torch.export.Dim("T", min=2, max=99)},))
    program = torch.export.export(m, (torch.randn(7, 3, 5),), dynamic_shapes=({1: torch.export.Dim("B", max=99)},))
    x = torch.randn(7, 5, 5)
    torch.testing.assert_close(program.module()(x)[0], m(x)[0])


def test_func_jvp_matches_finite_differences_of_the_native_layer():
    m = dense(dtype=torch.float64)
    x, v = torch.randn(5, 2, 5, dtype=torch.float64), torch.randn(5, 2, 5, dtype=torch.float64)
    _, tangent = torch.func.jvp(lambda x: m(x)[0], (x,), (v,))
    eps = 1e-6
    with torch.no_grad():
        numeric = (m(x + eps * v)[0] - m(x - eps * v)[0]) / (2 * eps)
    torch.testing.assert_close(tangent, numeric, rtol=1e-6, atol=1e-8)
