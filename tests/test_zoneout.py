"""Zoneout (issue 15): the engine equals the equations written out naively with the masks it drew (float64, outputs,
final states, every gradient); z = 1 keeps the state exactly; z = 0 is the plain LSTM; masks from torch's generator."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine.regularized_bptt import regularized_fused_layer
from lstmkit.engine.regularized_cell import Regularization, bernoulli_mask
from assertions import assert_rel, run_and_grad
from naive_regularized import Naive, Recorder
from test_layer_norm import assert_same, inputs, randomized

I, H, P, T, B = 3, 5, 2, 6, 4
F64 = torch.float64
ZONED = dict(cell_zoneout=0.3, hidden_zoneout=0.6)


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("layers,bidirectional,proj,layer_norm",
                         [(1, False, 0, False), (2, True, 0, False), (1, False, P, False), (2, True, P, True),
                          (1, False, 0, True)])
def test_equations(impl, train, layers, bidirectional, proj, layer_norm):
    lstm = randomized(lstmkit.LSTM(I, H, layers, bidirectional=bidirectional, proj_size=proj, dtype=F64,
                                   layer_norm=layer_norm, impl=impl, **ZONED)).train(train)
    lstm.zoneout_mask = recorder = Recorder(bernoulli_mask)
    x, hx = inputs(layers, 2 if bidirectional else 1, proj or H)
    actual = run_and_grad(lstm, x, hx)
    masks = recorder.padded(lstm, T, B) if train else None
    assert len(recorder.drawn) == (2 * layers * (2 if bidirectional else 1) if train else 0)
    assert_same(actual, run_and_grad(Naive(lstm, masks).train(train), x, hx))


def test_one_keeps_the_state_exactly():
    lstm = randomized(lstmkit.LSTM(I, H, 2, dtype=torch.float32, cell_zoneout=1.0, hidden_zoneout=1.0))
    x, (h0, c0) = torch.randn(T, B, I), (torch.randn(2, B, H), torch.randn(2, B, H))
    out, (h, c) = lstm(x, (h0, c0))
    assert torch.equal(h, h0) and torch.equal(c, c0)
    assert torch.equal(out, h0[1].expand(T, B, H))


def test_zero_masks_are_the_plain_lstm():
    """Zoneout engine with masks of zeros (and z = 0 itself) computes torch.nn.LSTM's outputs and gradients."""
    torch_lstm = torch.nn.LSTM(I, H, 2, bidirectional=True, dtype=F64)
    for z in (0.0, 0.5):
        lstm = lstmkit.LSTM.from_torch(torch_lstm)
        lstm.cell_zoneout = lstm.hidden_zoneout = z
        lstm.zoneout_mask = lambda rows, width, p, like: like.new_zeros(rows, width)
        x, hx = inputs(2, 2, H)
        out, h, c, grads = run_and_grad(lstm, x, hx)
        out_e, h_e, c_e, grads_e = run_and_grad(torch_lstm, x, hx)
        assert_rel(out, out_e, 1e-10, "output")
        assert_rel(c, c_e, 1e-10, "c_n")
        for name in grads:
            assert_rel(grads[name], grads_e[name], 1e-10, name)


def test_masks_are_bernoulli_z_from_torchs_generator():
    lstm = lstmkit.LSTM(I, 64, cell_zoneout=0.25, hidden_zoneout=0.75)
    lstm.zoneout_mask = recorder = Recorder(bernoulli_mask)
    x = torch.randn(50, 8, I)
    torch.manual_seed(3)
    first = lstm(x)[0]
    for p, mask in recorder.drawn:
        assert mask.shape == (50 * 8, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
        assert abs(mask.mean().item() - p) < 0.02  # 25 600 draws: 4 standard deviations
    torch.manual_seed(3)
    assert torch.equal(lstm(x)[0], first)  # a seeded run repeats
    assert not torch.equal(lstm(x)[0], first)  # the next call draws fresh masks
    lstm.eval()
    assert torch.equal(lstm(x)[0], lstm(x)[0])  # eval: no draw


def test_packed_training_masks():
    """PackedSequence in training: each packed row has its own mask row; each sequence alone gives the same."""
    lstm = randomized(lstmkit.LSTM(I, H, 1, bidirectional=True, proj_size=P, dtype=F64, **ZONED))
    lstm.zoneout_mask = recorder = Recorder(bernoulli_mask)
    lengths = [T, 4, 1]
    x = torch.randn(T, len(lengths), I, dtype=F64)
    out = lstm(pack_padded_sequence(x, torch.tensor(lengths)))[0]
    row = lambda t, b: sum(sum(1 for m in lengths if m > s) for s in range(t)) + b  # noqa: E731 (packed row of (t, b))
    h0 = (torch.zeros(2, 1, P, dtype=F64), torch.zeros(2, 1, H, dtype=F64))
    for b, n in enumerate(lengths):
        rows = [row(t, b) for t in range(n)]
        masks = {(0, d): tuple(recorder.drawn[2 * d + j][1][rows].unsqueeze(1) for j in range(2)) for d in range(2)}
        assert_rel(out.data[rows], Naive(lstm, masks)(x[:n, b:b + 1], h0)[0][:, 0], 1e-10, f"sequence {b}")


@pytest.mark.parametrize("proj,reverse", list(itertools.product([False, True], repeat=2)))
def test_gradcheck_fixed_masks(proj, reverse):
    gen = torch.Generator().manual_seed(0)
    batch_sizes, Pr = [3, 3, 2, 1], P if proj else H
    N = sum(batch_sizes)
    t = lambda *s: torch.randn(*s, generator=gen, dtype=F64).requires_grad_()  # noqa: E731
    args = [t(N, I), t(3, Pr), t(3, H), t(4 * H, I), t(4 * H, Pr), t(4 * H), t(P, H) if proj else None]
    for keep_c, keep_h in ((torch.bernoulli(torch.full((N, H), 0.5, dtype=F64), generator=gen),
                            torch.bernoulli(torch.full((N, Pr), 0.5, dtype=F64), generator=gen)),  # training
                           (torch.full((1, H), 0.3, dtype=F64).expand(N, H),
                            torch.full((1, Pr), 0.6, dtype=F64).expand(N, Pr))):  # eval: the expectation
        reg = Regularization(None, None, None, keep_c, keep_h)

        def f(x, h0, c0, w_ih, w_hh, b, w_hr):
            return regularized_fused_layer(x, batch_sizes, h0, c0, w_ih, w_hh, b, None, w_hr, reverse,
                                           regularization=reg)

        assert torch.autograd.gradcheck(f, args)


def test_bad_zoneout():
    with pytest.raises(ValueError, match="cell_zoneout"):
        lstmkit.LSTM(I, H, cell_zoneout=1.5)
    with pytest.raises(ValueError, match="hidden_zoneout"):
        lstmkit.LSTM(I, H, hidden_zoneout=float("nan"))
    with pytest.raises(ValueError, match="no layer norm or zoneout.*cell_zoneout=0.1"):
        lstmkit.LSTM(I, H, cell_zoneout=0.1).to_torch()
