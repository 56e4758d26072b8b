"""impl="aten" (torch's own kernel for the whole module) against torch.nn.LSTM and lstmkit's engine; the dispatch."""
import itertools
import warnings

import pytest
import torch
from torch.nn.utils import prune
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine import aten, layer_function, native
from assertions import assert_rel, run_and_grad

I, H, T, B = 5, 7, 6, 4
GRID = list(itertools.product([1, 2], [False, True], [False, True], [0, 3]))  # layers, bidir, batch_first, proj


def make_pair(impl="aten", dtype=torch.float32, **kw):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, dtype=dtype, **kw)
    return ref, lstmkit.LSTM.from_torch(ref, impl=impl)


def make_input(kind, batch_first, hx_lead=None, dtype=torch.float32, P=H):
    """Two independent copies (x, hx) of one input: kind 'padded' | 'packed' | 'unbatched'; hx_lead the (L*D,)
    or (L*D, B) leading dims of a given (h_0, c_0), None for zeros."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((T, I) if kind == "unbatched" else ((B, T, I) if batch_first else (T, B, I)), generator=gen,
                    dtype=dtype)
    hx = None if hx_lead is None else (torch.randn(*hx_lead, P, generator=gen, dtype=dtype),
                                       torch.randn(*hx_lead, H, generator=gen, dtype=dtype))
    copies = []
    for _ in range(2):
        xi = x.clone().requires_grad_()
        hxi = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
        if kind == "packed":
            xi = pack_padded_sequence(xi, torch.tensor([T, 2, T - 1, 1]), batch_first, enforce_sorted=False)
        copies.append((xi, hxi))
    return copies


def compare(a, b, x_a, x_b, hx_a, hx_b, tol=None):
    """Outputs, states and every gradient of models a and b: bit for bit (tol None) or to tol."""
    *ra, ga = run_and_grad(a, x_a, hx_a)
    *rb, gb = run_and_grad(b, x_b, hx_b)
    assert ga.keys() == gb.keys()
    for what, u, v in [*zip(("output", "h_n", "c_n"), ra, rb), *((f"grad {k}", ga[k], gb[k]) for k in ga)]:
        if tol is None:
            assert torch.equal(u, v), f"{what}: max abs difference {(u - v).abs().max().item():.3g}"
        else:
            assert_rel(u, v, tol, what)


@pytest.mark.parametrize("kind", ["padded", "packed", "unbatched"])
@pytest.mark.parametrize("layers,bidirectional,batch_first,proj", GRID)
def test_bit_for_bit_torch(kind, layers, bidirectional, batch_first, proj):
    """The same kernel on the same weights: every number equal to torch.nn.LSTM's, gradients too."""
    ref, ours = make_pair(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, proj_size=proj)
    D = 2 if bidirectional else 1
    lead = None if kind == "packed" else ((layers * D,) if kind == "unbatched" else (layers * D, B))
    (x_r, hx_r), (x_o, hx_o) = make_input(kind, batch_first, lead, P=proj or H)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LSTM with projections")
        compare(ref, ours, x_r, x_o, hx_r, hx_o)


@pytest.mark.parametrize("engine", ["native", "fused"])
@pytest.mark.parametrize("kind", ["padded", "packed"])
@pytest.mark.parametrize("layers,bidirectional,batch_first,proj", GRID[::3] + [(2, True, True, 3)])
def test_matches_lstmkit_engine(engine, kind, layers, bidirectional, batch_first, proj):
    if engine == "native" and not native.available():
        pytest.skip("the native engine is not built")
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, proj_size=proj)
    _, ours = make_pair(**kw)
    _, theirs = make_pair(engine, **kw)
    D = 2 if bidirectional else 1
    (x_a, hx_a), (x_b, hx_b) = make_input(kind, batch_first, (layers * D, B), P=proj or H)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LSTM with projections")
        compare(ours, theirs, x_a, x_b, hx_a, hx_b, tol=1e-5)


def test_no_bias_float64_and_output_layer():
    torch.manual_seed(0)
    ours = lstmkit.LSTM(I, H, 2, bias=False, dtype=torch.float64, output_size=3, output_activation="tanh",
                        impl="aten")
    engine = lstmkit.LSTM(I, H, 2, bias=False, dtype=torch.float64, output_size=3, output_activation="tanh",
                          impl="fused")
    engine.load_state_dict(ours.state_dict())
    (x_a, hx_a), (x_b, hx_b) = make_input("padded", False, (2, B), dtype=torch.float64)
    compare(ours, engine, x_a, x_b, hx_a, hx_b, tol=1e-10)
    (x_a, _), (x_b, _) = make_input("packed", False, dtype=torch.float64)
    compare(ours, engine, x_a, x_b, None, None, tol=1e-10)


def test_dropout_mask_as_torch():
    """Dropout between layers, in training: torch's kernel draws torch's mask from the same seed."""
    ref, ours = make_pair(num_layers=3, dropout=0.5)
    (x_r, _), (x_o, _) = make_input("padded", False)
    torch.manual_seed(5)
    out_r = ref(x_r)[0]
    torch.manual_seed(5)
    out_o = ours(x_o)[0]
    assert torch.equal(out_r, out_o)
    ours.eval()
    assert not torch.equal(ours(x_o)[0], out_o)  # the masks did act


