"""PyTorch's own nn.LSTM / nn.LSTMCell tests (test/test_nn.py: argument checks, initial states, projections,
variable sequences, dropout state, weight norm, pruning, double backward), run on lstmkit with torch as the oracle."""
import warnings

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils import prune
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence

import lstmkit
from lstmkit.engine import native
from assertions import assert_rel

I, H, P, L, T, B = 3, 5, 2, 2, 6, 4
IMPLS = ["auto", "aten", "fused"]  # lstmkit's engine (native on CPU), torch's own kernel, the fused BPTT


def pair(impl="auto", **kw):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, **kw)
    return ref, lstmkit.LSTM.from_torch(ref, impl=impl)


def both_raise(ref, ours, *args):
    """torch.nn.LSTM raises RuntimeError on args; lstmkit raises a clear error of its own too."""
    with pytest.raises(RuntimeError):
        ref(*args)
    with pytest.raises((ValueError, TypeError)) as e:
        ours(*args)
    return str(e.value)


# --- test_rnn_args_check / test_projections_lstm_args_check -------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("proj", [0, P])
@pytest.mark.parametrize("bad", ["input_size", "hidden_size", "cell_size", "num_layers", "batch"])
def test_args_check(impl, proj, bad):
    ref, ours = pair(impl, num_layers=L, proj_size=proj)
    R = proj or H
    x = torch.randn(T, B + (bad == "batch"), I + (bad == "input_size"))
    h0 = torch.randn(L + (bad == "num_layers"), B, R + (bad == "hidden_size"))
    c0 = torch.randn(L + (bad == "num_layers"), B, H + (bad == "cell_size"))
    message = both_raise(ref, ours, x, (h0, c0))
    assert ("input_size" in message) if bad == "input_size" else ("expected" in message and "shape" in message)


@pytest.mark.parametrize("impl", IMPLS)
def test_projection_state_must_have_proj_size(impl):
    """With proj_size, h_0 is (L, B, proj_size): one of hidden_size is refused."""
    ref, ours = pair(impl, num_layers=L, proj_size=P)
    assert f"({L}, {B}, {P})" in both_raise(ref, ours, torch.randn(T, B, I), (torch.randn(L, B, H),
                                                                            torch.randn(L, B, H)))


@pytest.mark.parametrize("impl", IMPLS)
def test_wrong_dtype_refused(impl):
    _, ours = pair(impl)
    with pytest.raises(TypeError, match="dtype"):
        ours(torch.randn(T, B, I, dtype=torch.float64))


# --- test_rnn_initial_hidden_state / test_projections_lstm_initial_hidden_state ----------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("proj", [0, P])
def test_initial_hidden_state_none_is_zeros(impl, proj):
    ref, ours = pair(impl, num_layers=L, proj_size=proj, bidirectional=True)
    x = torch.randn(T, B, I)
    zeros = (torch.zeros(2 * L, B, proj or H), torch.zeros(2 * L, B, H))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LSTM with projections")
        out_none, (h_none, c_none) = ours(x)
        out_zero, (h_zero, c_zero) = ours(x, zeros)
        out_ref, (h_ref, c_ref) = ref(x)
    for a, b, r in ((out_none, out_zero, out_ref), (h_none, h_zero, h_ref), (c_none, c_zero, c_ref)):
        assert torch.equal(a, b)
        assert_rel(a, r, 1e-5)
    assert h_none.shape == (2 * L, B, proj or H) and c_none.shape == (2 * L, B, H)


@pytest.mark.parametrize("impl", IMPLS)
def test_unbatched_is_batch_of_one(impl):
    ref, ours = pair(impl, num_layers=L)
    x, hx = torch.randn(T, I), (torch.randn(L, H), torch.randn(L, H))
    out, (h, c) = ours(x, hx)
    out_b, (h_b, c_b) = ours(x.unsqueeze(1), (hx[0].unsqueeze(1), hx[1].unsqueeze(1)))
    assert_rel(out, out_b.squeeze(1), 1e-6)
    assert_rel(h, h_b.squeeze(1), 1e-6)
    assert_rel(out, ref(x, hx)[0], 1e-5)


# --- test_variable_sequence (pack/unpack round trips, enforce_sorted=False) ---------------------------------------

LENGTHS = [3, 6, 1, 4]  # not sorted


