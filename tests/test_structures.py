"""Weight structures (low-rank, grouped, diagonal, circulant, shared gates): each map against its own dense matrix,
each LSTM against the dense LSTM of its to_dense() (outputs and every gradient), gradcheck, counts and bad options."""
import math

import pytest
import torch

import lstmkit
from lstmkit import maps
from lstmkit.compress import densify
from lstmkit.maps import (CirculantMap, DiagonalMap, GroupedMap, LowRankMap, MixedGroupedMap, SharedGatesMap)
from assertions import assert_rel
from map_checks import assert_same_as_dense, check_protocol, couple_biases, gradcheck_engine

F64 = {"dtype": torch.float64}
I, H, P = 6, 8, 4  # LSTM sizes for the layer tests

MAPS = {  # name -> (map, multiply-adds FlopCounterMode doesn't see)
    "lowrank": lambda: (LowRankMap(6, 12, 3, **F64), 0),
    "lowrank-full": lambda: (LowRankMap(6, 12, 6, **F64), 0),
    "grouped": lambda: (GroupedMap(6, 16, 2, **F64), 0),
    "grouped-projection": lambda: (GroupedMap(8, 4, 2, gates=1, **F64), 0),
    "grouped-mix": lambda: (MixedGroupedMap(6, 16, 2, **F64), 0),
    "diagonal": lambda: (DiagonalMap(5, 20, **F64), 7 * 20),
    "diagonal-bound": lambda: (DiagonalMap(5, 20, bound=0.5, **F64), 7 * 20),
    # circulant: FlopCounterMode misses the in-place baddbmm_ (2F·q·p per row), half the spectral product
    "circulant": lambda: (CirculantMap(8, 16, 4, **F64), 7 * 6 * 2 * 4),
    "circulant-padded": lambda: (CirculantMap(7, 10, 4, **F64), 7 * 6 * 2 * 3),
    "circulant-odd": lambda: (CirculantMap(9, 15, 3, **F64), 7 * 4 * 3 * 5),
    "circulant-1": lambda: (CirculantMap(5, 6, 1, **F64), 7 * 2 * 5 * 6),
    "shared": lambda: (lstmkit.SharedGates(("i", "f", "o")).build(6, 16, **F64), 0),
    "coupled": lambda: (lstmkit.Coupled().build(6, 16, **F64), 0),
}


@pytest.mark.parametrize("name", MAPS)
def test_map_protocol(name):
    torch.manual_seed(0)
    m, other = MAPS[name]()
    check_protocol(m, rows=7, other_flops=other)


