"""The native engine's pool of large CPU buffers (lstmkit/csrc/pool.h): a freed block is reused by the next buffer of
its size, PyTorch's memory profiler sees pooled buffers, small ones stay with torch, and no loop reads a buffer before
writing it (blocks handed out full of NaN give the same bits as clean ones)."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine import native

needs_native = pytest.mark.skipif(not native.available(), reason="native extension unavailable")


def ext():
    from lstmkit.engine.build import extension
    return extension()


@needs_native
def test_a_freed_large_buffer_is_reused_by_the_next_of_its_size():
    n = (8 << 20) // 4 + 123  # float32: a little over 8 MiB
    a = ext().empty_large([n], torch.empty(0))
    where, cached = a.data_ptr(), ext().pool_cached_bytes()
    del a
    assert ext().pool_cached_bytes() >= cached + 4 * n  # its block waits for the next buffer of its size
    b = ext().empty_large([n], torch.empty(0, dtype=torch.float32))
    assert b.data_ptr() == where
    assert b.shape == (n,) and b.dtype == torch.float32 and b.is_contiguous()
    b.fill_(1.0)  # the whole block is writable
    assert float(b.sum()) == n


@needs_native
def test_small_buffers_come_from_torch():
    cached = ext().pool_cached_bytes()
    a = ext().empty_large([1000], torch.empty(0))
    del a
    assert ext().pool_cached_bytes() == cached


@needs_native
def test_the_memory_profiler_sees_pooled_buffers():
    from lstmkit.bench.memory import peak_memory
    n = 4 << 20  # 16 MiB of float32
    keep = []
    assert peak_memory(lambda: keep.append(ext().empty_large([n], torch.empty(0)))) >= 4 * n


def _step(model, x, *, autocast=False, packed=False):
    """Outputs, final state and every gradient of one training step, as a list of tensors."""
    model.zero_grad(set_to_none=True)
    if packed:
        x = pack_padded_sequence(x, 32 - torch.arange(64) // 4, enforce_sorted=True)  # lengths 32 down to 17
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, (h, c) = model(x)
    data = out.data if hasattr(out, "batch_sizes") else out
    (data.float().square().sum() + h.float().sum() + c.float().sum()).backward()
    return [data, h, c] + [p.grad for p in model.parameters()]


CASES = {  # T=32, B=64, I=H=512: the gates, cells, outputs and packed weights are pooled (4 MiB and more)
    "dense": dict(),
    "bidirectional projection": dict(bidirectional=True, proj_size=128),
    "two layers float64": dict(num_layers=2, dtype=torch.float64),
    "bf16 autocast": dict(autocast=True),
    "layer norm": dict(layer_norm=True),
    "packed": dict(packed=True),
}


@needs_native
@pytest.mark.parametrize("case", CASES)
def test_results_do_not_depend_on_what_a_reused_block_held(case, monkeypatch):
    """A block full of NaN (LSTMKIT_POOL_POISON) gives the bits a clean one gives: no buffer is read before its write.
    Checked to fail: with the forward not saving the output gate, which the backward then reads."""
    options = dict(CASES[case])
    autocast, packed = options.pop("autocast", False), options.pop("packed", False)
    dtype = options.pop("dtype", torch.float32)
    torch.manual_seed(0)
    model = lstmkit.LSTM(512, 512, **options).to(dtype)
    x = torch.randn(32, 64, 512, dtype=dtype, requires_grad=True)
    clean = _step(model, x, autocast=autocast, packed=packed)
    monkeypatch.setenv("LSTMKIT_POOL_POISON", "1")
    poisoned = _step(model, x, autocast=autocast, packed=packed)
    for a, b in zip(clean, poisoned):
        assert torch.equal(a, b)


@needs_native
def test_a_block_serves_only_buffers_of_its_size_class():
    """2 MiB classes from 8 MiB on: 12 MiB and 11 MiB share a block, 10 MiB does not take the 12 MiB one (the
    profiler would count the larger block)."""
    native.release_buffers()
    a = ext().empty_large([(12 << 20) // 4], torch.empty(0))
    where = a.data_ptr()
    del a
    same_class = ext().empty_large([(11 << 20) // 4], torch.empty(0))
    assert same_class.data_ptr() == where
    del same_class
    smaller = ext().empty_large([(10 << 20) // 4], torch.empty(0))
    assert smaller.data_ptr() != where


@needs_native
def test_release_buffers_frees_the_blocks_held_for_reuse():
    kept = ext().empty_large([(8 << 20) // 4], torch.empty(0))
    freed = ext().empty_large([(8 << 20) // 4], torch.empty(0))
    del freed
    assert ext().pool_cached_bytes() >= 8 << 20
    assert native.release_buffers() >= 8 << 20
    assert ext().pool_cached_bytes() == 0
    kept.fill_(2.0)  # a buffer in use stays
    assert float(kept[-1]) == 2.0


def test_release_buffers_without_the_extension_frees_nothing(monkeypatch):
    monkeypatch.setattr(native, "extension", lambda: None)
    assert native.release_buffers() == 0
