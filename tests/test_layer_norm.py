"""Layer-normalized LSTM (issue 15): the engine equals the equations written out naively, in float64, for outputs,
final states and every gradient; gradcheck of the hand-written backward; state_dict; refusals."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine.regularized_bptt import regularized_fused_layer
from lstmkit.engine.regularized_cell import Norm, Regularization
from assertions import assert_rel, run_and_grad
from naive_regularized import Naive

I, H, P, T, B = 3, 5, 2, 6, 4
F64 = torch.float64


def randomized(lstm, seed=0):
    """Every parameter (the LN gains and biases too) drawn N(0, 0.5²), so no term of the equations hides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lstm.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return lstm


def inputs(L, D, Pr, seed=1):
    gen = torch.Generator().manual_seed(seed)
    t = lambda *s: torch.randn(*s, generator=gen, dtype=F64).requires_grad_()  # noqa: E731
    return t(T, B, I), (t(L * D, B, Pr), t(L * D, B, H))


def assert_same(actual, expected, tol=1e-10):
    out, h, c, grads = actual
    out_e, h_e, c_e, grads_e = expected
    assert_rel(out, out_e, tol, "output")
    assert_rel(h, h_e, tol, "h_n")
    assert_rel(c, c_e, tol, "c_n")
    for name, g in grads.items():
        assert_rel(g, grads_e[name if name in ("input", "h0", "c0") else "m." + name], tol, f"d{name}")


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("layers,bidirectional,proj", list(itertools.product([1, 2], [False, True], [0, P])))
def test_equations(impl, layers, bidirectional, proj):
    lstm = randomized(lstmkit.LSTM(I, H, layers, bidirectional=bidirectional, proj_size=proj, dtype=F64,
                                   layer_norm=True, impl=impl))
    x, hx = inputs(layers, 2 if bidirectional else 1, proj or H)
    assert_same(run_and_grad(lstm, x, hx), run_and_grad(Naive(lstm), x, hx))


def test_parameters_and_init():
    lstm = lstmkit.LSTM(I, H, 2, bidirectional=True, layer_norm=True)
    names = {n for n, _ in lstm.named_parameters()}
    for k, sfx, part in itertools.product(range(2), ["", "_reverse"], ["weight", "bias"]):
        for which, size in (("ih", 4 * H), ("hh", 4 * H), ("c", H)):
            name = f"layer_norm_{which}_l{k}{sfx}.{part}"
            assert name in names
            p = lstm.get_parameter(name)
            assert p.shape == (size,) and torch.equal(p, torch.ones(size) if part == "weight" else torch.zeros(size))
    assert lstm.layer_norm_c_l0.eps == 1e-5


def test_state_dict_round_trip():
    lstm = randomized(lstmkit.LSTM(I, H, 2, proj_size=P, layer_norm=True, cell_zoneout=0.2, hidden_zoneout=0.1))
    copy = lstmkit.LSTM(I, H, 2, proj_size=P, layer_norm=True, cell_zoneout=0.2, hidden_zoneout=0.1)
    copy.load_state_dict(lstm.state_dict())
    lstm.eval(), copy.eval()
    x = torch.randn(T, B, I)
    assert torch.equal(lstm(x)[0], copy(x)[0])
    with pytest.raises(RuntimeError, match="layer_norm_ih_l0"):  # a plain LSTM lacks the LN keys
        lstmkit.LSTM(I, H, 2, proj_size=P).load_state_dict(lstm.state_dict())


def test_packed_equals_each_sequence_alone():
    lstm = randomized(lstmkit.LSTM(I, H, 2, bidirectional=True, dtype=F64, layer_norm=True))
    lengths = [T, 4, 1]
    x = torch.randn(T, len(lengths), I, dtype=F64)
    out = lstm(pack_padded_sequence(x, torch.tensor(lengths)))[0]
    h0 = (torch.zeros(4, 1, H, dtype=F64),) * 2
    naive = Naive(lstm)
    for b, n in enumerate(lengths):
        expected = naive(x[:n, b:b + 1], h0)[0][:, 0]  # (n, 2H)
        rows = [sum(sum(1 for m in lengths if m > s) for s in range(t)) + b for t in range(n)]  # packed row of (t, b)
        assert_rel(out.data[rows], expected, 1e-10, f"sequence {b}")