def test_flops_closed_forms():
    assert LowRankMap(6, 12, 3).flops(5) == 5 * 3 * (6 + 12)
    assert GroupedMap(6, 16, 2).flops(5) == 5 * 6 * 16 // 2
    assert MixedGroupedMap(6, 16, 2).flops(5) == 5 * (6 * 6 + 6 * 16 // 2)
    assert DiagonalMap(5, 20).flops(5) == 5 * 20
    assert CirculantMap(32, 64, 16).flops(5) == 5 * (2 * 16 * 36 + 36 * 2 * 4 + 4 * 18 * 16)  # DFT, product, inverse
    assert lstmkit.Coupled().build(6, 16).flops(5) == 5 * 12 * 6


# --- equal to dense where the structure is trivial -------------------------------------------------------------

def test_trivial_structures_are_dense():
    torch.manual_seed(0)
    W = torch.randn(16, 6, **F64)
    assert_rel(LowRankMap.from_dense(W, 6).to_dense(), W, 1e-12)  # full rank
    assert_rel(GroupedMap.from_dense(W, 1).to_dense(), W, 0)  # one group
    assert_rel(CirculantMap.from_dense(W, 1).to_dense(), W, 1e-15)  # 1×1 blocks
    x = torch.randn(5, 6, **F64)
    for m in (LowRankMap.from_dense(W, 6), GroupedMap.from_dense(W, 1), CirculantMap.from_dense(W, 1)):
        assert_rel(m(x), x @ W.t(), 1e-12)
    lr = LowRankMap.from_dense(W, 3)  # truncated SVD: the error is the discarded singular values (Eckart-Young)
    S = torch.linalg.svdvals(W)
    assert math.isclose(float((W - lr.to_dense()).detach().norm()), float(S[3:].norm()), rel_tol=1e-10)


# --- through lstmkit.LSTM: the structure == the dense LSTM of its to_dense() ----------------------------------

LAYER_CASES = {  # 2 layers, bidirectional, no projection: compared with lstm.to_torch()
    "lowrank": {"input": lstmkit.LowRank(3), "recurrent": lstmkit.LowRank(3)},
    "lowrank-joint": {"gates": lstmkit.LowRank(5)},
    "grouped": {"input": lstmkit.Grouped(2), "recurrent": lstmkit.Grouped(2)},
    "grouped-mix": {"input": lstmkit.Grouped(2, mix=True), "recurrent": lstmkit.Grouped(4, mix=True)},
    "diagonal": {"recurrent": lstmkit.Diagonal(bound=1.0)},
    "circulant": {"input": lstmkit.Circulant(4), "recurrent": lstmkit.Circulant(4)},  # I=6: padded
    "shared": {"gates": lstmkit.SharedGates(("i", "f", "o"))},
    "coupled": {"gates": lstmkit.Coupled()},
}
PROJ_CASES = {  # proj_size=P, peephole=True: compared with densify(lstm) (lstmkit's dense path keeps peepholes)
    "lowrank": {"recurrent": lstmkit.LowRank(2), "projection": lstmkit.LowRank(2)},
    "lowrank-joint": {"gates": lstmkit.LowRank(3), "projection": lstmkit.LowRank(3)},
    "grouped": {"input": lstmkit.Grouped(2), "recurrent": lstmkit.Grouped(2),
                "projection": lstmkit.Grouped(2, gates=1)},
    "grouped-mix": {"recurrent": lstmkit.Grouped(2, mix=True)},
    "diagonal-input": {"input": lstmkit.Diagonal()},  # I == H; a diagonal W_hh needs P == H, so no projection
    "circulant": {"input": lstmkit.Circulant(4), "recurrent": lstmkit.Circulant(2),
                  "projection": lstmkit.Circulant(3)},
    "shared": {"gates": lstmkit.SharedGates(("i", "f"), ("g", "o"))},
    "coupled": {"gates": lstmkit.Coupled()},
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_lstm_equals_its_dense_torch_lstm(case):
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, **LAYER_CASES[case])
    couple_biases(lstm)
    x = torch.randn(5, 3, I, requires_grad=True)
    hx = (torch.randn(4, 3, H), torch.randn(4, 3, H))
    assert_same_as_dense(lstm, lstm.to_torch(), x, hx)


@pytest.mark.parametrize("case", PROJ_CASES)
def test_projection_and_peepholes_combine(case):
    torch.manual_seed(0)
    L = 1 if case == "diagonal-input" else 2  # a diagonal W_ih needs I == H: only the first layer has it
    lstm = lstmkit.LSTM(H if case == "diagonal-input" else I, H, num_layers=L, proj_size=P, peephole=True,
                        **PROJ_CASES[case])
    torch.nn.init.uniform_(lstm.weight_peephole_l0, -1, 1)
    x = torch.randn(5, 3, lstm.input_size, requires_grad=True)
    hx = (torch.randn(L, 3, P), torch.randn(L, 3, H))
    assert_same_as_dense(lstm, densify(lstm), x, hx)


# --- gradcheck of the hand-written BPTT with structured maps -------------------------------------------------

def gradcheck_cases():
    kw = F64
    return {
        "lowrank": lambda: (LowRankMap(4, 16, 2, **kw), LowRankMap(2, 16, 2, **kw), LowRankMap(4, 2, 1, **kw), True),
        "lowrank-joint": lambda: (*lstmkit.LowRank(3).build_pair(4, 4, 16, **kw), None, False),
        "grouped": lambda: (GroupedMap(4, 16, 2, **kw), GroupedMap(2, 16, 2, **kw),
                            GroupedMap(4, 2, 2, gates=1, **kw), True),
        "grouped-mix": lambda: (torch.randn(16, 4, **kw), MixedGroupedMap(4, 16, 2, **kw), None, False),
        "diagonal": lambda: (torch.randn(16, 3, **kw), DiagonalMap(4, 16, bound=1.0, **kw), None, True),
        "circulant": lambda: (CirculantMap(3, 16, 2, **kw), CirculantMap(2, 16, 2, **kw),
                              CirculantMap(4, 2, 2, **kw), True),
        "shared": lambda: (*lstmkit.SharedGates(("i", "f", "o")).build_pair(3, 4, 16, **kw), None, False),
        "coupled": lambda: (*lstmkit.Coupled().build_pair(3, 4, 16, **kw), None, True),
    }


@pytest.mark.parametrize("case", list(gradcheck_cases()))
def test_gradcheck_through_the_engine(case):
    torch.manual_seed(0)
    w_ih, w_hh, w_hr, peephole = gradcheck_cases()[case]()
    gradcheck_engine(w_ih, w_hh, w_hr, peephole)


# --- structure-specific behaviour ------------------------------------------------------------------------------

def test_joint_lowrank_shares_w2():
    lstm = lstmkit.LSTM(I, H, gates=lstmkit.LowRank(5))
    assert lstm.weight_ih_l0.outer.weight is lstm.weight_hh_l0.outer.weight
    W = torch.cat((lstm.weight_ih_l0.to_dense(), lstm.weight_hh_l0.to_dense()), 1)
    assert torch.linalg.matrix_rank(W.detach()) == 5  # the joint [W_ih, W_hh] has rank r


def test_coupled_gate_is_one_minus_input_gate():
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, gates=lstmkit.Coupled())
    x, h0, c0 = torch.randn(1, 2, I), torch.randn(1, 2, H), torch.randn(1, 2, H)
    d = lstm._direction(0, "")
    a = maps.apply(d["weight_ih"], x[0]) + maps.apply(d["weight_hh"], h0[0]) + d["bias"]  # (B, 4H)
    a_i, a_f, a_g, a_o = a.chunk(4, -1)
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    assert_rel(f, 1 - i, 1e-6, "f = 1 - i")
    _, (h, c) = lstm(x, (h0, c0))
    assert_rel(c[0], (1 - i) * c0[0] + i * g, 1e-6, "c_t = (1 - i) c_{t-1} + i g")
    assert_rel(h[0], o * torch.tanh(c[0]), 1e-6)