def sequences(dtype=torch.float32):
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(n, I, generator=gen, dtype=dtype) for n in LENGTHS]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_variable_sequence(impl, bidirectional, batch_first):
    """A packed batch gives each sequence what it gives alone, as torch.nn.LSTM does; gradients as torch's."""
    ref, ours = pair(impl, num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    seqs = sequences()
    padded = pad_sequence(seqs, batch_first=batch_first)
    results = {}
    for name, model in (("ref", ref), ("ours", ours)):
        x = padded.clone().requires_grad_()
        packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first, enforce_sorted=False)
        out, (h, c) = model(packed)
        unpacked, lengths = pad_packed_sequence(out, batch_first, total_length=T + 2)
        assert lengths.tolist() == LENGTHS
        grad, = torch.autograd.grad((unpacked * torch.linspace(-1, 1, unpacked.shape[-1])).sum() + h.sum(), x)
        results[name] = unpacked, h, c, grad
    for a, b in zip(results["ours"], results["ref"]):
        assert_rel(a, b, 1e-5)
    unpacked, h, c, _ = results["ours"]
    for b, (seq, n) in enumerate(zip(seqs, LENGTHS)):  # each sequence alone
        alone, (h_b, c_b) = ours(seq.unsqueeze(0) if batch_first else seq.unsqueeze(1))
        mine = unpacked[b, :n] if batch_first else unpacked[:n, b]
        assert_rel(mine, alone.squeeze(0 if batch_first else 1), 1e-5, f"sequence {b}")
        assert_rel(h[:, b], h_b[:, 0], 1e-5, f"h_n of sequence {b}")
        assert_rel(c[:, b], c_b[:, 0], 1e-5, f"c_n of sequence {b}")
        pad = unpacked[b, n:] if batch_first else unpacked[n:, b]
        assert torch.equal(pad, torch.zeros_like(pad))


@pytest.mark.parametrize("impl", IMPLS)
def test_pack_sequence_with_initial_state_unsorted(impl):
    """hx is given in the caller's order; the packed batch sorts it and h_n, c_n come back unsorted."""
    ref, ours = pair(impl, num_layers=L)
    packed = pack_sequence(sequences(), enforce_sorted=False)
    hx = (torch.randn(L, B, H), torch.randn(L, B, H))
    out, (h, c) = ours(packed, hx)
    out_r, (h_r, c_r) = ref(packed, hx)
    assert torch.equal(out.batch_sizes, out_r.batch_sizes) and torch.equal(out.sorted_indices, out_r.sorted_indices)
    for a, b in ((out.data, out_r.data), (h, h_r), (c, c_r)):
        assert_rel(a, b, 1e-5)


