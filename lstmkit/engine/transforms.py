"""Which engine a call under torch.func's transforms can run (see `differentiating_transform`)."""
from __future__ import annotations

import torch


def differentiating_transform() -> bool:
    """Whether a torch.func transform that differentiates (grad, vjp, jacrev, jvp) is active. The native op's
    autograd rule is registered with torch.library, which those transforms can't run in torch 2.13 (they need an
    autograd.Function with setup_context), and the fused engine's backward has no graph of its own (these
    transforms always ask for one): such calls run the reference loop, plain ops every transform knows. vmap alone
    keeps the native loop (its vmap rule, lstmkit/engine/op_vmap.py)."""
    if torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active():
        return False
    stack = torch._C._functorch.get_interpreter_stack() or []
    differentiating = (torch._C._functorch.TransformType.Grad, torch._C._functorch.TransformType.Jvp)
    return any(level.key() in differentiating for level in stack)