def test_shared_gates_share_one_block():
    m = lstmkit.SharedGates(("i", "f", "o")).build(6, 16)
    W = m.to_dense()
    assert m.weight.shape == (8, 6)  # two distinct blocks of H = 4 rows
    assert torch.equal(W[:4], W[4:8]) and torch.equal(W[:4], W[12:]) and not torch.equal(W[:4], W[8:12])


def test_diagonal_bound_holds():
    m = DiagonalMap(4, 16, bound=0.9)
    with torch.no_grad():
        m.weight.mul_(5)
    assert m.diagonals().abs().max() < 0.9
    assert m.to_dense().count_nonzero() == 16  # one entry per row


def test_circulant_from_dense_averages_wrapped_diagonals():
    torch.manual_seed(0)
    out, n, b = 7, 10, 4  # padded: 2 x 3 blocks of 4
    W = torch.randn(out, n, **F64)
    sums, counts = torch.zeros(2, 3, b, **F64), torch.zeros(2, 3, b, **F64)
    for i in range(out):
        for j in range(n):
            sums[i // b, j // b, (i - j) % b] += W[i, j]
            counts[i // b, j // b, (i - j) % b] += 1
    m = CirculantMap.from_dense(W, b)
    assert_rel(m.weight, sums / counts.clamp_min(1), 1e-12)
    assert m.weight.shape == (2, 3, b) and lstmkit.count_parameters(m) == 2 * 3 * b


def test_circulant_cached_spectrum_follows_the_weights():
    torch.manual_seed(0)
    m = CirculantMap(8, 16, 4)
    x = torch.randn(3, 8)
    with torch.no_grad():
        m(x)  # fills the cache
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m(x).sum().backward()
    opt.step()  # an in-place update of the weight
    with torch.no_grad():
        assert_rel(m(x), x @ m.to_dense().t(), 1e-5)
        assert_rel(m.transpose(torch.ones(3, 16)), torch.ones(3, 16) @ m.to_dense(), 1e-5)


# --- parameter counts ------------------------------------------------------------------------------------------

def _count(I, H, P=0, r=None, k=None, b=None):
    return {
        "lowrank": r * (I + 4 * H) + r * (H + 4 * H),
        "lowrank-joint": r * (I + H) + 4 * H * r,
        "grouped": (4 * H * I + 4 * H * H) // k,
        "grouped-mix": (4 * H * I + 4 * H * H) // k + I * I + H * H,
        "diagonal": 4 * H * I + 4 * H,
        "circulant": math.ceil(4 * H / b) * (math.ceil(I / b) + math.ceil(H / b)) * b,
        "shared": 2 * H * (I + H),
        "coupled": 3 * H * (I + H),
    }


@pytest.mark.parametrize("case,spec", [
    ("lowrank", {"input": lstmkit.LowRank(3), "recurrent": lstmkit.LowRank(3)}),
    ("lowrank-joint", {"gates": lstmkit.LowRank(3)}),
    ("grouped", {"input": lstmkit.Grouped(2), "recurrent": lstmkit.Grouped(2)}),
    ("grouped-mix", {"input": lstmkit.Grouped(2, mix=True), "recurrent": lstmkit.Grouped(2, mix=True)}),
    ("diagonal", {"recurrent": lstmkit.Diagonal()}),
    ("circulant", {"input": lstmkit.Circulant(4), "recurrent": lstmkit.Circulant(4)}),
    ("shared", {"gates": lstmkit.SharedGates(("i", "f", "o"))}),
    ("coupled", {"gates": lstmkit.Coupled()}),
])
def test_parameter_counts(case, spec):
    lstm = lstmkit.LSTM(I, H, **spec)
    biases = 2 * 4 * H
    assert lstmkit.count_parameters(lstm) == _count(I, H, r=3, k=2, b=4)[case] + biases
    proj = lstmkit.LSTM(I, H, proj_size=P, peephole=True, input=lstmkit.LowRank(3),
                        recurrent=lstmkit.Circulant(2), projection=lstmkit.Grouped(2, gates=1))
    assert lstmkit.count_parameters(proj) == (3 * (I + 4 * H) + (4 * H // 2) * (P // 2) * 2 + H * P // 2
                                              + biases + 3 * H)
    assert lstmkit.count_parameters(lstmkit.LSTM(I, H)) == sum(p.numel() for p in torch.nn.LSTM(I, H).parameters())


# --- bad options -----------------------------------------------------------------------------------------------

# (what is wrong, the call, the exception, a regex the message must match)
BAD_OPTIONS = [
    ("LowRank rank zero", lambda: lstmkit.LowRank(0), ValueError, "rank must be a positive int, got 0"),
    ("LowRank rank above the matrix's", lambda: lstmkit.LSTM(I, H, recurrent=lstmkit.LowRank(9)), ValueError,
     r"rank must be in \[1, .* = \[1, 8\].*got 9"),
    ("joint LowRank rank above [W_ih, W_hh]'s", lambda: lstmkit.LSTM(I, H, gates=lstmkit.LowRank(15)), ValueError,
     r"\[1, 14\].*got 15"),
    ("Grouped groups zero", lambda: lstmkit.Grouped(0), ValueError, "groups must be a positive int, got 0"),
    ("Grouped groups not dividing hidden_size", lambda: lstmkit.LSTM(I, H, recurrent=lstmkit.Grouped(3)), ValueError,
     r"groups must divide out_features / gates=8, got 3"),
    ("Grouped groups not dividing input_size", lambda: lstmkit.LSTM(I, H, input=lstmkit.Grouped(4)), ValueError,
     r"groups must divide in_features=6, got 4"),
    ("Circulant block zero", lambda: lstmkit.Circulant(0), ValueError, "block must be a positive int, got 0"),
    ("Circulant block negative", lambda: lstmkit.Circulant(-16), ValueError, "block must be a positive int, got -16"),
    ("recurrent Diagonal with a projection", lambda: lstmkit.LSTM(I, H, proj_size=P, recurrent=lstmkit.Diagonal()),
     ValueError, r"expected out_features=16 for in_features=4, got out_features=32"),
    ("input Diagonal with input_size != hidden_size", lambda: lstmkit.LSTM(I, H, input=lstmkit.Diagonal()),
     ValueError, r"expected out_features=24 .* got out_features=32"),
    ("Diagonal bound zero", lambda: lstmkit.Diagonal(bound=0), ValueError,
     "bound must be a positive float or None, got 0"),
    ("SharedGates with an unknown gate", lambda: lstmkit.SharedGates(("i", "x")), ValueError,
     "SharedGates takes sets of at least two of the gates"),
    ("SharedGates with a gate in two sets", lambda: lstmkit.SharedGates(("i", "f"), ("f", "o")), ValueError,
     "each gate in one set"),
    ("Coupled as the projection", lambda: lstmkit.LSTM(I, H, proj_size=3, projection=lstmkit.Coupled()), ValueError,
     r"must divide out_features=3"),
]


@pytest.mark.parametrize("what,call,exc,match", BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_bad_options(what, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --- the benchmark study runs ----------------------------------------------------------------------------------

def test_structures_study_runs(tmp_path):
    import json

    from lstmkit.cli import main
    assert main(["bench", "--quick", "--study", "structures", "--out", str(tmp_path / "benchmarks")]) == 0
    rows = json.loads((tmp_path / "benchmarks" / "structures.json").read_text())["rows"]
    assert {r["structure"] for r in rows} >= {"lowrank", "grouped", "diagonal", "circulant", "coupled"}
    assert all(r["agrees"] and r["training"]["wall"]["ratio"] > 0 and r["training"]["cpu1"]["ratio"] > 0 for r in rows)
    from lstmkit.engine import native
    engines = {r["structure"]: r["engine"] for r in rows}
    # grouped: groups of 4 units at the quick shape's H = 16, not whole vectors, so fused
    native_ones = {"plain", "lowrank", "lowrank-joint", "diagonal"} if native.available() else set()
    assert {name for name, e in engines.items() if e == "native"} == native_ones  # dense and floor: impl='fused'
    assert engines["layer-norm"] == "fused"  # the native loop has no layer norm
    assert "<!-- bench:structures -->" in (tmp_path / "BENCHMARKS.md").read_text()
