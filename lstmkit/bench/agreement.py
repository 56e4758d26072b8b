"""The agreement gate: a case is timed only if lstmkit computes what torch.nn.LSTM computes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmkit.bench.cases import as_input, data


@dataclass
class Agreement:
    max_rel_err: float  # the largest relative error over all compared tensors
    worst: str  # the tensor where it occurs, e.g. "grad weight_hh_l0"
    tol: float

    @property
    def ok(self) -> bool:
        return self.max_rel_err <= self.tol


def _outputs_and_grads(model: nn.Module, x: Tensor, lens: Tensor | None, seed: int) -> dict[str, Tensor]:
    """Output, h_n, c_n, and the gradients of a random linear function of all three wrt x and each weight."""
    xg = x.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    out, (h, c) = model(as_input(xg, lens))
    y = {"output": data(out), "h_n": h, "c_n": c}
    g = torch.Generator().manual_seed(seed + 2)
    loss = sum((t * torch.randn(t.shape, generator=g).to(t)).sum() for t in y.values())
    loss.backward()
    y["grad input"] = xg.grad
    # state_dict keys are the shared interface; keep_vars gives the parameters themselves
    for key, p in model.state_dict(keep_vars=True).items():
        y[f"grad {key}"] = p.grad
    return {k: v.detach() if v is not None else None for k, v in y.items()}


def rel_err(a: Tensor | None, b: Tensor | None) -> float:
    """max|a - b| / max|b|: inf where a tensor is missing, the shapes differ or a value is NaN."""
    if a is None or b is None or a.shape != b.shape:
        return 0.0 if a is None and b is None else float("inf")
    scale = b.abs().max().clamp_min(torch.finfo(b.dtype).tiny)
    err = float((a - b).abs().max() / scale)
    return err if err == err else float("inf")


def check(ours: nn.Module, ref: nn.Module, x: Tensor, lens: Tensor | None, tol: float, seed: int = 0) -> Agreement:
    """Compare outputs and every gradient of `ours` against `ref` on the same input."""
    a = _outputs_and_grads(ours, x, lens, seed)
    b = _outputs_and_grads(ref, x, lens, seed)
    errs = {k: rel_err(a.get(k), b[k]) for k in b}
    worst = max(errs, key=errs.get)
    return Agreement(errs[worst], worst, tol)
