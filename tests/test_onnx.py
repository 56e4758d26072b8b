"""ONNX export (lstmkit/engine/onnx.py): exported at T=7, B=3 with T and B dynamic, run by ONNX Runtime elsewhere."""
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence

import lstmkit
from lstmkit.compress.quantize import quantize
from lstmkit.engine import onnx_layer
from lstmkit.models.convlstm import ConvLSTM

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

I = 4
RUNS = [(13, 5), (1, 1)]  # (T, B) run in ONNX Runtime: neither is the (7, 3) exported


def inputs(model: lstmkit.LSTM, T: int, B: int, state: bool) -> tuple:
    """(x,) or (x, (h0, c0)) for `model` at T, B: x (T, B, I), or (B, T, I) with batch_first."""
    x = torch.randn(B, T, I) if model.batch_first else torch.randn(T, B, I)
    if not state:
        return (x,)
    LD, H = model.num_layers * (2 if model.bidirectional else 1), model.hidden_size
    return x, (torch.randn(LD, B, model.proj_size or H), torch.randn(LD, B, H))


def export(model: lstmkit.LSTM, state: bool = False):
    """`model` exported by the default exporter at T=7, B=3 with T and B dynamic: (ORT session, op types)."""
    T, B = torch.export.Dim("T"), torch.export.Dim("B")
    x_dims = {0: B, 1: T} if model.batch_first else {0: T, 1: B}
    dims = (x_dims, ({1: B}, {1: B})) if state else (x_dims,)
    program = torch.onnx.export(model.eval(), inputs(model, 7, 3, state), dynamo=True, dynamic_shapes=dims)
    proto = program.model_proto
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, [node.op_type for node in proto.graph.node]


def assert_runs_like(session, reference, model: lstmkit.LSTM, state: bool = False) -> None:
    """ONNX Runtime's (output, h_n, c_n) equal `reference`'s to 1e-4 at every (T, B) of RUNS."""
    for T, B in RUNS:
        args = inputs(model, T, B, state)
        flat = [args[0], *(args[1] if state else ())]
        got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), flat)})
        with torch.no_grad():
            out, (h_n, c_n) = reference(*args)
        for name, g, want in zip(("output", "h_n", "c_n"), got, (out, h_n, c_n)):
            assert g.shape == tuple(want.shape), (name, T, B)
            torch.testing.assert_close(torch.from_numpy(g), want, atol=1e-4, rtol=0, msg=f"{name} at T={T}, B={B}")


@pytest.mark.parametrize("options, state", [
    ({"bias": False}, False),
    ({"num_layers": 2, "bidirectional": True, "batch_first": True}, True),
], ids=["one layer, no bias", "two layers, bidirectional, batch_first, (h0, c0)"])
def test_dense_runs_like_torch_lstm(options, state):
    torch.manual_seed(0)
    model = lstmkit.LSTM(I, 6, **options)
    session, ops = export(model, state)
    assert ops.count("LSTM") == model.num_layers * (2 if model.bidirectional else 1)  # one node per layer, direction
    assert_runs_like(session, model.to_torch(), model, state)


def test_peepholes_run_like_eager_lstmkit():
    torch.manual_seed(1)
    model = lstmkit.LSTM(I, 6, bidirectional=True, peephole=True)
    with torch.no_grad():  # peepholes large enough that a wrong order (ONNX's is i, o, f) shows
        for name in ("weight_peephole_l0", "weight_peephole_l0_reverse"):
            getattr(model, name).copy_(torch.randn(3, 6))
    session, ops = export(model)
    assert ops.count("LSTM") == 2
    assert_runs_like(session, model, model)


@pytest.mark.parametrize("structure", [
    {"input": lstmkit.LowRank(rank=2), "recurrent": lstmkit.LowRank(rank=3)},
    {"input": lstmkit.Grouped(groups=2), "recurrent": lstmkit.Grouped(groups=2)},
    {"recurrent": lstmkit.Diagonal(bound=1.0)},
], ids=["lowrank", "grouped", "diagonal"])
def test_structures_run_like_eager_lstmkit(structure):
    torch.manual_seed(2)
    model = lstmkit.LSTM(I, 8, **structure)
    session, ops = export(model, state=True)
    assert "LSTM" in ops
    assert_runs_like(session, model, model, state=True)


def test_projection_runs_like_torch_lstm():
    torch.manual_seed(3)
    model = lstmkit.LSTM(I, 6, bidirectional=True, proj_size=3)
    session, ops = export(model, state=True)
    assert ops.count("Scan") == 2 and "LSTM" not in ops  # ONNX's LSTM has no projection
    assert_runs_like(session, model.to_torch(), model, state=True)


def test_convlstm_runs_like_eager():
    """ConvLSTM passes batch_sizes [B] * T (so T and B are fixed): a padded batch, its conv maps made dense."""
    torch.manual_seed(4)
    model = ConvLSTM(2, 3, 3, 4, 5, num_layers=2, peephole=True, separable=True).eval()
    x = torch.randn(6, 2, 2, 4, 5)
    proto = torch.onnx.export(model, (x,), dynamo=True).model_proto
    assert [node.op_type for node in proto.graph.node].count("LSTM") == 2
    got = ort.InferenceSession(proto.SerializeToString()).run(None, {proto.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        out, (h_n, c_n) = model(x)
    for g, want in zip(got, (out, h_n, c_n)):
        torch.testing.assert_close(torch.from_numpy(g), want, atol=1e-4, rtol=0)


def test_legacy_exporter_is_refused(tmp_path):
    model = lstmkit.LSTM(I, 6).eval()
    with pytest.raises(RuntimeError, match=r"default ONNX exporter.*dynamo=True.*legacy TorchScript exporter"):
        torch.onnx.export(model, (torch.randn(7, 3, I),), tmp_path / "m.onnx", dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "T", 1: "B"}})


def test_quantized_maps_are_refused():
    model = quantize(lstmkit.LSTM(I, 6), "int8").eval()
    with torch.no_grad(), pytest.raises(Exception, match="ONNX export of Int8Map is not supported: it rounds its "
                                                         "input"):
        torch.onnx.export(model, (torch.randn(7, 3, I),), dynamo=True)


class Packed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = lstmkit.LSTM(I, 6)

    def forward(self, data, batch_sizes):
        out, (h_n, c_n) = self.lstm(PackedSequence(data, batch_sizes))
        return out.data, h_n, c_n


def test_packed_input_is_refused():
    args = (torch.randn(5, I), torch.tensor([2, 2, 1]))
    with pytest.raises(Exception, match="ONNX export of a PackedSequence input is not supported: export a padded"):
        torch.onnx.export(Packed().eval(), args, dynamo=True)


def test_onnx_layer_refuses_to_run_outside_an_export():
    h = torch.zeros(3, 6)
    with pytest.raises(RuntimeError, match="only writes a graph under torch.onnx.export"):
        onnx_layer(torch.randn(21, I), None, h, h, torch.randn(24, I), torch.randn(24, 6))