@pytest.mark.parametrize("proj,reverse,zoned", list(itertools.product([False, True], repeat=3)))
def test_gradcheck_fused(proj, reverse, zoned):
    """float64 gradcheck of the hand-written backward, packed rows, every LN parameter and weight; with fixed
    zoneout masks (training) where `zoned`."""
    gen = torch.Generator().manual_seed(0)
    batch_sizes, Pr = [3, 3, 2, 1], P if proj else H
    N = sum(batch_sizes)
    t = lambda *s: torch.randn(*s, generator=gen, dtype=F64).requires_grad_()  # noqa: E731
    args = [t(N, I), t(3, Pr), t(3, H), t(4 * H, I), t(4 * H, Pr), t(4 * H), t(P, H) if proj else None,
            *(t(n) for n in (4 * H, 4 * H, 4 * H, 4 * H, H, H))]
    keep_c = torch.bernoulli(torch.full((N, H), 0.4, dtype=F64), generator=gen) if zoned else None
    keep_h = torch.bernoulli(torch.full((N, Pr), 0.4, dtype=F64), generator=gen) if zoned else None

    def f(x, h0, c0, w_ih, w_hh, b, w_hr, *ln):
        norms = [Norm(ln[2 * j], ln[2 * j + 1], 1e-5) for j in range(3)]
        reg = Regularization(*norms, keep_c, keep_h)
        return regularized_fused_layer(x, batch_sizes, h0, c0, w_ih, w_hh, b, None, w_hr, reverse, regularization=reg)

    assert torch.autograd.gradcheck(f, args)


def test_structure_runs_the_same_equations():
    """A low-rank W_hh (a map) under layer norm: the engine equals the naive equations on its to_dense()."""
    lstm = randomized(lstmkit.LSTM(I, H, dtype=F64, layer_norm=True, recurrent=lstmkit.LowRank(rank=2)))
    dense = lstmkit.LSTM(I, H, dtype=F64, layer_norm=True)
    with torch.no_grad():
        for name, p in dense.named_parameters():
            p.copy_(lstm.weight_hh_l0.to_dense() if name == "weight_hh_l0" else lstm.get_parameter(name))
    x, hx = inputs(1, 1, H)
    out, (h, c) = lstm(x, hx)
    out_e, (h_e, c_e) = Naive(dense)(x, hx)
    assert_rel(out, out_e, 1e-10, "output")
    assert_rel(c, c_e, 1e-10, "c_n")
    reference = lstmkit.LSTM(I, H, dtype=F64, layer_norm=True, recurrent=lstmkit.LowRank(rank=2), impl="reference")
    reference.load_state_dict(lstm.state_dict())
    assert_same(run_and_grad(lstm, x, hx), _prefixed(run_and_grad(reference, x, hx)))


def _prefixed(result):
    out, h, c, grads = result
    return out, h, c, {(k if k in ("input", "h0", "c0") else "m." + k): v for k, v in grads.items()}


def test_refusals():
    lstm = lstmkit.LSTM(I, H, layer_norm=True)
    with pytest.raises(ValueError, match="no layer norm or zoneout.*layer_norm=True"):
        lstm.to_torch()
    with pytest.raises(ValueError, match="impl='auto', 'fused' or 'reference'.*impl='native'"):
        lstmkit.LSTM(I, H, layer_norm=True, impl="native")
    with pytest.raises(ValueError, match="impl='auto', 'fused' or 'reference'.*impl='aten'"):
        lstmkit.LSTM(I, H, layer_norm=True, impl="aten")
    with pytest.raises(ValueError, match="without peepholes.*peephole=True"):
        lstmkit.LSTM(I, H, layer_norm=True, peephole=True)
    with pytest.raises(RuntimeError, match="aten::lstm.*layer_norm=True"):
        torch.jit.trace(lstm, torch.randn(T, B, I))
    with pytest.raises(RuntimeError, match="first derivative only"):  # the fused backward has no graph of its own
        x = torch.randn(T, B, I, requires_grad=True)
        torch.autograd.grad(lstm(x)[0].sum(), x, create_graph=True)


def test_double_backward_on_the_reference_loop():
    lstm = randomized(lstmkit.LSTM(I, H, dtype=F64, layer_norm=True, impl="reference"))
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: lstm(x)[0], (x,))


@pytest.mark.parametrize("train", [False, True])
def test_compile_and_func_equal_eager(train):
    """torch.compile (aot_eager), torch.export and torch.func.grad run the reference loop: the same numbers."""
    lstm = randomized(lstmkit.LSTM(I, H, dtype=F64, layer_norm=True, hidden_zoneout=0.3)).train(train)
    lstm.zoneout_mask = lambda rows, width, p, like: (torch.arange(rows * width, dtype=like.dtype)  # fixed masks
                                                      .view(rows, width) % 3 == 0).to(like.dtype)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    eager = lstm(x)[0]
    g_eager, = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(lstm, backend="aot_eager", fullgraph=True)(x)[0]
    g_compiled, = torch.autograd.grad(compiled.sum(), x)
    assert_rel(compiled, eager, 1e-12, "compiled output")
    assert_rel(g_compiled, g_eager, 1e-12, "compiled dx")
    params = dict(lstm.named_parameters())
    g_func = torch.func.grad(lambda x: torch.func.functional_call(lstm, params, (x,))[0].sum())(x.detach())
    assert_rel(g_func, g_eager, 1e-12, "torch.func.grad dx")
    if not train:
        exported = torch.export.export(lstm, (x.detach(),)).module()
        assert_rel(exported(x.detach())[0], eager, 1e-12, "exported output")
