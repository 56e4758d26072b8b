"""The native loop with bf16 operands: equal to the same computation in PyTorch ops (bf16-rounded weights and h,
float32 math) to float32 rounding, to torch.nn.LSTM in bf16 within bf16 tolerance, gradients near float32's,
the same bits on 1 and 2 threads, run to run, and on the portable path (LSTMKIT_PORTABLE_BF16=1)."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import lstmkit
from assertions import assert_rel
from lstmkit.engine import native, ops
from lstmkit.engine.loop_reference import loop_reference
from lstmkit.engine.ops import lstm_forward as op_forward

pytestmark = pytest.mark.skipif(not native.available(), reason="native extension unavailable")
BF16, F32 = torch.bfloat16, torch.float32
I, H, P = 21, 37, 11  # odd on purpose: K odd (a half pair), H and P not multiples of a vector
EVEN = (32, 48, 16)  # every K even: the weights are rounded without a padding copy (bf16.h's bf16_even)
PADDED = [13] * 5
PACKED = [13, 13, 11, 8, 8, 3, 1]
BF16_TOL = 3e-2  # a few roundings of 2^-8 relative each, through the recurrence


def operands(batch_sizes, proj, bias=True, seed=0, dtype=F32, sizes=(I, H, P)):
    gen = torch.Generator().manual_seed(seed)
    I, H, P = sizes
    R = P if proj else H

    def t(*shape, scale=0.5):
        return (scale * torch.randn(*shape, generator=gen)).to(dtype)

    return [t(sum(batch_sizes), I), t(4 * H, I, scale=0.3), t(4 * H) if bias else None, t(batch_sizes[0], R),
            t(batch_sizes[0], H), t(4 * H, R, scale=0.3), None, t(P, H, scale=0.3) if proj else None]


def run_op(args, batch_sizes, reverse=False, training=False, precision="bf16"):
    return op_forward(*args, batch_sizes=batch_sizes, reverse=reverse, kind="dense", groups=1, training=training,
                      keep_h=False, precision=precision)[:3]


CASES = [(sizes, proj, reverse) for sizes in (PADDED, PACKED) for proj in (False, True) for reverse in (False, True)]


@pytest.mark.parametrize("sizes", [(I, H, P), EVEN], ids=["odd", "even"])
@pytest.mark.parametrize("batch_sizes,proj,reverse", CASES)
def test_equals_the_rounded_reference_to_fp32_rounding(batch_sizes, proj, reverse, sizes):
    """Each h_t is a bf16 rounding of the same float32 value in both, so they agree exactly unless an fp32 sum
    lands on a bf16 rounding boundary: c_n (float32) to float32 rounding, out and h_n in all but a rare bf16 ulp."""
    args = operands(batch_sizes, proj, sizes=sizes)
    out, h_n, c_n = run_op(args, batch_sizes, reverse)
    want_out, want_h, want_c, _ = loop_reference(*args, batch_sizes=batch_sizes, reverse=reverse, kind="dense",
                                                 groups=1, keep_h=False, precision="bf16")
    assert (out.dtype, h_n.dtype, c_n.dtype) == (BF16, BF16, F32)
    assert_rel(c_n, want_c, 2e-6, "c_n")
    assert (out != want_out).float().mean() <= 0.01, "more than 1 % of h_t differ"
    assert_rel(out.float(), want_out.float(), 2 ** -7, "out")
    assert_rel(h_n.float(), want_h.float(), 2 ** -7, "h_n")


def test_bf16_tensors_and_fp32_masters_give_the_same_bits():
    """A bf16 module's tensors and float32 masters are the same operands: the op rounds x, h_0 and the weights
    itself (bias and c_0, which it keeps in float32, are given with bf16 values on both sides)."""
    args = operands(PADDED, True)
    args[2], args[4] = args[2].to(BF16).float(), args[4].to(BF16).float()
    as_bf16 = [None if t is None else t.to(BF16) for t in args]
    for got, want in zip(run_op(as_bf16, PADDED), run_op(args, PADDED)):
        assert torch.equal(got.float(), want.float())


def test_a_step_is_the_exact_sum_to_fp32_rounding():
    """One step: the pre-activations are sums of exact bf16 products, accumulated in float32 (not bf16): c_1 from
    h_0 = 0, c_0 = 0 is i ⊙ g of them, compared with the same sums taken in float64."""
    args = operands([64], False)
    args[3].zero_(), args[4].zero_()
    _, _, c_n = run_op(args, [64])
    x, w_ih, b = (t.to(BF16).double() for t in args[:3])
    gates = x @ w_ih.t() + args[2].double()
    i, _, g, _ = gates.chunk(4, 1)
    assert_rel(c_n.double(), torch.sigmoid(i) * torch.tanh(g), 1e-6, "c_1")


def close_to_torch(module_kw, packed, impl_kw=None):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.LSTM(I, H, **module_kw)
    ours = lstmkit.LSTM.from_torch(ref)
    x = torch.randn(7, 5, I)
    if packed:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, [7, 6, 6, 3, 1])
    return ref, ours, x


def record_precisions(monkeypatch) -> list[str]:
    """The `precision` of every native loop call from now on (a spy on ops.lstm_forward and on its kernel, which
    a call that records no gradient runs directly: lstmkit/engine/dispatch.py)."""
    precisions = []

    def spy(forward):
        def call(*args, **options):
            precisions.append(options["precision"])
            return forward(*args, **options)
        return call
    for name in ("lstm_forward", "forward_kernel"):
        monkeypatch.setattr(ops, name, spy(getattr(ops, name)))
    return precisions


@pytest.mark.parametrize("kw", [{}, {"proj_size": P}, {"num_layers": 2, "bidirectional": True}], ids=str)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_bf16_module_matches_torch_bf16(kw, packed, monkeypatch):
    ref, ours, x = close_to_torch(kw, packed)
    ref, ours = ref.to(BF16), ours.to(BF16)
    x = x.to(BF16)
    precisions = record_precisions(monkeypatch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, (want_h, want_c) = ref(x)
        got, (got_h, got_c) = ours(x)
    assert precisions and set(precisions) == {"bf16"}, "the bf16 module did not run the native bf16 loop"
    data = (lambda o: o.data) if packed else (lambda o: o)  # noqa: E731
    for name, g, w in (("output", data(got), data(want)), ("h_n", got_h, want_h), ("c_n", got_c, want_c)):
        assert g.dtype == w.dtype == BF16, name
        assert_rel(g.float(), w.float(), BF16_TOL, name)


def grads(model, x, amp):
    """Outputs and the gradients of a random projection of them: every parameter's and the input's (a packed
    sequence's rows)."""
    model.zero_grad(set_to_none=True)
    packed = isinstance(x, torch.nn.utils.rnn.PackedSequence)
    rows = (x.data if packed else x).detach().requires_grad_()
    inp = x._replace(data=rows) if packed else rows  # the packed sequence itself, its rows a leaf
    with torch.autocast("cpu", dtype=BF16, enabled=amp):
        out, (h, c) = model(inp)
    out = out.data if packed else out
    gen = torch.Generator().manual_seed(3)
    loss = sum((t.float() * torch.randn(t.shape, generator=gen)).sum() for t in (out, h, c))
    loss.backward()
    return (out, h, c), {n: p.grad for n, p in model.named_parameters()} | {"input": rows.grad}


@pytest.mark.parametrize("kw,packed", [({}, False), ({"proj_size": P}, False), ({"num_layers": 2}, False),
                                       ({"bidirectional": True}, False), ({"bidirectional": True, "proj_size": P}, True)],
                         ids=str)
def test_autocast_training_gradients_are_near_fp32(kw, packed, monkeypatch):
    _, ours, x = close_to_torch(kw, packed)
    precisions = record_precisions(monkeypatch)
    _, g32 = grads(ours, x, False)
    assert set(precisions) == {"input"}
    precisions.clear()
    _, g16 = grads(ours, x, True)
    assert precisions and set(precisions) == {"bf16"}, "autocast did not run the native bf16 loop"
    for name, w in g32.items():
        assert g16[name].dtype == w.dtype == F32, name
        assert_rel(g16[name], w, 3 * BF16_TOL, name)


def results(threads: int, packed: bool):
    """Outputs and gradients of a bf16 autocast training step on `threads` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, ours, x = close_to_torch({"proj_size": P}, packed)
        (out, h, c), g = grads(ours, x, True)
        return [out, h, c, *g.values()]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_one_thread_and_two_agree_and_runs_repeat_bit_for_bit(packed):
    one, two, again = results(1, packed), results(2, packed), results(2, packed)
    for a, b in zip(two, again):
        assert torch.equal(a, b)
    for k, (a, b) in enumerate(zip(one, two)):
        assert_rel(a.float(), b.float(), 1e-5, f"result {k}")
    for a, b in zip(one[:3], two[:3]):  # the forward's items never split a sum: the same bits
        assert torch.equal(a, b)


SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_bf16_native import operands, run_op, PACKED
from lstmkit.engine.native import extension
args = operands(PACKED, True)
torch.save([extension().bf16_dot_instructions(), *run_op(args, PACKED, training=True)], {path!r})
"""


def test_the_portable_path_gives_the_same_bits(tmp_path):
    """LSTMKIT_PORTABLE_BF16=1 (read once per process) forces the tiles without vdpbf16ps: same bits."""
    runs = {}
    for portable in ("0", "1"):
        path = tmp_path / f"portable{portable}.pt"
        env = dict(os.environ, LSTMKIT_PORTABLE_BF16=portable)
        script = SCRIPT.format(tests=str(Path(__file__).parent), path=str(path))
        subprocess.run([sys.executable, "-c", script], env=env, check=True)
        runs[portable] = torch.load(path)
    assert runs["1"][0] is False
    if not runs["0"][0]:
        pytest.skip("this CPU has no bf16 dot-product instructions: both runs were portable")
    for got, want in zip(runs["1"][1:], runs["0"][1:]):
        assert torch.equal(got, want)


def test_the_bf16_ceiling_is_measured_where_the_instructions_are():
    ext = native.extension()
    rate = ext.dot_ceiling(1, 1_000_000)
    assert (rate > 0) == ext.bf16_dot_instructions()
