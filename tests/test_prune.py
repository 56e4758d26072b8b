"""Pruning: the sparse map's protocol and masks, masks through training steps and checkpoints, AGP, the CSR path."""
import pytest
import torch

import lstmkit
from lstmkit import maps
from lstmkit.checkpoint import load_checkpoint, save_checkpoint
from lstmkit.compress import GradualPruner, agp_sparsity, prune, sparsity
from lstmkit.compress.saved import pack_bits, pack_sparse, unpack_bits, unpack_sparse
from lstmkit.maps.sparse import SparseMap, magnitude_mask
from assertions import assert_rel
from map_checks import check_protocol, gradcheck_engine

F64 = {"dtype": torch.float64}


@pytest.mark.parametrize("mode, block", [("unstructured", 1), ("balanced", 1), ("balanced", 4)])
def test_sparse_map_protocol(mode, block):
    torch.manual_seed(0)
    m = SparseMap(6, 16, 0.5, mode, block, **F64)
    rows = 7  # FlopCounterMode sees the masked dense product, rows·in·out; the map counts its nonzeros
    check_protocol(m, rows=rows, other_flops=rows * (m.mask.sum().item() - m.mask.numel()))
    gradcheck_engine(SparseMap(3, 16, 0.5, mode, **F64), SparseMap(4, 16, 0.6, mode, block, **F64),
                     SparseMap(4, 4, 0.5, **F64))


def test_magnitude_mask_keeps_the_largest():
    torch.manual_seed(0)
    W = torch.randn(8, 10)
    mask = magnitude_mask(W, 0.7)
    assert mask.sum() == 24  # round(0.3 · 80)
    assert W.abs()[mask].min() >= W.abs()[~mask].max()
    balanced = magnitude_mask(W, 0.7, "balanced", block=2)
    assert balanced.view(4, 20).sum(1).tolist() == [6] * 4  # every block of 2 rows keeps the same count
    for b in range(4):
        kept = balanced.view(4, 20)[b]
        assert W.abs().view(4, 20)[b][kept].min() >= W.abs().view(4, 20)[b][~kept].max()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_sparsity_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        magnitude_mask(torch.ones(4, 4), bad)
    with pytest.raises(ValueError, match="sparsity"):
        lstmkit.Sparse(bad)


def test_bad_mode_and_block():
    with pytest.raises(ValueError, match="pruning mode"):
        magnitude_mask(torch.ones(4, 4), 0.5, "rows")
    with pytest.raises(ValueError, match="block must divide out_features=6"):
        magnitude_mask(torch.ones(6, 4), 0.5, "balanced", 4)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.head = lstmkit.LSTM(5, 8, proj_size=4), torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return Model()


def _loss(model, x):
    return model(x).square().mean()


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_pruned_weights_stay_zero_through_training(impl):
    model = _model()
    model.lstm.impl = impl
    prune(model, 0.75)
    masks = {n: b.clone() for n, b in model.named_buffers() if n.endswith("mask")}
    assert len(masks) == 3 and abs(sparsity(model) - 0.75) < 0.01
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    x = torch.randn(6, 3, 5)
    for _ in range(5):
        opt.zero_grad()
        _loss(model, x).backward()
        for name, mask in masks.items():
            grad = model.get_parameter(name[:-len("mask")] + "weight").grad
            assert torch.all(grad[~mask] == 0), f"{name}: a pruned weight got a gradient"
        opt.step()
    for name, mask in masks.items():
        m = model.get_submodule(name[:-len(".mask")])
        assert torch.equal(m.mask, mask)
        assert torch.all(m.weight[~mask] == 0) and torch.all(m.to_dense()[~mask] == 0)
        assert m.weight[mask].ne(0).all()  # and the kept ones trained


