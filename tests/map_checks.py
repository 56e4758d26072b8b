"""Checks for structured maps: the protocol against the map's own dense matrix, an LSTM against the dense LSTM of its
to_dense(), and gradcheck through the engine."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

from lstmkit import maps
from lstmkit.engine import fused_layer
from assertions import assert_rel, run_and_grad


def check_protocol(m: maps.LinearMap, rows: int = 7, tol: float = 1e-10, other_flops: int = 0) -> None:
    """float64 map: forward and transpose are W and Wᵀ of to_dense(), transpose is the adjoint, the closed-form
    weight_grads equal autograd's, and flops(rows) is the products' multiply-adds FlopCounterMode sees, plus
    `other_flops` for work it does not count (FFTs, elementwise products)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, m.in_features, generator=gen, dtype=torch.float64)
    g = torch.randn(rows, m.out_features, generator=gen, dtype=torch.float64)
    W = m.to_dense().detach()
    assert W.shape == (m.out_features, m.in_features)
    assert_rel(m(x), x @ W.t(), tol, "forward")
    assert_rel(m(x.view(rows, 1, -1)), (x @ W.t()).view(rows, 1, -1), tol, "forward, leading dims")
    assert_rel(m.transpose(g), g @ W, tol, "transpose")
    with torch.no_grad():
        assert abs(float((m(x) * g).sum() - (x * m.transpose(g)).sum())) < tol * float(W.abs().sum() + 1), "adjoint"
    closed = m.weight_grads(x, g)
    generic = maps.LinearMap.weight_grads(m, x, g)  # autograd of sum(m(x) * g)
    assert len(closed) == len(generic) == len(list(m.parameters()))
    for a, e, p in zip(closed, generic, m.parameters()):
        assert a.shape == p.shape
        assert_rel(a, e, tol, "weight_grads")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        m(x)
    assert m.flops(rows) == counter.get_total_flops() // 2 + other_flops


def couple_biases(lstm):
    """Store the biases as the maps tie them (for Coupled: b_f = -b_i), so that to_torch() sees the used bias."""
    with torch.no_grad():
        for names in lstm._weight_names():
            for n in (n for n in names if n.startswith("bias")):
                for w in (getattr(lstm, names[0]), getattr(lstm, names[1])):
                    if hasattr(w, "gate_bias"):
                        getattr(lstm, n).copy_(w.gate_bias(getattr(lstm, n)))


def _fresh(t):
    """A new leaf holding `t`'s values (a PackedSequence's data), requiring grad where `t` does."""
    if isinstance(t, PackedSequence):
        return PackedSequence(_fresh(t.data), t.batch_sizes, t.sorted_indices, t.unsorted_indices)
    return t.detach().clone().requires_grad_(t.requires_grad)


def assert_same_as_dense(lstm, dense, x, hx, tol=1e-5):
    """Outputs, states and the gradients of the input (and of h_0, c_0 where they require grad) equal; every
    structured parameter's gradient equals the dense gradient pulled back through to_dense() (and through
    gate_bias for the biases). `x` may be a PackedSequence."""
    out, h, c, grads = run_and_grad(lstm, x, hx)
    out_d, h_d, c_d, grads_d = run_and_grad(dense, _fresh(x), None if hx is None else tuple(map(_fresh, hx)))
    for a, e, what in ((out, out_d, "output"), (h, h_d, "h_n"), (c, c_d, "c_n")):
        assert_rel(a, e, tol, what)
    for leaf in ("input", "h0", "c0"):
        assert (leaf in grads) == (leaf in grads_d), leaf
        if leaf in grads:
            assert_rel(grads[leaf], grads_d[leaf], tol, f"grad {leaf}")
    expected = {}  # parameter -> pulled-back gradient (a shared W2 collects from both maps)
    for n, m in [*lstm._parameters.items(), *lstm._modules.items()]:
        if isinstance(m, maps.LinearMap):
            pulled = torch.autograd.grad(m.to_dense(), list(m.parameters()), grads_d[n])
            for p, g in zip(m.parameters(), pulled):
                expected[p] = expected.get(p, 0) + g
        elif n.startswith("bias"):
            b = tied = m.detach().requires_grad_()
            for w in (getattr(lstm, "weight_ih" + n[7:]), getattr(lstm, "weight_hh" + n[7:])):  # n[7:]: "_l{k}..."
                tied = w.gate_bias(tied) if hasattr(w, "gate_bias") else tied
            expected[m] = torch.autograd.grad(tied, b, grads_d[n])[0]
        else:
            expected[m] = grads_d[n]
    params = dict(lstm.named_parameters())
    assert set(map(id, expected)) == set(map(id, params.values()))
    for name, p in params.items():
        assert_rel(grads[name], expected[p], tol, f"grad {name}")


class Layer(nn.Module):
    """One layer and direction of the engine with maps as submodules, so gradcheck can swap their parameters."""

    def __init__(self, weight_ih, weight_hh, weight_hr=None):
        super().__init__()
        self.weight_ih, self.weight_hh, self.weight_hr = weight_ih, weight_hh, weight_hr

    def forward(self, x, h0, c0, bias, peephole, batch_sizes):
        return fused_layer(x, batch_sizes, h0, c0, self.weight_ih, self.weight_hh, bias, peephole, self.weight_hr)


def gradcheck_engine(weight_ih, weight_hh, weight_hr=None, peephole: bool = False,
                     batch_sizes: tuple[int, ...] = (2, 2, 1), fast_mode: bool = False) -> None:
    """float64 torch.autograd.gradcheck of the fused engine (hand-written BPTT) wrt the input, the states, the bias,
    the peepholes and every map parameter, via torch.func.functional_call. `fast_mode` checks random
    projections of the Jacobian instead of every entry (for maps with many parameters)."""
    layer = Layer(weight_ih, weight_hh, weight_hr)
    names, params = zip(*layer.named_parameters())
    I, (P, G) = maps.features(weight_ih)[0], maps.features(weight_hh)
    H = G // 4
    gen = torch.Generator().manual_seed(1)

    def t(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    B, N = batch_sizes[0], sum(batch_sizes)
    inputs = (t(N, I), t(B, P), t(B, H), t(4 * H), t(3, H) if peephole else None)

    def run(x, h0, c0, bias, w_c, *weights):
        return torch.func.functional_call(layer, dict(zip(names, weights)), (x, h0, c0, bias, w_c, list(batch_sizes)))

    flat = tuple(p.detach().clone().requires_grad_() for p in params)
    assert torch.autograd.gradcheck(run, (*inputs, *flat), eps=1e-6, atol=1e-6, fast_mode=fast_mode)
