"""The native engine: equal to the fused PyTorch path and to torch.nn.LSTM (outputs, states, every gradient),
gradcheck in float64, the dispatch of impl="auto", and the fallback when the extension is off (a failed build:
tests/test_build.py)."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from lstmkit import maps
from lstmkit.engine import IMPLEMENTATIONS, auto_layer, fused_layer, native, native_layer, ops
from assertions import assert_rel

needs_native = pytest.mark.skipif(not native.available(), reason="native extension unavailable")
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}

# odd sizes on purpose: H and P not multiples of a vector, B more than one register tile of rows
I, H, P, B = 5, 37, 11, 13
PADDED = [B] * 6
PACKED = [13, 13, 11, 8, 8, 3, 1]  # sorted lengths 7, 6, 5, 5, 5, 4, 4, 4, 3, 3, 3, 2, 2


def layer_args(batch_sizes, proj, peephole, dtype, seed=0, sizes=(I, H, P)):
    """x, h0, c0, weight_ih, weight_hh, bias, peephole, weight_hr, all requiring grad; sizes = (I, H, P)."""
    I, H, P = sizes
    B = batch_sizes[0]
    gen = torch.Generator().manual_seed(seed)
    Pr = P if proj else H

    def t(*shape):
        return (0.5 * torch.randn(*shape, generator=gen, dtype=dtype)).requires_grad_()

    return [t(sum(batch_sizes), I), t(B, Pr), t(B, H), t(4 * H, I), t(4 * H, Pr), t(4 * H),
            t(3, H) if peephole else None, t(P, H) if proj else None]


def on_one_thread_and_many(many_threads, *args, **kwargs):
    """outputs_and_grads(native_layer, ...) on one thread, then on `many_threads`."""
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, many_threads):
            torch.set_num_threads(n)
            results.append(outputs_and_grads(native_layer, *args, **kwargs))
    finally:
        torch.set_num_threads(threads)
    return results


def assert_native_equals_fused(batch_sizes, args, reverse, leaves):
    """Outputs, final state and the gradients for `leaves` of the native loop equal the fused engine's (float64),
    with autograd and without."""
    ours = outputs_and_grads(native_layer, batch_sizes, args, reverse, leaves=leaves)
    ref = outputs_and_grads(fused_layer, batch_sizes, args, reverse, leaves=leaves)
    for i, (a, e) in enumerate(zip(ours, ref)):
        assert_rel(a, e, 1e-12, what=f"output/gradient {i}")
    with torch.no_grad():
        for a, e in zip(native_layer(args[0], batch_sizes, *args[1:], reverse=reverse), ref):
            assert_rel(a, e, 1e-12)


def outputs_and_grads(fn, batch_sizes, args, reverse, leaves=None):
    """fn's (out, h_n, c_n) and the gradients of a random projection of them for `leaves` (default: every
    tensor in args)."""
    outs = fn(args[0], batch_sizes, *args[1:], reverse=reverse)
    gen = torch.Generator().manual_seed(7)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outs)
    leaves = [a for a in args if a is not None] if leaves is None else leaves
    return [*outs, *torch.autograd.grad(loss, leaves)]


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("packed,reverse,peephole,proj", list(itertools.product([False, True], repeat=4)))
def test_native_equals_fused(dtype, packed, reverse, peephole, proj):
    batch_sizes = PACKED if packed else PADDED
    args = layer_args(batch_sizes, proj, peephole, dtype)
    ours = outputs_and_grads(native_layer, batch_sizes, args, reverse)
    ref = outputs_and_grads(fused_layer, batch_sizes, args, reverse)
    for i, (a, e) in enumerate(zip(ours, ref)):
        assert_rel(a, e, TOL[dtype], what=f"output/gradient {i}")


@needs_native
@pytest.mark.parametrize("packed,proj", [(False, False), (True, True)])
def test_native_equals_fused_where_the_saved_gates_are_streamed(packed, proj):
    """From 4 MiB of saved gates on (lstm.cpp's kStreamSaved) the training forward stores them past the caches: the
    same outputs and gradients as the fused engine. Checked to fail with the streaming store scaling what it saves by
    0.999."""
    batch_sizes = [64] * 12 + [48] * 6 + [16] * 4 if packed else [64] * 20  # 1,120 / 1,280 rows of 4 x 256 gates
    args = layer_args(batch_sizes, proj, peephole=True, dtype=torch.float32, sizes=(32, 256, 64))
    # weights of std 0.05, not 0.5: 20 steps of 256 units at 0.5 are chaotic, and float32 rounding grows to 1e-3
    args = [a.detach().mul(0.1 if i in (3, 4, 7) else 1).requires_grad_() if a is not None else None
            for i, a in enumerate(args)]
    ours = outputs_and_grads(native_layer, batch_sizes, args, reverse=packed)
    ref = outputs_and_grads(fused_layer, batch_sizes, args, reverse=packed)
    for i, (a, e) in enumerate(zip(ours, ref)):
        assert_rel(a, e, 1e-5, what=f"output/gradient {i}")


@needs_native
@pytest.mark.parametrize("packed,bidirectional,proj,initial_state",
                         list(itertools.product([False, True], repeat=4)))
def test_native_equals_torch_lstm(packed, bidirectional, proj, initial_state):
    T = 7
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H, bidirectional=bidirectional, proj_size=P if proj else 0)
    Pr, D = (P if proj else H), (2 if bidirectional else 1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, generator=gen, requires_grad=True)
    h0 = torch.randn(D, B, Pr, generator=gen, requires_grad=True) if initial_state else torch.zeros(D, B, Pr)
    c0 = torch.randn(D, B, H, generator=gen, requires_grad=True) if initial_state else torch.zeros(D, B, H)
    lengths = torch.tensor([7, 7, 6, 5, 5, 5, 4, 3, 3, 2, 2, 1, 1]) if packed else torch.full((B,), T)
    seq = pack_padded_sequence(x, lengths)
    out_ref, (h_ref, c_ref) = lstm(seq if packed else x, (h0, c0))
    out_ref = out_ref.data if packed else out_ref.reshape(T * B, D * Pr)
    rows, batch_sizes = seq.data, seq.batch_sizes.tolist()

    w = dict(lstm.named_parameters())
    outs, hs, cs = [], [], []
    for d, sfx in enumerate(["", "_reverse"][:D]):
        bias = w[f"bias_ih_l0{sfx}"] + w[f"bias_hh_l0{sfx}"]
        out, h_n, c_n = native_layer(rows, batch_sizes, h0[d], c0[d], w[f"weight_ih_l0{sfx}"],
                                     w[f"weight_hh_l0{sfx}"], bias, None, w.get(f"weight_hr_l0{sfx}"), reverse=d == 1)
        outs.append(out)
        hs.append(h_n)
        cs.append(c_n)
    ours = [torch.cat(outs, 1), torch.stack(hs), torch.stack(cs)]
    ref = [out_ref, h_ref, c_ref]
    leaves = [*w.values(), x, *([h0, c0] if initial_state else [])]
    gen = torch.Generator().manual_seed(2)
    probes = [torch.randn(t.shape, generator=gen) for t in ref]
    grads_ours = torch.autograd.grad(sum((p * t).sum() for p, t in zip(probes, ours)), leaves, retain_graph=True)
    grads_ref = torch.autograd.grad(sum((p * t).sum() for p, t in zip(probes, ref)), leaves)
    for a, e in zip(ours, ref):
        assert_rel(a, e, 1e-5)
    for name, a, e in zip([*w, "x", "h0", "c0"], grads_ours, grads_ref):
        assert_rel(a, e, 1e-5, what=name)


def native_op(cfg, x, h0, c0, peephole, bias, weight_ih, weight_hh, weight_hr):
    """lstmkit::lstm_forward's differentiable outputs: (out, h_n, c_n), or with "low-rank" (h_seq, c_n)."""
    batch_sizes, reverse, kind, groups = cfg
    out, h_n, c_n, _, _, h_seq = ops.lstm_forward(x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr,
                                                  batch_sizes=batch_sizes, reverse=reverse, kind=kind, groups=groups,
                                                  training=True, keep_h=kind == "low-rank")
    return (h_seq, c_n) if kind == "low-rank" else (out, h_n, c_n)


@needs_native
@pytest.mark.parametrize("input_product,packed,reverse,peephole,proj,kind",
                         [(True, *flags, "dense") for flags in itertools.product([False, True], repeat=4)]
                         + [(False, False, False, False, False, "dense"), (False, True, True, True, True, "dense")]
                         + [(True, packed, reverse, True, True, "low-rank") for packed in (False, True)
                            for reverse in (False, True)] + [(False, True, False, False, True, "low-rank")]
                         + [(True, packed, reverse, peephole, False, "diagonal") for packed in (False, True)
                            for reverse in (False, True) for peephole in (False, True)]
                         + [(False, True, False, False, False, "diagonal")])
def test_gradcheck_native_recurrence(input_product, packed, reverse, peephole, proj, kind):
    """NativeRecurrence with W_ih inside the loop, and with the input product done before it (gates_x, N x 4H);
    "low-rank": the projection only feeds the recurrence, the outputs are h_t; "diagonal": W_hh is (4, H)."""
    batch_sizes = [3, 3, 2, 1] if packed else [3, 3, 3]
    gen = torch.Generator().manual_seed(0)
    h, p, b, i = 5, 2, 3, 3
    pr = p if proj else h

    def t(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    x = t(sum(batch_sizes), i if input_product else 4 * h)
    args = (x, t(b, pr), t(b, h), t(3, h) if peephole else None, t(4 * h), t(4 * h, i) if input_product else None,
            t(4, h) if kind == "diagonal" else t(4 * h, pr), t(p, h) if proj else None)
    cfg = (batch_sizes, reverse, kind, 1)
    assert torch.autograd.gradcheck(lambda *a: native_op(cfg, *a), args)


@needs_native
@pytest.mark.parametrize("packed,reverse,peephole", [(False, False, False), (True, True, True)])
def test_gradcheck_native_grouped_recurrence(packed, reverse, peephole):
    """A block-diagonal W_hh given as its blocks' rows (4H, H / groups): two groups of 16 units."""
    batch_sizes = [3, 2, 1] if packed else [2, 2]
    gen = torch.Generator().manual_seed(0)
    h, groups, b, i = 32, 2, batch_sizes[0], 3

    def t(*shape):
        return (0.5 * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_()

    args = (t(sum(batch_sizes), i), t(b, h), t(b, h), t(3, h) if peephole else None, t(4 * h), t(4 * h, i),
            t(4 * h, h // groups), None)
    cfg = (batch_sizes, reverse, "grouped", groups)
    assert torch.autograd.gradcheck(lambda *a: native_op(cfg, *a), args)


@needs_native
def test_structured_input_map_runs_natively():
    """A LinearMap W_ih (here maps.Dense) has its product done before the loop; gradients reach its parameter."""
    args = layer_args(PACKED, proj=False, peephole=False, dtype=torch.float64)
    dense = maps.Dense.from_dense(args[3].detach())
    structured = [*args[:3], dense, *args[4:]]
    leaves = [*args[:3], dense.weight, *args[4:6]]
    ours = outputs_and_grads(native_layer, PACKED, structured, reverse=True, leaves=leaves)
    ref = outputs_and_grads(fused_layer, PACKED, args, reverse=True)
    for a, e in zip(ours, ref):
        assert_rel(a, e, 1e-12)


@needs_native
@pytest.mark.parametrize("packed,reverse,peephole", list(itertools.product([False, True], repeat=3)))
def test_low_rank_recurrence_runs_natively(packed, reverse, peephole):
    """W_hh = U V runs as an LSTMP whose projection r_t = V h_t only feeds the recurrence; outputs, final state
    and every gradient (U and V included) equal the fused engine's, with and without autograd."""
    batch_sizes = PACKED if packed else PADDED
    args = layer_args(batch_sizes, proj=False, peephole=peephole, dtype=torch.float64)
    low_rank = maps.LowRankMap(H, 4 * H, rank=4, dtype=torch.float64)
    args[4] = low_rank
    leaves = [a for a in args if isinstance(a, torch.Tensor)] + list(low_rank.parameters())
    assert_native_equals_fused(batch_sizes, args, reverse, leaves)


@needs_native
@pytest.mark.parametrize("packed,reverse,peephole,bound,input_map",
                         [(*flags, 1.0, False) for flags in itertools.product([False, True], repeat=3)]
                         + [(True, False, True, None, False), (True, True, False, 0.5, True)])
def test_diagonal_recurrence_runs_natively(packed, reverse, peephole, bound, input_map):
    """A diagonal W_hh (a_q += u_q ⊙ h_{t-1}) runs in the loop's pointwise step; outputs, final state and every
    gradient (the map's weight through u = bound·tanh(w) included) equal the fused engine's, with and without
    autograd; also with a diagonal W_ih, whose product is done before the loop (no product left in it)."""
    batch_sizes = PACKED if packed else PADDED
    args = layer_args(batch_sizes, proj=False, peephole=peephole, dtype=torch.float64, sizes=(H, H, P))
    diagonal = maps.DiagonalMap(H, 4 * H, bound=bound, dtype=torch.float64)
    args[4] = diagonal
    if input_map:
        args[3] = maps.DiagonalMap(H, 4 * H, dtype=torch.float64)
    leaves = [a for a in args if isinstance(a, torch.Tensor)] + list(diagonal.parameters())
    leaves += list(args[3].parameters()) if input_map else []
    assert_native_equals_fused(batch_sizes, args, reverse, leaves)


@needs_native
@pytest.mark.parametrize("packed,reverse,peephole,input_map",
                         [(False, False, False, False), (True, True, True, False), (True, False, False, True)])
def test_grouped_recurrence_runs_natively(packed, reverse, peephole, input_map):
    """A block-diagonal W_hh (G-LSTM) runs in the loop on its blocks alone; outputs, final state and every gradient
    (the map's weight included) equal the fused engine's, with and without autograd; also with a grouped W_ih,
    whose product is done before the loop."""
    batch_sizes = PACKED if packed else PADDED
    args = layer_args(batch_sizes, proj=False, peephole=peephole, dtype=torch.float64, sizes=(48, 64, 64))
    grouped = maps.GroupedMap(64, 4 * 64, groups=4, dtype=torch.float64)
    args[4] = grouped
    if input_map:
        args[3] = maps.GroupedMap(48, 4 * 64, groups=4, dtype=torch.float64)
    leaves = [a for a in args if isinstance(a, torch.Tensor)] + list(grouped.parameters())
    leaves += list(args[3].parameters()) if input_map else []
    assert_native_equals_fused(batch_sizes, args, reverse, leaves)


@needs_native
@pytest.mark.parametrize("many_threads", [2, 3])
def test_grouped_recurrence_same_on_one_thread_and_many(many_threads):
    args = layer_args(PACKED, proj=False, peephole=True, dtype=torch.float32, sizes=(40, 96, 96))
    args[4] = maps.GroupedMap(96, 4 * 96, groups=3)
    leaves = [a for a in args if isinstance(a, torch.Tensor)] + list(args[4].parameters())
    one, many = on_one_thread_and_many(many_threads, PACKED, args, True, leaves=leaves)
    for a, e in zip(one, many):
        assert_rel(a, e, 1e-5)


@needs_native
@pytest.mark.parametrize("many_threads", [2, 3])
def test_diagonal_recurrence_same_on_one_thread_and_many(many_threads):
    """Each thread sums dL/du over all rows for its own units: the same result on any number of threads."""
    args = layer_args(PACKED, proj=False, peephole=True, dtype=torch.float64, sizes=(40, 150, 150))
    args[4] = maps.DiagonalMap(150, 600, bound=1.0, dtype=torch.float64)
    leaves = [a for a in args if isinstance(a, torch.Tensor)] + list(args[4].parameters())
    one, many = on_one_thread_and_many(many_threads, PACKED, args, True, leaves=leaves)
    for a, e in zip(one, many):
        assert_rel(a, e, 1e-13)


@needs_native
@pytest.mark.parametrize("structure", [{"recurrent": "low-rank"}, {"gates": "low-rank"}, {"recurrent": "diagonal"},
                                       {"input": "grouped", "recurrent": "grouped"}])
def test_structured_lstm_takes_the_native_loop_and_matches_fused(monkeypatch, structure):
    """lstmkit.LSTM with a low-rank W_hh (alone, or the joint gates sharing W2 with W_ih), a diagonal or a grouped
    one: impl='auto' runs the native loop and gives the fused engine's outputs and gradients (bidirectional, packed,
    2 layers)."""
    import lstmkit
    torch.manual_seed(0)
    specs = {"low-rank": lstmkit.LowRank(rank=3), "diagonal": lstmkit.Diagonal(bound=1.0),
             "grouped": lstmkit.Grouped(groups=2)}
    kw = dict(num_layers=2, bidirectional=True, dtype=torch.float64,
              **{where: specs[name] for where, name in structure.items()})
    hidden = 32 if "grouped" in structure.values() else 9  # two groups of 16 units: whole vectors
    ours, ref = lstmkit.LSTM(4, hidden, **kw), lstmkit.LSTM(4, hidden, impl="fused", **kw)
    ref.load_state_dict(ours.state_dict())
    calls = []
    layer = native._run
    monkeypatch.setattr(native, "_run", lambda *a, **k: calls.append(1) or layer(*a, **k))
    x = pack_padded_sequence(torch.randn(6, 3, 4, dtype=torch.float64), [6, 4, 2])
    (y, (h, c)), (y_ref, (h_ref, c_ref)) = ours(x), ref(x)
    assert len(calls) == 4  # 2 layers x 2 directions
    for got, want in ((y.data, y_ref.data), (h, h_ref), (c, c_ref)):
        assert_rel(got, want, 1e-12)
    gen = torch.Generator().manual_seed(1)
    probes = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in (y.data, h, c)]
    for outs in ((y.data, h, c), (y_ref.data, h_ref, c_ref)):
        sum((t * p).sum() for t, p in zip(outs, probes)).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert_rel(p.grad, q.grad, 1e-12, what=name)


@needs_native
@pytest.mark.parametrize("proj", [False, True])
def test_inference_path_equals_training_path(proj):
    args = layer_args(PACKED, proj, True, torch.float32)
    with torch.no_grad():
        inference = native_layer(args[0], PACKED, *args[1:])
    training = native_layer(args[0], PACKED, *args[1:])
    assert training[0].requires_grad and not inference[0].requires_grad
    for a, e in zip(inference, training):
        assert torch.equal(a, e)


@needs_native
@pytest.mark.parametrize("many_threads", [2, 3, 5])
def test_same_result_on_one_thread_and_many(many_threads):
    # wide enough for 5 workers, whose shares of the backward's two kinds of items (panels of dL/dh and dL/dx)
    # come out uneven
    args = layer_args(PACKED, proj=True, peephole=True, dtype=torch.float64, sizes=(40, 70, 37))
    one, many = on_one_thread_and_many(many_threads, PACKED, args, reverse=True)
    for a, e in zip(one, many):
        assert_rel(a, e, 1e-13)


@needs_native
def test_auto_picks_native_for_dense_cpu_and_fused_otherwise(monkeypatch):
    calls = []
    monkeypatch.setattr(native, "_run", lambda *a, **k: calls.append("native"))
    monkeypatch.setattr(native, "fused_layer", lambda *a, **k: calls.append("fused"))
    x, h0, c0, w_ih, w_hh, bias, _, _ = layer_args(PADDED, False, False, torch.float32)
    auto_layer(x, PADDED, h0, c0, w_ih, w_hh, bias)
    auto_layer(x, PADDED, h0, c0, w_ih, maps.Dense.from_dense(w_hh.detach()), bias)  # structured W_hh
    auto_layer(x.half(), PADDED, h0.half(), c0.half(), w_ih.half(), w_hh.half(), bias.half())
    low_rank = maps.LowRankMap(H, 4 * H, rank=3)
    auto_layer(x, PADDED, h0, c0, w_ih, low_rank, bias)  # W_hh = U V: the native loop, as an LSTMP
    auto_layer(x, PADDED, h0[:, :P], c0, w_ih, maps.LowRankMap(P, 4 * H, rank=3), bias, None,
               torch.randn(P, H))  # and with a projection too: fused
    auto_layer(x, PADDED, h0, c0, w_ih, maps.DiagonalMap(H, 4 * H), bias)  # a diagonal W_hh: native
    auto_layer(x, PADDED, h0, c0, w_ih, maps.DiagonalMap(H, 3 * H, gates=3), bias)  # not the four gates': fused
    x64, h64, c64 = torch.randn(PADDED[0] * len(PADDED), I), torch.zeros(B, 64), torch.zeros(B, 64)
    auto_layer(x64, PADDED, h64, c64, torch.randn(256, I), maps.GroupedMap(64, 256, groups=4))  # 16-unit groups
    auto_layer(x64, PADDED, h64, c64, torch.randn(256, I), maps.GroupedMap(64, 256, groups=8))  # 8 units: fused
    assert calls == ["native", "fused", "fused", "native", "fused", "native", "fused", "native", "fused"]


def test_auto_sends_a_single_row_without_gradient_to_fused(monkeypatch):
    """Token-by-token generation: one row is a matrix-vector product, cheaper than packing the weights for."""
    calls = []
    monkeypatch.setattr(native, "_run", lambda *a, **k: calls.append("native"))
    monkeypatch.setattr(native, "fused_layer", lambda *a, **k: calls.append("fused"))
    monkeypatch.setattr(native, "extension", lambda: object())
    x, h0, c0, w_ih, w_hh, bias, _, _ = layer_args([1], False, False, torch.float32)
    auto_layer(x, [1], h0, c0, w_ih, w_hh, bias)  # one row, with gradient
    with torch.no_grad():
        auto_layer(x, [1], h0, c0, w_ih, w_hh, bias)  # one row, none
        x2, *rest = layer_args([1, 1], False, False, torch.float32)[:6]
        auto_layer(x2, [1, 1], *rest)  # two rows
    assert calls == ["native", "fused", "native"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_runs_cuda_tensors_on_the_fused_path():
    args = [None if a is None else a.detach().cuda() for a in layer_args(PADDED, True, True, torch.float32)]
    out, h_n, c_n = auto_layer(args[0], PADDED, *args[1:])
    ref = fused_layer(args[0], PADDED, *args[1:])
    assert out.is_cuda and torch.equal(out, ref[0])


def test_disabled_by_environment_falls_back_to_fused(monkeypatch):
    monkeypatch.setenv("LSTMKIT_NO_NATIVE", "1")
    assert not native.available()
    args = layer_args(PACKED, True, True, torch.float64)
    ours = outputs_and_grads(IMPLEMENTATIONS["auto"], PACKED, args, reverse=True)
    ref = outputs_and_grads(fused_layer, PACKED, args, reverse=True)
    for a, e in zip(ours, ref):
        assert torch.equal(a, e)
    with pytest.raises(RuntimeError, match="unavailable"):
        native_layer(args[0], PACKED, *args[1:])


@needs_native
def test_second_backward_through_the_same_graph_recomputes_the_gates():
    """Backward writes dL/dgates over the saved gates; a second backward (retain_graph) must still be right."""
    args = layer_args(PACKED, True, True, torch.float64)
    leaves = [a for a in args if a is not None]
    out = sum(t.sum() for t in native_layer(args[0], PACKED, *args[1:]))
    first = torch.autograd.grad(out, leaves, retain_graph=True)
    second = torch.autograd.grad(out, leaves)
    for a, e in zip(second, first):
        assert torch.equal(a, e)


@needs_native
def test_backward_frees_its_packed_weights_before_the_weight_gradients():
    """Where the weights dominate (N = 32 rows, I = H = 256), a training step's peak holds one set of weight-sized
    buffers: the backward's packed W_ih and W_hh are freed before dW_ih and dW_hh are allocated (both at once
    would be about 2 sets: 4.6 MB against 2.6 MB)."""
    import lstmkit
    from lstmkit.bench.memory import peak_memory
    torch.manual_seed(0)
    T, B, I, H = 4, 8, 256, 256
    lstm = lstmkit.LSTM(I, H)
    x = torch.randn(T, B, I, requires_grad=True)

    def step():
        lstm.zero_grad(set_to_none=True)
        x.grad = None
        lstm(x)[0].sum().backward()

    step()
    weights = 4 * H * (I + H) * 4  # bytes of W_ih and W_hh in float32, and of their gradients
    assert peak_memory(step) <= 1.5 * weights
