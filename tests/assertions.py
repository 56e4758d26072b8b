"""Shared test helpers: relative comparison and running a model on a loss that touches every output."""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence


def assert_rel(actual, expected, tol: float = 1e-5, what: str = "") -> None:
    """max|actual - expected| <= tol * max(max|expected|, 1e-3): a relative tolerance that tiny entries can't break."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).abs().max().item()
    scale = max(expected.abs().max().item(), 1e-3)
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol} * {scale:.3g}"


def run_and_grad(model, x, hx, seed: int = 0):
    """Forward, then backward of a fixed random projection of output and final states.
    Returns (output, h_n, c_n, {name: grad} for parameters and for the inputs that require grad)."""
    out, (h, c) = model(x, hx)
    data = out.data if isinstance(out, PackedSequence) else out
    gen = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)).sum() for t in (data, h, c))
    named = dict(model.named_parameters())
    leaves = {"input": x.data if isinstance(x, PackedSequence) else x}
    if hx is not None:
        leaves.update(h0=hx[0], c0=hx[1])
    leaves = {k: v for k, v in leaves.items() if v.requires_grad}
    grads = torch.autograd.grad(loss, [*named.values(), *leaves.values()])
    return data, h, c, dict(zip([*named, *leaves], grads))