def test_flat_weights_are_torchs():
    for kw in [dict(), dict(num_layers=2, bidirectional=True, proj_size=3), dict(bias=False, proj_size=2)]:
        ref, ours = make_pair(**kw)
        assert ours._flat_weights_names == ref._flat_weights_names
        assert all(w is getattr(ours, n) for n, w in zip(ours._flat_weights_names, ours._flat_weights))


def test_flatten_parameters_is_a_no_op_on_cpu():
    _, ours = make_pair(num_layers=2)
    before = [w.data_ptr() for w in ours._flat_weights]
    ours.flatten_parameters()
    assert [w.data_ptr() for w in ours._flat_weights] == before


# --- the dispatch -------------------------------------------------------------------------------------------------

DENSE_CUDA, DENSE_CPU = aten.Layers("cuda", ()), aten.Layers("cpu", ())
PEEPHOLE_CUDA = aten.Layers("cuda", ("peephole=True",))
STRUCTURED_CUDA = aten.Layers("cuda", ("weight_hh_l0 is a LowRankMap",))


@pytest.mark.parametrize("impl,layers,tracing,expected", [
    ("auto", DENSE_CUDA, False, True),  # CUDA dense: cuDNN
    ("auto", DENSE_CPU, False, False),  # CPU: lstmkit's native loop
    ("auto", PEEPHOLE_CUDA, False, False),  # no peepholes in torch's kernel: lstmkit's fused engine
    ("auto", STRUCTURED_CUDA, False, False),
    ("fused", DENSE_CUDA, False, False),  # an explicit per-layer engine stays itself
    ("native", DENSE_CUDA, False, False),
    ("aten", DENSE_CPU, False, True),  # asked for: any device
    ("aten", DENSE_CUDA, False, True),
    ("fused", DENSE_CPU, True, True),  # a trace records aten::lstm whatever the impl
    ("auto", DENSE_CPU, True, True),
])
def test_runs_aten(impl, layers, tracing, expected):
    assert aten.runs_aten(impl, layers, tracing) is expected


def test_runs_aten_refuses_what_torch_cannot_run():
    with pytest.raises(ValueError, match=r"impl='aten'.*peephole=True.*impl='auto'"):
        aten.runs_aten("aten", PEEPHOLE_CUDA, False)
    with pytest.raises(RuntimeError, match=r"torch.jit.trace.*LowRankMap.*torch.export"):
        aten.runs_aten("auto", STRUCTURED_CUDA, True)


def test_layers_of_a_module():
    assert aten.layers(lstmkit.LSTM(I, H, 2, bidirectional=True)) == aten.Layers("cpu", ())
    assert aten.layers(lstmkit.LSTM(I, H, peephole=True)).blockers == ("peephole=True",)
    structured = aten.layers(lstmkit.LSTM(I, H, recurrent=lstmkit.LowRank(rank=2)))
    assert structured.blockers == ("weight_hh_l0 is a LowRankMap",)
    cuda = aten.Layers("cuda", structured.blockers)  # the same module on CUDA: the per-layer engine
    assert not aten.runs_aten("auto", cuda, False)


def test_auto_per_layer_off_cpu_goes_fused(monkeypatch):
    """A layer auto sends to its per-layer engine off the CPU (structure or peepholes on CUDA) runs fused."""
    calls = []
    monkeypatch.setattr(native, "fused_layer", lambda *args: calls.append(args) or "fused")
    x, h0, c0 = (torch.empty(s, device="meta") for s in ((T * B, I), (B, H), (B, H)))
    w_ih, w_hh = torch.empty(4 * H, I, device="meta"), torch.empty(4 * H, H, device="meta")
    assert native.auto_layer(x, None, h0, c0, w_ih, w_hh, peephole=torch.empty(3, H, device="meta")) == "fused"
    assert len(calls) == 1


def test_module_dispatch_on_cpu(monkeypatch):
    """impl="aten" runs torch's kernel (one _VF.lstm call for all layers); "auto" on CPU does not call it."""
    calls = []
    real = aten._VF.lstm

    class Spy:
        @staticmethod
        def lstm(*args):
            calls.append(args)
            return real(*args)

    monkeypatch.setattr(aten, "_VF", Spy)
    x = torch.randn(T, B, I)
    lstmkit.LSTM(I, H, 2, bidirectional=True, impl="aten")(x)
    assert len(calls) == 1
    lstmkit.LSTM(I, H, 2, bidirectional=True)(x)
    assert len(calls) == 1


@pytest.mark.parametrize("build", [dict(peephole=True), dict(recurrent=lstmkit.LowRank(rank=2))])
def test_aten_refuses_peepholes_and_structures(build):
    lstm = lstmkit.LSTM(I, H, impl="aten", **build)
    with pytest.raises(ValueError, match="impl='aten' runs torch's own LSTM kernel"):
        lstm(torch.randn(T, B, I))


