"""The hoisted input product's closed-form backward (engine/hoisted.py) and the grouped map's block products."""
import pytest
import torch

from lstmkit import maps
from lstmkit.engine.hoisted import InputProduct
from lstmkit.maps import CirculantMap, DiagonalMap, GroupedMap, LowRankMap, MixedGroupedMap
from assertions import assert_rel

I, OUT, N = 8, 16, 11

MAPS = {
    "grouped": lambda: GroupedMap(I, OUT, 2, dtype=torch.float64),
    "grouped-mix": lambda: MixedGroupedMap(I, OUT, 2, dtype=torch.float64),
    "lowrank": lambda: LowRankMap(I, OUT, 3, dtype=torch.float64),
    "diagonal": lambda: DiagonalMap(4, OUT, bound=1.0, dtype=torch.float64),
    "circulant": lambda: CirculantMap(I, OUT, 4, dtype=torch.float64),
}


@pytest.mark.parametrize("name", sorted(MAPS))
def test_closed_form_backward_equals_autograd(name):
    m = MAPS[name]()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, m.in_features, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(N, m.out_features, generator=gen, dtype=torch.float64)
    params = maps.tensors(m)
    closed = torch.autograd.grad(InputProduct.apply(m, x, *params), (x, *params), g)
    auto = torch.autograd.grad(maps.apply(m, x), (x, *params), g)
    for a, e in zip(closed, auto):
        assert_rel(a, e, 1e-12)
    assert torch.autograd.gradcheck(lambda x, *p: InputProduct.apply(m, x, *p), (x, *params))


def test_grouped_block_products_equal_the_bmm():
    """Many rows without autograd take the per-block products; the bmm with autograd is the reference."""
    m = GroupedMap(12, 4 * 9, 3, dtype=torch.float64)
    x = torch.randn(1500, 12, dtype=torch.float64)
    g = torch.randn(1500, 36, dtype=torch.float64)
    with torch.no_grad():
        assert m._by_blocks(x)
        y_blocks, t_blocks = m(x), m.transpose(g)
    x.requires_grad_()
    g.requires_grad_()
    assert not m._by_blocks(x)
    assert_rel(y_blocks, m(x), 1e-12)
    assert_rel(t_blocks, m.transpose(g), 1e-12)
    assert_rel(y_blocks, x.detach() @ m.to_dense().detach().t(), 1e-12)
