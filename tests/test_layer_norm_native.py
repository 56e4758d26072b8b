"""The native layer-norm / zoneout loop (lstmkit/csrc/layer_norm.cpp, engine/regularized_native.py): it runs where it
should, and equals the fused Python loop and the float64 equations written out naively (outputs, final states, every
gradient), padded and packed, with fixed zoneout masks; 1 thread vs 2 within rounding, identical bits run to run."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.engine import regularized, regularized_native
from assertions import assert_rel, run_and_grad
from naive_regularized import Naive, Recorder
from test_layer_norm import assert_same, randomized

pytestmark = pytest.mark.skipif(not lstmkit.engine.native.available(), reason="the native engine is not built")

I, H, T, B = 3, 21, 7, 13  # H: a partial vector of units (21 = 16 + 5); B: two threads split the batch
F64 = torch.float64
LENGTHS = [7, 7, 6, 5, 5, 4, 3, 3, 2, 2, 1, 1, 1]


class FixedMasks:
    """A zoneout mask source drawing from its own seeded generator: two modules given FixedMasks(seed) zone alike."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, rows, width, p, like):
        return torch.bernoulli(torch.full((rows, width), p, dtype=like.dtype), generator=self.gen)


@pytest.fixture
def native_calls(monkeypatch):
    """How many times the native loop's forward ran."""
    calls = []
    forward = regularized_native.NativeRegularizedRecurrence.forward

    def counted(ctx, *args):
        calls.append(1)
        return forward(ctx, *args)
    monkeypatch.setattr(regularized_native.NativeRegularizedRecurrence, "forward", staticmethod(counted))
    return calls


def fused_only(monkeypatch):
    monkeypatch.setattr(regularized, "runs", lambda *args: False)


def model(layers, bidirectional, zoned, dtype=F64, proj=0, seed=0):
    zone = dict(cell_zoneout=0.3, hidden_zoneout=0.6) if zoned else {}
    return randomized(lstmkit.LSTM(I, H, layers, bidirectional=bidirectional, proj_size=proj, dtype=dtype,
                                   layer_norm=True, **zone), seed)


def inputs(layers, directions, dtype=F64, width=H, seed=1):
    gen = torch.Generator().manual_seed(seed)
    t = lambda *s: torch.randn(*s, generator=gen, dtype=dtype).requires_grad_()  # noqa: E731
    return t(T, B, I), (t(layers * directions, B, width), t(layers * directions, B, H))


def assert_alike(actual, expected, tol):
    """Two runs of lstmkit modules: outputs, final states and every gradient (same names) within tol."""
    for what, a, e in zip(("output", "h_n", "c_n"), actual, expected):
        assert_rel(a, e, tol, what)
    assert actual[3].keys() == expected[3].keys()
    for name, g in actual[3].items():
        assert_rel(g, expected[3][name], tol, f"d{name}")


CASES = list(itertools.product([1, 2], [False, True], [False, True]))  # layers, bidirectional, zoned


@pytest.mark.parametrize("layers,bidirectional,zoned", CASES)
def test_equals_the_equations(native_calls, layers, bidirectional, zoned):
    """float64, padded, fixed masks in training: the native loop equals the naive equations to 1e-10."""
    lstm = model(layers, bidirectional, zoned)
    lstm.zoneout_mask = recorder = Recorder(FixedMasks(7))
    x, hx = inputs(layers, 2 if bidirectional else 1)
    actual = run_and_grad(lstm, x, hx)
    assert len(native_calls) == layers * (2 if bidirectional else 1)
    assert_same(actual, run_and_grad(Naive(lstm, recorder.padded(lstm, T, B) if zoned else None), x, hx))


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("layers,bidirectional,zoned", CASES)
@pytest.mark.parametrize("packed", [False, True])
def test_equals_the_fused_loop(monkeypatch, native_calls, dtype, tol, layers, bidirectional, zoned, packed):
    """Same masks (a seeded source), padded or packed with varying lengths: native = fused Python loop."""
    results = []
    for native in (True, False):
        lstm = model(layers, bidirectional, zoned, dtype)
        lstm.zoneout_mask = FixedMasks(11)
        x, hx = inputs(layers, 2 if bidirectional else 1, dtype)
        with monkeypatch.context() as m:
            if not native:
                fused_only(m)
            xs = pack_padded_sequence(x, LENGTHS) if packed else x
            results.append(run_and_grad(lstm, xs, hx))
    assert len(native_calls) == layers * (2 if bidirectional else 1)
    assert_alike(*results, tol=tol)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_equals_each_sequence_alone(bidirectional):
    """Layer norm on a PackedSequence: each sequence's rows equal the naive equations on that sequence alone."""
    lstm = model(2, bidirectional, False)
    D = 2 if bidirectional else 1
    x, (h0, c0) = inputs(2, D)
    out, (h_n, c_n) = lstm(pack_padded_sequence(x, LENGTHS), (h0, c0))
    out, _ = pad_packed_sequence(out)
    naive = Naive(lstm)
    for b, n in enumerate(LENGTHS):
        o, (h, c) = naive(x[:n, b:b + 1], (h0[:, b:b + 1], c0[:, b:b + 1]))
        assert_rel(out[:n, b:b + 1], o, 1e-10, f"output of sequence {b}")
        assert_rel(h_n[:, b:b + 1], h, 1e-10, f"h_n of sequence {b}")
        assert_rel(c_n[:, b:b + 1], c, 1e-10, f"c_n of sequence {b}")


