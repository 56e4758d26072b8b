"""Bad input to the core gets a ValueError/TypeError naming what was expected and what was given; a forward input
that torch.nn.LSTM refuses with a RuntimeError gets lstmkit.errors.InputError / InputTypeError, RuntimeErrors too."""
import pytest
import torch

import lstmkit
from lstmkit.errors import InputError, InputTypeError

I, H, T, B = 4, 5, 3, 2


def lstm(**kw):
    return lstmkit.LSTM(I, H, **kw)


def autocast_bf16(call):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return call()


# (what is wrong, the call, the exception, a regex the message must match: expected and given)
CASES = [
    ("input_size zero", lambda: lstmkit.LSTM(0, H), ValueError, "input_size must be a positive int, got 0"),
    ("hidden_size negative", lambda: lstmkit.LSTM(I, -3), ValueError, "hidden_size must be a positive int, got -3"),
    ("num_layers zero", lambda: lstm(num_layers=0), ValueError, "num_layers must be a positive int, got 0"),
    ("hidden_size a float", lambda: lstmkit.LSTM(I, 5.0), TypeError, "hidden_size must be an int, got float"),
    ("proj_size negative", lambda: lstm(proj_size=-1), ValueError, "proj_size must be >= 0, got -1"),
    ("proj_size not smaller", lambda: lstm(proj_size=H), ValueError, "smaller than hidden_size=5, got 5"),
    ("dropout above 1", lambda: lstm(dropout=1.5), ValueError, r"dropout must be in \[0, 1\], got 1.5"),
    ("unknown engine", lambda: lstm(impl="cudnn"), ValueError, "impl must be one of .*got 'cudnn'"),
    ("cell hidden_size zero", lambda: lstmkit.LSTMCell(I, 0), ValueError, "hidden_size must be a positive int"),
    ("wrong feature size", lambda: lstm()(torch.randn(T, B, I + 1)), InputError,
     r"input.size\(-1\) must equal input_size=4, got 5"),
    ("rank 1 input", lambda: lstm()(torch.randn(I)), InputError, r"rank 2 or 3 .*got rank 1 with shape \(4\)"),
    ("rank 4 input", lambda: lstm()(torch.randn(T, B, 1, I)), InputError, "rank 2 or 3.*got rank 4"),
    ("integer input", lambda: lstm()(torch.ones(T, B, I, dtype=torch.int64)), InputTypeError,
     "floating-point.*got torch.int64"),
    ("not a tensor", lambda: lstm()([[0.0] * I]), TypeError, "torch.Tensor or PackedSequence, got list"),
    ("float64 input, float32 weights", lambda: lstm()(torch.randn(T, B, I, dtype=torch.float64)), InputTypeError,
     "input has dtype torch.float64 but the weights have dtype torch.float32"),
    ("float64 input under bf16 autocast", lambda: autocast_bf16(lambda: lstm()(torch.randn(T, B, I, dtype=torch.float64))),
     InputTypeError, "input has dtype torch.float64 but under autocast to torch.bfloat16"),
    ("input on another device", lambda: lstm()(torch.randn(T, B, I, device="meta")), InputError,
     "input is on device meta but the weights are on cpu"),
    ("empty sequence", lambda: lstm()(torch.randn(0, B, I)), InputError, "at least one time step"),
    ("h_0 of the wrong batch", lambda: lstm()(torch.randn(T, B, I), (torch.zeros(1, B + 1, H), torch.zeros(1, B, H))),
     InputError, r"expected h_0 of shape \(1, 2, 5\), got \(1, 3, 5\)"),
    ("h_0 that would broadcast", lambda: lstm(num_layers=2)(torch.randn(T, B, I),
                                                            (torch.zeros(1, B, H), torch.zeros(2, B, H))),
     InputError, r"expected h_0 of shape \(2, 2, 5\), got \(1, 2, 5\)"),
    ("c_0 without the projection", lambda: lstm(proj_size=2)(torch.randn(T, B, I),
                                                              (torch.zeros(1, B, 2), torch.zeros(1, B, 2))),
     InputError, r"expected c_0 of shape \(1, 2, 5\), got \(1, 2, 2\)"),
    ("batched state for unbatched input", lambda: lstm()(torch.randn(T, I), (torch.zeros(1, 1, H), torch.zeros(1, 1, H))),
     InputError, r"expected h_0 of shape \(1, 5\), got \(1, 1, 5\)"),
    ("state dtype differs", lambda: lstm()(torch.randn(T, B, I), (torch.zeros(1, B, H, dtype=torch.float64),
                                                                 torch.zeros(1, B, H))),
     InputTypeError, "h_0 has dtype torch.float64 but the input and weights have dtype torch.float32"),
    ("state on another device", lambda: lstm()(torch.randn(T, B, I), (torch.zeros(1, B, H, device="meta"),
                                                                     torch.zeros(1, B, H))),
     InputError, "h_0 is on device meta"),
    ("hx not a pair", lambda: lstm()(torch.randn(T, B, I), torch.zeros(1, B, H)), TypeError,
     "hx must be a tuple \\(h_0, c_0\\), got Tensor"),
    ("length above T", lambda: lstmkit.pack_padded_sequence(torch.randn(T, B, I), [T + 1, 1]), InputError,
     r"every length must be in \[1, T=3\], got \[4\]"),
    ("length zero", lambda: lstmkit.pack_padded_sequence(torch.randn(T, B, I), [2, 0]), InputError,
     r"in \[1, T=3\], got \[0\]"),
    ("unsorted lengths", lambda: lstmkit.pack_padded_sequence(torch.randn(T, B, I), [1, 3]), InputError,
     r"sorted longest first when enforce_sorted=True, got \[1, 3\]"),
    ("one length too many", lambda: lstmkit.pack_padded_sequence(torch.randn(T, B, I), [3, 2, 1]), InputError,
     "one entry per sequence: expected 2, got 3"),
    ("cell input of the wrong size", lambda: lstmkit.LSTMCell(I, H)(torch.randn(B, I + 2)), InputError,
     "input_size=4, got 6"),
    ("cell state of the wrong shape", lambda: lstmkit.LSTMCell(I, H)(torch.randn(B, I), (torch.zeros(B, H + 1),
                                                                                        torch.zeros(B, H))),
     InputError, r"expected h of shape \(2, 5\), got \(2, 6\)"),
]


@pytest.mark.parametrize("what,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input(what, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_unsorted_lengths_allowed_without_enforce_sorted():
    packed = lstmkit.pack_padded_sequence(torch.randn(T, B, I), [1, 3], enforce_sorted=False)
    out, _ = lstm()(packed)
    assert out.data.shape == (4, H)
