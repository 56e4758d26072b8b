"""convert: a trained dense LSTM to structured weights by from_dense; the reported error predicts the output error."""
import pytest
import torch

import lstmkit
from lstmkit import maps
from lstmkit.compress import convert, densify
from assertions import assert_rel

I, H, P = 8, 16, 8
SPECS = {  # name -> (convert keywords, whether the model has a projection)
    "lowrank": ({"input": lstmkit.LowRank(4), "recurrent": lstmkit.LowRank(4)}, False),
    "lowrank-joint": ({"gates": lstmkit.LowRank(6)}, False),
    "grouped": ({"input": lstmkit.Grouped(2), "recurrent": lstmkit.Grouped(4)}, False),
    "grouped-mix": ({"input": lstmkit.Grouped(2, mix=True), "recurrent": lstmkit.Grouped(2, mix=True)}, False),
    "diagonal": ({"recurrent": lstmkit.Diagonal()}, False),
    "circulant": ({"input": lstmkit.Circulant(4), "recurrent": lstmkit.Circulant(8)}, False),
    "shared": ({"gates": lstmkit.SharedGates(("i", "f", "o"))}, False),
    "coupled": ({"gates": lstmkit.Coupled()}, False),
    "projection-lowrank": ({"recurrent": lstmkit.LowRank(4), "projection": lstmkit.LowRank(3)}, True),
    "projection-grouped": ({"projection": lstmkit.Grouped(2, gates=1)}, True),
    "projection-circulant": ({"input": lstmkit.Circulant(4), "projection": lstmkit.Circulant(4)}, True),
}


def train(proj: bool) -> lstmkit.LSTM:
    """A tiny dense LSTM trained a few Adam steps to output the running mean of its inputs (fixed seed)."""
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, proj_size=P if proj else 0, peephole=True)
    head = torch.nn.Linear(P if proj else H, I)
    x = torch.randn(12, 16, I)
    target = x.cumsum(0) / torch.arange(1, 13).view(-1, 1, 1)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        (head(lstm(x)[0]) - target).square().mean().backward()
        opt.step()
    return lstm


@pytest.fixture(scope="module")
def trained():
    return {proj: train(proj) for proj in (False, True)}


@pytest.mark.parametrize("case", SPECS)
def test_reported_error_predicts_the_output_error(case, trained):
    """E||(W − Ŵ)x||² = ||W − Ŵ||_F² for x ~ N(0, I): the mean over 20000 samples (relative standard error
    ≤ √(2/20000) = 1%) is within 5% of ||W − Ŵ||_F² = out · output_rms², with Ŵ applied by the map itself."""
    kwargs, proj = SPECS[case]
    dense = trained[proj]
    new, report = convert(dense, **kwargs)
    gen = torch.Generator().manual_seed(0)
    assert len(report.matrices) == (3 if proj else 2)
    for e in report.matrices:
        W, m = getattr(dense, e.name).detach(), getattr(new, e.name)
        assert e.shape == tuple(W.shape)
        if e.structure == "dense":
            assert e.rel_error == 0 and torch.equal(m, W)
            continue
        assert 0 < e.rel_error < 1
        x = torch.randn(20000, W.shape[1], generator=gen)
        with torch.no_grad():
            diff = (m(x) - x @ W.t()).square().sum(1).mean()
            signal = (x @ W.t()).square().sum(1).mean()
        predicted = W.shape[0] * e.output_rms ** 2
        assert abs(diff / predicted - 1) < 0.05, (e, float(diff), predicted)
        assert abs((diff / signal).sqrt() / e.rel_error - 1) < 0.05
        assert e.params == sum(t.numel() for t in maps.tensors(m))
    assert report.params_before == lstmkit.count_parameters(dense)
    assert report.params_after == lstmkit.count_parameters(new) < report.params_before
    assert "weight_hh_l0" in str(report)


def test_exact_structures_convert_exactly(trained):
    """Full-rank low-rank, one group and 1×1 circulant blocks keep the trained function; biases and peepholes
    are copied."""
    dense = trained[True]
    x = torch.randn(7, 3, I)
    for kwargs in ({"input": lstmkit.LowRank(I), "recurrent": lstmkit.LowRank(P), "projection": lstmkit.LowRank(P)},
                   {"gates": lstmkit.LowRank(I + P)},
                   {"input": lstmkit.Grouped(1), "recurrent": lstmkit.Grouped(1),
                    "projection": lstmkit.Grouped(1, gates=1)},
                   {"input": lstmkit.Circulant(1), "recurrent": lstmkit.Circulant(1),
                    "projection": lstmkit.Circulant(1)}):
        new, report = convert(dense, **kwargs)
        assert max(e.rel_error for e in report.matrices) < 1e-5
        assert torch.equal(new.bias_ih_l0, dense.bias_ih_l0) and torch.equal(new.weight_peephole_l0,
                                                                              dense.weight_peephole_l0)
        with torch.no_grad():
            assert_rel(new(x)[0], dense(x)[0], 1e-5)


def test_coupled_conversion_stores_coupled_biases(trained):
    new, _ = convert(trained[False], gates=lstmkit.Coupled())
    for b in (new.bias_ih_l0, new.bias_hh_l0):
        b_i, b_f, _, _ = b.detach().chunk(4)
        assert torch.equal(b_f, -b_i)
        assert_rel(new.weight_ih_l0.gate_bias(b), b, 1e-7)  # stored as used, so to_torch() sees the same bias


def test_convert_takes_a_torch_lstm_and_densify_inverts(trained):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True)
    new, report = convert(ref, recurrent=lstmkit.LowRank(4))
    assert len(report.matrices) == 8 and isinstance(new.weight_hh_l1_reverse, maps.LowRankMap)
    x = torch.randn(5, 2, I)
    with torch.no_grad():
        assert_rel(densify(new)(x)[0], new(x)[0], 1e-5)
        assert_rel(new.to_torch()(x)[0], new(x)[0], 1e-5)


FITS = {  # spec, (in, out): from_dense is a least-squares fit, and exact on a matrix of its own kind
    "lowrank": (lstmkit.LowRank(3), (6, 16)),
    "grouped": (lstmkit.Grouped(2), (6, 16)),
    "grouped-mix": (lstmkit.Grouped(2, mix=True), (6, 16)),
    "diagonal": (lstmkit.Diagonal(), (4, 16)),
    "circulant": (lstmkit.Circulant(4), (7, 18)),
    "shared": (lstmkit.SharedGates(("i", "f", "o")), (6, 16)),
    "coupled": (lstmkit.Coupled(), (6, 16)),
    "conv": (lstmkit.Conv(3, 3, 4), (2 * 12, 8 * 12)),
}


@pytest.mark.parametrize("case", FITS)
def test_from_dense_is_least_squares(case):
    spec, (n_in, n_out) = FITS[case]
    torch.manual_seed(0)
    W = torch.randn(n_out, n_in, dtype=torch.float64)
    m = spec.from_dense(W)
    params = list(m.parameters())
    loss = (m.to_dense() - W).square().sum()  # stationary at the least-squares fit
    for g in torch.autograd.grad(loss, params):
        assert g.abs().max() < 1e-8 * max(1.0, loss.item()), case
    own = spec.build(n_in, n_out, dtype=torch.float64).to_dense().detach()  # a matrix of the structure's kind
    assert_rel(spec.from_dense(own).to_dense(), own, 1e-8, case)