class Cycle:
    """A mask source that draws its first n masks from `draw`, then gives the same n again, in order, forever."""

    def __init__(self, draw, n):
        self.draw, self.n, self.masks, self.calls = draw, n, [], 0

    def __call__(self, rows, width, p, like):
        if len(self.masks) < self.n:
            self.masks.append(self.draw(rows, width, p, like))
        self.calls += 1
        return self.masks[(self.calls - 1) % self.n]


def test_gradcheck(native_calls):
    """float64 gradcheck through the native loop: layer norm and zoneout with fixed masks, both directions."""
    lstm = randomized(lstmkit.LSTM(2, 4, bidirectional=True, dtype=F64, layer_norm=True, cell_zoneout=0.3,
                                   hidden_zoneout=0.5))
    lstm.zoneout_mask = Cycle(FixedMasks(4), 4)  # 2 masks per direction
    names = [n for n, _ in lstm.named_parameters()]
    gen = torch.Generator().manual_seed(0)
    x, h0, c0 = (torch.randn(*s, generator=gen, dtype=F64, requires_grad=True) for s in ((3, 2, 2), (2, 2, 4),
                                                                                         (2, 2, 4)))

    def f(x, h0, c0, *params):
        out, (h, c) = torch.func.functional_call(lstm, dict(zip(names, params)), (x, (h0, c0)))
        return out, h, c
    assert torch.autograd.gradcheck(f, (x, h0, c0, *lstm.parameters()), eps=1e-6, atol=1e-7)
    assert native_calls


def test_projection_routes_to_the_fused_loop(native_calls):
    """proj_size > 0 is not the native loop's: it runs fused and still equals the equations."""
    lstm = model(1, True, True, proj=2)
    lstm.zoneout_mask = recorder = Recorder(FixedMasks(3))
    x, hx = inputs(1, 2, width=2)
    actual = run_and_grad(lstm, x, hx)
    assert not native_calls
    assert_same(actual, run_and_grad(Naive(lstm, recorder.padded(lstm, T, B)), x, hx))


def test_bfloat16_routes_and_autocast_equals_fused(monkeypatch, native_calls):
    """A bfloat16 module runs the fused loop; under CPU autocast the native loop gives the fused loop's result."""
    lstm = model(1, False, False, dtype=torch.bfloat16)
    x = torch.randn(T, B, I)
    lstm(x.bfloat16())
    assert not native_calls
    lstm = model(1, False, True, dtype=torch.float32)
    results = []
    for native in (True, False):
        lstm.zoneout_mask = FixedMasks(1)
        with monkeypatch.context() as m, torch.autocast("cpu", dtype=torch.bfloat16):
            if not native:
                fused_only(m)
            results.append(lstm(x)[0].float())
    assert native_calls
    assert_rel(results[0], results[1], 1e-5, "output under autocast")


def _threads_run(threads, batch):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        lstm = model(1, True, True, dtype=torch.float32, seed=5)
        lstm.zoneout_mask = FixedMasks(9)
        gen = torch.Generator().manual_seed(2)
        x = torch.randn(T, batch, I, generator=gen, requires_grad=True)
        hx = (torch.randn(2, batch, H, generator=gen, requires_grad=True),
              torch.randn(2, batch, H, generator=gen, requires_grad=True))
        return run_and_grad(lstm, x, hx)
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("batch", [4, 16])  # 16: threads split the batch; 4: each step's columns (or one thread)
def test_threads_and_repeats(native_calls, batch):
    """1 thread vs 2 within rounding; the same call twice gives identical bits."""
    one, two, again = _threads_run(1, batch), _threads_run(2, batch), _threads_run(2, batch)
    assert_alike(one, two, tol=1e-5)
    for a, b in zip((*two[:3], *two[3].values()), (*again[:3], *again[3].values())):
        assert torch.equal(a, b)
    assert native_calls


def test_bench_study_quick(tmp_path):
    """`lstmkit bench --study layer-norm --quick` writes its JSON and its BENCHMARKS.md section."""
    import json

    from lstmkit.cli import main
    assert main(["bench", "--quick", "--study", "layer-norm", "--out", str(tmp_path / "benchmarks")]) == 0
    results = json.loads((tmp_path / "benchmarks" / "layer-norm.json").read_text())
    assert [r["case"] for r in results["rows"]][:2] == ["plain", "layer norm (native loop)"]
    assert all(r["median_s"] > 0 and r["ratio"] > 0 for r in results["rows"]) and results["passes"] is None
    assert "<!-- bench:layer-norm -->" in (tmp_path / "BENCHMARKS.md").read_text()
