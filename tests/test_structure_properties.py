"""Property tests: random structured LSTMs against the dense LSTM of their to_dense() (outputs, states, gradients).

Hypothesis draws the structure of W_ih and W_hh (LowRank, Grouped with or without mixing, Diagonal with or
without a bound, Circulant with blocks that divide the sizes or are padded) or of the joint gates (LowRank,
SharedGates, Coupled), a projection with or without its own structure, peepholes, 1 or 2 layers, either
direction, packed lengths (down to 1, and batches of 1), given initial states, float32 or float64. The dense
LSTM is lstmkit.compress.densify; each structured parameter's gradient must be the dense gradient pulled back
through to_dense(). `make test` runs the `ci` profile; HYPOTHESIS_PROFILE=long runs thousands.
"""
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.compress import densify
from map_checks import assert_same_as_dense

SHARED_SETS = [(("i", "f", "o"),), (("i", "f"), ("g", "o")), (("i", "f", "g", "o"),), (("f", "o"),)]


def divisors(*sizes: int) -> list[int]:
    return [k for k in range(1, min(sizes) + 1) if all(n % k == 0 for n in sizes)]


@st.composite
def matrix_structure(draw, ins: list[int], out: int, gates: int = 4, diagonal: bool = False):
    """A structure for the (gates·out, in) matrices of every layer (`ins`: their in_features); None: dense."""
    kinds = ["dense", "lowrank", "grouped", "circulant"] + ["diagonal"] * 2 * diagonal
    kind = draw(st.sampled_from(kinds))
    if kind == "lowrank":
        return lstmkit.LowRank(draw(st.integers(1, min(*ins, gates * out))))
    if kind == "grouped":
        return lstmkit.Grouped(draw(st.sampled_from(divisors(*ins, out))), mix=draw(st.booleans()), gates=gates)
    if kind == "circulant":
        return lstmkit.Circulant(draw(st.integers(1, max(*ins, out))))  # padded where the block does not divide
    if kind == "diagonal":
        return lstmkit.Diagonal(bound=draw(st.sampled_from([None, 0.5, 2.0])))
    return None


@st.composite
def structured_lstms(draw):
    """(LSTM keyword arguments, input_size, hidden_size)."""
    H = draw(st.sampled_from([2, 4, 6, 8]))
    I, L, D = draw(st.sampled_from([1, 2, 3, 4, 6, 8, H])), draw(st.integers(1, 2)), 1 + draw(st.booleans())
    P = draw(st.integers(1, H - 1)) if draw(st.booleans()) else 0
    out = P or H
    ins = [I] + [D * out] * (L - 1)  # every layer's input size
    kw = dict(num_layers=L, bidirectional=D == 2, proj_size=P, peephole=draw(st.booleans()))
    joint = draw(st.sampled_from(["no"] * 3 + ["lowrank", "shared", "coupled"]))  # no: input=, recurrent=
    if joint == "lowrank":
        kw["gates"] = lstmkit.LowRank(draw(st.integers(1, min(min(ins) + out, 4 * H))))
    elif joint == "shared":
        kw["gates"] = lstmkit.SharedGates(*draw(st.sampled_from(SHARED_SETS)), tie_bias=draw(st.booleans()))
    elif joint == "coupled":
        kw["gates"] = lstmkit.Coupled()
    else:
        kw["input"] = draw(matrix_structure(ins, H, diagonal=ins == [H]))  # a diagonal W_ih needs I == H
        kw["recurrent"] = draw(matrix_structure([out], H, diagonal=not P))  # ... a diagonal W_hh needs P == H
    if P:
        kw["projection"] = draw(matrix_structure([H], P, gates=1))
    return kw, I, H


@given(structured_lstms(), st.integers(1, 5), st.integers(1, 3), st.booleans(), st.booleans(),
       st.sampled_from([torch.float32, torch.float64]), st.data())
def test_structure_equals_its_dense_lstm(case, T, B, packed, initial_state, dtype, data):
    kw, I, H = case
    torch.manual_seed(data.draw(st.integers(0, 2**31 - 1), "seed"))
    lstm = lstmkit.LSTM(I, H, dtype=dtype, **kw)
    L, D, P = lstm.num_layers, 1 + lstm.bidirectional, lstm.proj_size or H
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    if packed:
        lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B), "lengths")
        x = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    hx = (torch.randn(L * D, B, P, dtype=dtype, requires_grad=True),
          torch.randn(L * D, B, H, dtype=dtype, requires_grad=True)) if initial_state else None
    assert_same_as_dense(lstm, densify(lstm), x, hx, 1e-4 if dtype == torch.float32 else 1e-10)
