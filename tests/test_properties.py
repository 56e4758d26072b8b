"""Property tests: random configurations of lstmkit.LSTM against torch.nn.LSTM (outputs, states, gradients).

`make test` runs the `ci` profile; `HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py` runs thousands.
"""
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from assertions import assert_rel, run_and_grad


@st.composite
def configurations(draw):
    hidden = draw(st.integers(1, 64))
    cfg = dict(
        input_size=draw(st.integers(1, 64)), hidden_size=hidden, num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()),
        proj_size=draw(st.integers(1, hidden - 1)) if hidden > 1 and draw(st.booleans()) else 0)
    T, B = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B)) if draw(st.booleans()) else None
    return cfg, T, B, lengths, draw(st.sampled_from([torch.float32, torch.float64])), draw(st.booleans()), draw(
        st.integers(0, 2**31 - 1))


@given(configurations())
def test_lstm_matches_torch(case):
    cfg, T, B, lengths, dtype, initial_state, seed = case
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(**cfg, dtype=dtype)
    ours = lstmkit.LSTM(**cfg, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    D, P = 2 if cfg["bidirectional"] else 1, cfg["proj_size"] or cfg["hidden_size"]
    x = torch.randn((B, T, cfg["input_size"]) if cfg["batch_first"] else (T, B, cfg["input_size"]), dtype=dtype)
    hx = (torch.randn(cfg["num_layers"] * D, B, P, dtype=dtype),
          torch.randn(cfg["num_layers"] * D, B, cfg["hidden_size"], dtype=dtype)) if initial_state else None
    results = []
    for model in (ref, ours):
        xi = x.clone().requires_grad_()
        hxi = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
        if lengths is not None:
            xi = pack_padded_sequence(xi, torch.tensor(lengths), cfg["batch_first"], enforce_sorted=False)
        results.append(run_and_grad(model, xi, hxi, seed))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    (out_r, h_r, c_r, g_r), (out_o, h_o, c_o, g_o) = results
    for name, a, e in (("output", out_o, out_r), ("h_n", h_o, h_r), ("c_n", c_o, c_r)):
        assert_rel(a, e, tol, name)
    for name in g_r:
        assert_rel(g_o[name], g_r[name], tol, f"grad {name}")