def test_aten_layer_has_no_per_layer_call():
    with pytest.raises(ValueError, match="not one layer at a time"):
        layer_function("aten")(torch.randn(T * B, I), None, torch.zeros(B, H), torch.zeros(B, H),
                               torch.randn(4 * H, I), torch.randn(4 * H, H))


@pytest.mark.parametrize("bad", [
    lambda: (torch.randn(T, B, I + 1), None),
    lambda: (torch.randn(T, B, I), (torch.zeros(1, B + 1, H), torch.zeros(1, B, H))),
    lambda: (torch.randn(T, B, I, dtype=torch.float64), None),
    lambda: (torch.randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H + 1))),
])
def test_bad_input_same_error_as_engine(bad):
    """The aten path checks its inputs as lstmkit's engine path does: the same error type and message."""
    errors = []
    for impl in ("aten", "fused"):
        with pytest.raises((ValueError, TypeError)) as e:
            lstmkit.LSTM(I, H, impl=impl)(*bad())
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1]


# --- torch.nn.utils helpers through _flat_weights -----------------------------------------------------------------

def _with_helper(helper, impl):
    ref, ours = make_pair(impl=impl, num_layers=2)
    x = torch.randn(T, B, I)
    before = ours(x)[0].detach()
    torch.manual_seed(3)
    helper(ref)
    torch.manual_seed(3)
    helper(ours)
    return ref(x)[0], ours(x)[0], before


def weight_norm(module):  # then halve the magnitude g: a new W_hh that the forward must read
    torch.nn.utils.weight_norm(module, "weight_hh_l0")
    with torch.no_grad():
        module.weight_hh_l0_g.mul_(0.5)


def parametrized_weight_norm(module):
    torch.nn.utils.parametrizations.weight_norm(module, "weight_hh_l0")
    with torch.no_grad():
        module.parametrizations.weight_hh_l0.original0.mul_(0.5)  # g


HELPERS = {
    "weight_norm": weight_norm,
    "parametrizations.weight_norm": parametrized_weight_norm,
    "prune.l1_unstructured": lambda m: prune.l1_unstructured(m, "weight_hh_l0", amount=0.5),
    "prune.random_unstructured": lambda m: prune.random_unstructured(m, "weight_ih_l1", amount=0.7),
}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.nn.utils.weight_norm is deprecated
@pytest.mark.parametrize("impl", ["aten", "auto"])
@pytest.mark.parametrize("helper", sorted(HELPERS))
def test_nn_utils_helpers_change_output_as_torchs(helper, impl):
    out_ref, out_ours, before = _with_helper(HELPERS[helper], impl)
    assert not torch.allclose(out_ours, before)  # the forward used the new weight
    if impl == "aten":
        assert torch.equal(out_ours, out_ref)
    else:
        assert_rel(out_ours, out_ref, 1e-5, helper)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.nn.utils.weight_norm is deprecated
def test_weight_norm_gradients_reach_g_and_v():
    ref, ours = make_pair(num_layers=1)
    for m in (ref, ours):
        torch.nn.utils.parametrizations.weight_norm(m, "weight_hh_l0")
    x = torch.randn(T, B, I)
    g_ref = torch.autograd.grad(ref(x)[0].square().sum(), list(ref.parametrizations.weight_hh_l0.parameters()))
    g_ours = torch.autograd.grad(ours(x)[0].square().sum(), list(ours.parametrizations.weight_hh_l0.parameters()))
    for a, b in zip(g_ours, g_ref):
        assert torch.equal(a, b)


# --- CUDA (skipped without it) ------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("proj", [0, 3])
def test_cuda_dense_runs_cudnn_from_one_flat_buffer(proj):
    ref, ours = make_pair(impl="auto", num_layers=2, bidirectional=True, proj_size=proj)
    ref, ours = ref.cuda(), ours.cuda()
    assert aten.selected(ours)
    (x_r, hx_r), (x_o, hx_o) = make_input("padded", False, (4, B), P=proj or H)
    x_r, x_o = x_r.detach().cuda(), x_o.detach().cuda()
    hx_r, hx_o = tuple(s.detach().cuda() for s in hx_r), tuple(s.detach().cuda() for s in hx_o)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "RNN module weights are not part of single contiguous")  # cuDNN copying
        compare(ref, ours, x_r.requires_grad_(), x_o.requires_grad_(), hx_r, hx_o)
    assert len({w.untyped_storage().data_ptr() for w in ours._flat_weights}) == 1


@cuda
@pytest.mark.parametrize("build", [dict(peephole=True), dict(recurrent=lstmkit.LowRank(rank=2))])
def test_cuda_structures_and_peepholes_run_fused(build):
    torch.manual_seed(0)
    cpu = lstmkit.LSTM(I, H, 2, impl="fused", **build)
    gpu = lstmkit.LSTM(I, H, 2, **build).cuda()
    gpu.load_state_dict(cpu.state_dict())
    assert not aten.selected(gpu)
    x = torch.randn(T, B, I)
    assert_rel(gpu(x.cuda())[0].cpu(), cpu(x)[0], 1e-5, "output")
