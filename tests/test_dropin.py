"""The details a torch.nn.LSTM user hits, side by side with torch (cases after PyTorch's test_nn.py RNN tests:
argument checks, wrong hidden sizes, initial states, projections, variable sequences, empty batches)."""
import warnings

import pytest
import torch
from torch.nn.utils import rnn

import lstmkit

I, H, T, B = 4, 5, 3, 2


def both(**kw):
    """(torch.nn.LSTM, lstmkit.LSTM) with the same weights."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.LSTM(I, H, **kw)
        return ref, lstmkit.LSTM.from_torch(ref)


def cells():
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(I, H)
    cell = lstmkit.LSTMCell(I, H)
    cell.load_state_dict(ref.state_dict())
    return ref, cell


def states(LD, batch, P=H, **kw):
    return torch.zeros(LD, batch, P, **kw), torch.zeros(LD, batch, H, **kw)


def lstm_case(kw, x, hx=None):
    """A call for each of (torch, lstmkit): module built with kw, run on x() and hx()."""
    return lambda m: both(**kw)[m](x(), None if hx is None else hx())


# (what, call(m) with m = 0 for torch, 1 for lstmkit, the exception torch raises, a regex lstmkit's message matches)
CASES = [
    ("input of the wrong feature size", lstm_case({}, lambda: torch.randn(T, B, I + 1)), RuntimeError,
     r"input.size\(-1\) must equal input_size=4, got 5"),
    ("rank 4 input", lstm_case({}, lambda: torch.randn(T, B, 1, I)), ValueError, "rank 2 or 3.*got rank 4"),
    ("float64 input to float32 weights", lstm_case({}, lambda: torch.randn(T, B, I, dtype=torch.float64)),
     ValueError, "input has dtype torch.float64 but the weights have dtype torch.float32"),
    ("zero time steps", lstm_case({}, lambda: torch.randn(0, B, I)), RuntimeError, "at least one time step"),
    ("zero time steps, batch_first", lstm_case({"batch_first": True}, lambda: torch.randn(B, 0, I)), RuntimeError,
     r"at least one time step, got shape \(2, 0, 4\)"),
    ("zero time steps, unbatched", lstm_case({}, lambda: torch.randn(0, I)), RuntimeError, "at least one time step"),
    ("input on another device", lstm_case({}, lambda: torch.randn(T, B, I, device="meta")), RuntimeError,
     "input is on device meta but the weights are on cpu"),
    ("h_0 of the wrong batch", lstm_case({}, lambda: torch.randn(T, B, I),
                                         lambda: (torch.zeros(1, B + 1, H), torch.zeros(1, B, H))),
     RuntimeError, r"expected h_0 of shape \(1, 2, 5\), got \(1, 3, 5\)"),
    ("h_0 of the wrong hidden size", lstm_case({}, lambda: torch.randn(T, B, I),
                                               lambda: (torch.zeros(1, B, H + 1), torch.zeros(1, B, H))),
     RuntimeError, r"expected h_0 of shape \(1, 2, 5\), got \(1, 2, 6\)"),
    ("c_0 of the wrong hidden size", lstm_case({}, lambda: torch.randn(T, B, I),
                                               lambda: (torch.zeros(1, B, H), torch.zeros(1, B, H + 1))),
     RuntimeError, r"expected c_0 of shape \(1, 2, 5\), got \(1, 2, 6\)"),
    ("h_0 with too few layers", lstm_case({"num_layers": 2}, lambda: torch.randn(T, B, I), lambda: states(1, B)),
     RuntimeError, r"expected h_0 of shape \(2, 2, 5\), got \(1, 2, 5\)"),
    ("h_0 without the second direction", lstm_case({"bidirectional": True}, lambda: torch.randn(T, B, I),
                                                   lambda: states(1, B)),
     RuntimeError, r"expected h_0 of shape \(2, 2, 5\), got \(1, 2, 5\)"),
    ("h_0 of hidden size with a projection", lstm_case({"proj_size": 2}, lambda: torch.randn(T, B, I),
                                                       lambda: states(1, B)),
     RuntimeError, r"expected h_0 of shape \(1, 2, 2\), got \(1, 2, 5\)"),
    ("c_0 of projection size", lstm_case({"proj_size": 2}, lambda: torch.randn(T, B, I),
                                         lambda: (torch.zeros(1, B, 2), torch.zeros(1, B, 2))),
     RuntimeError, r"expected c_0 of shape \(1, 2, 5\), got \(1, 2, 2\)"),
    ("batched states for unbatched input", lstm_case({}, lambda: torch.randn(T, I), lambda: states(1, 1)),
     RuntimeError, r"expected h_0 of shape \(1, 5\), got \(1, 1, 5\)"),
    ("state of another dtype", lstm_case({}, lambda: torch.randn(T, B, I),
                                         lambda: (torch.zeros(1, B, H, dtype=torch.float64), torch.zeros(1, B, H))),
     RuntimeError, "h_0 has dtype torch.float64 but the input and weights have dtype torch.float32"),
    ("state on another device", lstm_case({}, lambda: torch.randn(T, B, I),
                                          lambda: (torch.zeros(1, B, H, device="meta"), torch.zeros(1, B, H))),
     RuntimeError, "h_0 is on device meta"),
    ("packed input, states of another batch", lstm_case({}, lambda: rnn.pack_padded_sequence(torch.randn(T, B, I),
                                                                                             [3, 2]),
                                                        lambda: states(1, B + 1)),
     RuntimeError, r"expected h_0 of shape \(1, 2, 5\), got \(1, 3, 5\)"),
    ("packed input of the wrong feature size",
     lstm_case({}, lambda: rnn.pack_padded_sequence(torch.randn(T, B, I + 1), [3, 2])), RuntimeError,
     r"input.size\(-1\) must equal input_size=4, got 5"),
    ("cell input of the wrong size", lambda m: cells()[m](torch.randn(B, I + 2)), RuntimeError,
     "input_size=4, got 6"),
    ("cell state of the wrong hidden size", lambda m: cells()[m](torch.randn(B, I), (torch.zeros(B, H + 1),
                                                                                    torch.zeros(B, H))),
     RuntimeError, r"expected h of shape \(2, 5\), got \(2, 6\)"),
    ("cell state of another batch (no broadcasting)",
     lambda m: cells()[m](torch.randn(B, I), (torch.zeros(B + 1, H), torch.zeros(B + 1, H))),
     RuntimeError, r"expected h of shape \(2, 5\), got \(3, 5\)"),
    ("cell float64 input", lambda m: cells()[m](torch.randn(B, I, dtype=torch.float64)), RuntimeError,
     "input has dtype torch.float64"),
    ("cell state of another dtype",
     lambda m: cells()[m](torch.randn(B, I), (torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H))),
     RuntimeError, "h has dtype torch.float64"),
    ("pack: a length zero", lambda m: (rnn.pack_padded_sequence, lstmkit.pack_padded_sequence)[m](
        torch.randn(T, B, I), torch.tensor([2, 0])), RuntimeError, r"in \[1, T=3\], got \[0\]"),
    ("pack: unsorted lengths", lambda m: (rnn.pack_padded_sequence, lstmkit.pack_padded_sequence)[m](
        torch.randn(T, B, I), torch.tensor([1, 3])), RuntimeError, "sorted longest first"),
    ("pack: one length too many", lambda m: (rnn.pack_padded_sequence, lstmkit.pack_padded_sequence)[m](
        torch.randn(T, B, I), torch.tensor([3, 2, 1])), RuntimeError, "expected 2, got 3"),
]


@pytest.mark.parametrize("what,call,torch_exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_what_torch_raises_and_lstmkits_type(what, call, torch_exc, match):
    with pytest.raises(torch_exc):
        call(0)  # torch.nn.LSTM raises this on the same input
    with pytest.raises(torch_exc, match=match) as e:
        call(1)
    assert isinstance(e.value, RuntimeError), f"{what}: {type(e.value).__name__} is not a RuntimeError"
    assert isinstance(e.value, (ValueError, TypeError)), f"{what}: {type(e.value).__name__}"


def test_cli_report_errors_still_catches_input_errors(capsys):
    from lstmkit.errors import InputError, InputTypeError, report_errors
    for exc in (InputError, InputTypeError):
        def main(args, exc=exc):
            raise exc("bad")
        assert report_errors(main)(None) == 2
        assert "error: bad" in capsys.readouterr().err


@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True, "proj_size": 3}, {"batch_first": True},
                                {"num_layers": 2, "batch_first": True, "bidirectional": True}], ids=str)
@pytest.mark.parametrize("with_state", [False, True])
def test_empty_batch_returns_torchs_shapes_and_gradients(kw, with_state):
    ref, lstm = both(**kw)
    shape = (0, T, I) if kw.get("batch_first") else (T, 0, I)
    LD = (2 if kw.get("bidirectional") else 1) * kw.get("num_layers", 1)
    results = []
    for m in (ref, lstm):
        x = torch.randn(*shape, requires_grad=True)
        hx = states(LD, 0, kw.get("proj_size") or H, requires_grad=True) if with_state else None
        out, (h, c) = m(x, hx)
        (out.sum() + h.sum() + c.sum()).backward()
        results.append((out, h, c, x.grad, m.weight_ih_l0.grad, m.weight_hh_l0.grad))
    for want, got in zip(*results):
        assert got is not None and want is not None
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(got, want)  # empty, or all-zero weight gradients


def test_empty_batch_unbatched_input_is_a_zero_length_sequence_error_as_torch():
    ref, lstm = both()
    with pytest.raises(RuntimeError):
        ref(torch.randn(0, I))
    with pytest.raises(ValueError, match="at least one time step"):
        lstm(torch.randn(0, I))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_from_torch_keeps_mode_and_requires_grad(mode):
    ref = torch.nn.LSTM(I, H, num_layers=2, dropout=0.3)
    getattr(ref, mode)()
    ref.weight_hh_l0.requires_grad_(False)
    ref.bias_ih_l1.requires_grad_(False)
    lstm = lstmkit.LSTM.from_torch(ref)
    assert lstm.training == ref.training
    assert {n: p.requires_grad for n, p in lstm.named_parameters()} == \
           {n: p.requires_grad for n, p in ref.named_parameters()}
    back = lstm.to_torch()
    assert back.training == ref.training
    assert {n: p.requires_grad for n, p in back.named_parameters()} == \
           {n: p.requires_grad for n, p in ref.named_parameters()}
    x = torch.randn(T, B, I)
    torch.manual_seed(3)
    want = ref(x)[0]
    torch.manual_seed(3)
    assert torch.allclose(lstm(x)[0], want, atol=1e-6)  # same dropout (train) or none (eval)


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning) as theirs:
        torch.nn.LSTM(I, H, dropout=0.5)
    with pytest.warns(UserWarning) as ours:
        lstmkit.LSTM(I, H, dropout=0.5)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert "num_layers greater than 1" in str(ours[0].message) and "dropout=0.5" in str(ours[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lstmkit.LSTM(I, H, num_layers=2, dropout=0.5)
        lstmkit.LSTM(I, H, dropout=0.0)


@pytest.mark.parametrize("kw", [{}, {"proj_size": 3}, {"num_layers": 2, "bidirectional": True}], ids=str)
def test_zero_initial_state_equals_none(kw):
    """test_rnn_initial_hidden_state: hx = zeros gives what hx = None gives."""
    ref, lstm = both(**kw)
    x = torch.randn(T, B, I)
    LD = (2 if kw.get("bidirectional") else 1) * kw.get("num_layers", 1)
    for m in (ref, lstm):
        out0, (h0, c0) = m(x)
        out1, (h1, c1) = m(x, states(LD, B, kw.get("proj_size") or H))
        assert torch.equal(out0, out1) and torch.equal(h0, h1) and torch.equal(c0, c1)
    assert torch.allclose(lstm(x)[0], ref(x)[0], atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"proj_size": 3, "bidirectional": True}], ids=str)
def test_variable_sequences_equal_each_sequence_alone(kw):
    """test_variable_sequence: a packed batch of lengths 5, 3, 1 equals running each sequence by itself, as torch."""
    ref, lstm = both(**kw)
    lengths = [5, 3, 1]
    seqs = [torch.randn(n, I) for n in lengths]
    packed = rnn.pack_sequence(seqs)
    for m in (ref, lstm):
        out, (h, c) = m(packed)
        padded, _ = rnn.pad_packed_sequence(out)
        for b, s in enumerate(seqs):
            alone, (h_b, c_b) = m(s)
            assert torch.allclose(padded[:lengths[b], b], alone, atol=1e-6)
            assert torch.allclose(h[:, b], h_b, atol=1e-6) and torch.allclose(c[:, b], c_b, atol=1e-6)
    out, (h, c) = lstm(packed)
    want, (hw, cw) = ref(packed)
    assert torch.allclose(out.data, want.data, atol=1e-6) and torch.allclose(h, hw, atol=1e-6)