def test_masks_survive_a_checkpoint(tmp_path):
    model = _model()
    prune(model, 0.6, "balanced", 2)
    save_checkpoint(tmp_path / "c.safetensors", {"model": model.state_dict()})
    loaded = prune(_model(seed=1), 0.6, "balanced", 2)  # same structure, other weights and masks
    loaded.load_state_dict(load_checkpoint(tmp_path / "c.safetensors")["model"])
    x = torch.randn(4, 2, 5)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(_loss(model, x), _loss(loaded, x))


def test_compact_storage_roundtrips():
    model = prune(_model(), 0.8)
    stored = pack_sparse(model.state_dict())
    assert not any(k.endswith(".mask") or k.endswith("hh_l0.weight") for k in stored)
    W, mask = model.lstm.weight_hh_l0.weight, model.lstm.weight_hh_l0.mask
    assert stored["lstm.weight_hh_l0.values"].numel() == mask.sum()
    assert stored["lstm.weight_hh_l0.mask_bits"].numel() == -(-mask.numel() // 8)
    restored = unpack_sparse(stored, prune(_model(seed=1), 0.8))
    assert torch.equal(restored["lstm.weight_hh_l0.weight"], W.detach() * mask)
    assert torch.equal(restored["lstm.weight_hh_l0.mask"], mask)
    for n in (1, 7, 8, 9, 100):
        bits = torch.rand(n) < 0.3
        assert torch.equal(unpack_bits(pack_bits(bits), bits.shape), bits)


def test_agp_schedule():
    s = [agp_sparsity(t, 0.8, 10, 50) for t in range(60)]
    assert s[:11] == [0.0] * 11 and s[50:] == [0.8] * 10
    assert all(a <= b for a, b in zip(s, s[1:]))
    assert s[30] == pytest.approx(0.8 - 0.8 * 0.5 ** 3)  # s_f + (s_i - s_f)(1 - 1/2)³
    assert agp_sparsity(33, 0.8, 10, 50, frequency=10) == s[30]  # prunes every 10 steps from t₀ = 10


def test_gradual_pruner_prunes_while_training():
    model = _model()
    pruner = GradualPruner(model, 0.9, begin=2, end=12, frequency=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)  # after the pruner: the maps' parameters from now on
    x = torch.randn(6, 3, 5)
    seen, previous = [], None
    for step in range(15):
        opt.zero_grad()
        _loss(model, x).backward()
        opt.step()
        seen.append(round(sparsity(model), 2))
        mask = model.lstm.weight_hh_l0.mask.clone()
        if previous is not None:
            assert not (mask & ~previous).any(), "a pruned weight came back"
        previous = mask
        model.eval()
        with torch.no_grad():
            _loss(model, x)  # evaluation does not count as a step
        model.train()
    pruner.remove()
    assert seen[:3] == [0.0] * 3 and seen[-1] == 0.9 and seen == sorted(seen)
    assert pruner.step == 15


def test_csr_path_matches_the_dense_product():
    torch.manual_seed(0)
    m = SparseMap.from_dense(torch.randn(64, 32), 0.95)
    x = torch.randn(5, 3, 32)
    with torch.no_grad():
        assert_rel(m(x), x @ m.to_dense().t(), 1e-5)  # (rows 15, sparsity 0.95: CSR)
    assert_rel(m(x), x @ m.to_dense().t(), 1e-5)  # (autograd: the masked dense product)


def test_pruned_lstm_equals_its_dense_matrix():
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(16, 16, recurrent=lstmkit.Sparse(0.9), input=lstmkit.Sparse(0.8, "balanced"))
    dense = lstmkit.compress.densify(lstm)
    x = torch.randn(5, 4, 16)
    with torch.no_grad():
        assert_rel(lstm(x)[0], dense(x)[0], 1e-5)


def test_prune_refuses_structured_weights():
    lstm = lstmkit.LSTM(4, 8, recurrent=lstmkit.LowRank(2))
    with pytest.raises(ValueError, match="weight_hh_l0 is a LowRankMap"):
        prune(lstm, 0.5)
    assert isinstance(maps.reference(lstm.weight_hh_l0), torch.Tensor)