# --- test_RNN_dropout_state / test_RNN_change_dropout --------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_dropout_state(impl):
    """Training: the same seed gives the same mask (torch's); a new seed another; eval: no dropout."""
    ref, ours = pair(impl, num_layers=3, dropout=0.4)
    x = torch.randn(T, B, I)
    torch.manual_seed(7)
    first = ours(x)[0]
    torch.manual_seed(7)
    again = ours(x)[0]
    torch.manual_seed(7)
    theirs = ref(x)[0]
    torch.manual_seed(8)
    other = ours(x)[0]
    assert torch.equal(first, again)
    assert_rel(first, theirs, 1e-5)
    assert not torch.allclose(first, other)
    ours.eval()
    ref.eval()
    assert torch.equal(ours(x)[0], ours(x)[0])
    assert_rel(ours(x)[0], ref(x)[0], 1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_change_dropout(impl):
    """Changing .dropout after construction changes the layer, as for torch.nn.LSTM (0 and 1 are deterministic)."""
    ref, ours = pair(impl, num_layers=2, dropout=0.5)
    x = torch.randn(T, B, I)
    for p in (0.0, 1.0):
        ours.dropout = ref.dropout = p
        torch.manual_seed(1)
        out = ours(x)[0]
        torch.manual_seed(1)
        assert_rel(out, ref(x)[0], 1e-5, f"dropout={p}")
    ours.eval()
    ref.eval()
    assert_rel(ours(x)[0], ref(x)[0], 1e-5)


# --- test_rnn_weight_norm / pruning --------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.nn.utils.weight_norm is deprecated
@pytest.mark.parametrize("impl", IMPLS)
def test_weight_norm(impl):
    """As torch's test: weight norm on weight_hh_l0 replaces it by _g and _v, keeps the output, and remove undoes it."""
    ref, ours = pair(impl, num_layers=L)
    x = torch.randn(T, B, I)
    expected = ours(x)[0].detach()
    count = len(list(ours.parameters()))
    nn.utils.weight_norm(ours, "weight_hh_l0")
    nn.utils.weight_norm(ref, "weight_hh_l0")
    assert len(list(ours.parameters())) == count + 1  # weight -> (g, v)
    assert_rel(ours(x)[0], expected, 1e-5)
    with torch.no_grad():
        ours.weight_hh_l0_v.mul_(torch.linspace(0.5, 2, ours.weight_hh_l0_v.shape[1]))  # a new direction
        ref.weight_hh_l0_v.mul_(torch.linspace(0.5, 2, ref.weight_hh_l0_v.shape[1]))
    changed = ours(x)[0]
    assert not torch.allclose(changed, expected)
    assert_rel(changed, ref(x)[0], 1e-5)
    nn.utils.remove_weight_norm(ours, "weight_hh_l0")
    assert len(list(ours.parameters())) == count
    assert_rel(ours(x)[0], changed, 1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_pruning(impl):
    """As torch's pruning tests on an RNN: weight_hh_l0 becomes weight_hh_l0_orig * weight_hh_l0_mask, the
    forward reads the pruned weight (output as torch.nn.LSTM's), and prune.remove makes it a parameter again."""
    ref, ours = pair(impl, num_layers=L)
    x = torch.randn(T, B, I)
    before = ours(x)[0].detach()
    for m in (ref, ours):
        prune.l1_unstructured(m, "weight_hh_l0", amount=0.6)
    names = dict(ours.named_parameters())
    assert "weight_hh_l0_orig" in names and "weight_hh_l0" not in names
    assert "weight_hh_l0_mask" in dict(ours.named_buffers())
    assert (ours.weight_hh_l0 == 0).float().mean().item() == pytest.approx(0.6, abs=0.02)
    out = ours(x)[0]
    assert not torch.allclose(out, before)
    assert_rel(out, ref(x)[0], 1e-5)
    grad = torch.autograd.grad(out.sum(), ours.weight_hh_l0_orig)[0]
    assert torch.equal(grad[ours.weight_hh_l0_mask == 0], torch.zeros_like(grad[ours.weight_hh_l0_mask == 0]))
    prune.remove(ours, "weight_hh_l0")
    assert isinstance(ours.weight_hh_l0, nn.Parameter)
    assert_rel(ours(x)[0], out, 1e-6)


# --- test_LSTM_cell / test_RNN_cell_no_broadcasting / gradgrad -----------------------------------------------------

def cell_pair(**kw):
    torch.manual_seed(0)
    ref = nn.LSTMCell(I, H, **kw)
    ours = lstmkit.LSTMCell(I, H, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell(bias):
    """As torch's test_LSTM_cell: several steps, state fed back, outputs and gradients as torch's."""
    ref, ours = cell_pair(bias=bias)
    x = torch.randn(T, B, I)
    states = {}
    for name, cell in (("ref", ref), ("ours", ours)):
        hx = (torch.randn(B, H, generator=torch.Generator().manual_seed(3)), torch.zeros(B, H))
        hs = []
        for t in range(T):
            hx = cell(x[t], hx)
            hs.append(hx[0])
        loss = torch.stack(hs).sum() + hx[1].sum()
        states[name] = (hx[0], hx[1], *torch.autograd.grad(loss, list(cell.parameters())))
    for a, b in zip(states["ours"], states["ref"]):
        assert_rel(a, b, 1e-5)


@pytest.mark.parametrize("bad", [(B + 1, H), (B, H + 1)])
def test_lstm_cell_no_broadcasting(bad):
    ref, ours = cell_pair()
    x, hx = torch.randn(B, I), (torch.randn(*bad), torch.randn(*bad))
    with pytest.raises(RuntimeError):
        ref(x, hx)
    with pytest.raises(ValueError, match="expected h of shape"):
        ours(x, hx)


def test_lstm_cell_unbatched():
    ref, ours = cell_pair()
    x, hx = torch.randn(I), (torch.randn(H), torch.randn(H))
    for a, b in zip(ours(x, hx), ref(x, hx)):
        assert a.shape == (H,) and torch.allclose(a, b, atol=1e-6)


def test_lstm_cell_grad_and_gradgrad():
    """As torch's test_LSTM_grad_and_gradgrad, for the cell: float64 gradcheck and gradgradcheck, tiny sizes."""
    torch.manual_seed(0)
    cell = lstmkit.LSTMCell(2, 3, dtype=torch.float64)
    names = [n for n, _ in cell.named_parameters()]
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    hx = tuple(torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    fn = lambda x, h, c, *w: torch.func.functional_call(cell, dict(zip(names, w)), (x, (h, c)))  # noqa: E731
    assert gradcheck(fn, (x, *hx, *params))
    assert gradgradcheck(fn, (x, *hx, *params), fast_mode=True)


def lstm_gradgrad(impl: str) -> bool:
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(2, 2, 2, bidirectional=True, dtype=torch.float64, impl=impl)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    hx = tuple(torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True) for _ in range(2))

    def fn(x, h, c):
        out, (h_n, c_n) = lstm(x, (h, c))
        return out, h_n, c_n
    return gradgradcheck(fn, (x, *hx), fast_mode=True)


@pytest.mark.parametrize("impl", ["auto", "native", "aten", "reference"])
def test_lstm_gradgrad(impl):
    """As torch's test_LSTM_grad_and_gradgrad: second derivatives of the whole LSTM (the native op's autograd rule
    differentiates its own backward through loop_reference.py)."""
    if impl == "native" and not native.available():
        pytest.skip("native extension unavailable")
    assert lstm_gradgrad(impl)


def test_lstm_gradgrad_fused_refuses():
    """The fused engine has first derivatives only: asked for more, it raises and says what to use."""
    with pytest.raises(RuntimeError, match="first derivative only"):
        lstm_gradgrad("fused")
