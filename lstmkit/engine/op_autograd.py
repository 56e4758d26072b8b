"""The autograd rule of lstmkit::lstm_forward: the hand-written BPTT of lstmkit::lstm_backward, and a
twice-differentiable path for a backward that is itself differentiated.

A backward run with grad mode on (`autograd.grad(..., create_graph=True)`, a gradient penalty, torch.func.grad,
which always builds the graph) must return gradients that carry their own graph; the C++ backward can't, so such a
backward differentiates lstmkit/engine/loop_reference.py, the same function in PyTorch ops, at the saved inputs:
second derivatives are then exact, never zero or detached.
"""
from __future__ import annotations

import torch

from lstmkit.engine import ops
from lstmkit.engine.loop_reference import loop_reference

OPTIONS = ("batch_sizes", "reverse", "kind", "groups", "precision")


def setup_context(ctx, inputs, keyword_only_inputs, output):
    ctx.options = {k: keyword_only_inputs[k] for k in OPTIONS if k != "precision"}
    ctx.options["precision"] = keyword_only_inputs.get("precision", "input")  # a caller may leave it default
    ctx.keep_h = keyword_only_inputs["keep_h"]
    out, _, _, acts, cells, _ = output
    ctx.save_for_backward(*inputs, out)
    # the loop's own buffers, which lstm_backward writes over (dL/dgates over the gates): kept outside
    # save_for_backward, whose version check would refuse them after that; a second backward recomputes them
    ctx.acts, ctx.cells, ctx.consumed = acts, cells, False
    ctx.mark_non_differentiable(acts, cells)
    ctx.set_materialize_grads(False)  # no (N, 4H) of zeros for the gradients of acts and cells, nor of unused outputs


def _differentiable_backward(ctx, inputs, grads_out):
    """The gradients of loop_reference at the saved inputs, with their graph (create_graph=True)."""
    wrt = [t for t, need in zip(inputs, ctx.needs_input_grad) if need]
    with torch.enable_grad():
        outputs = loop_reference(*inputs, **ctx.options, keep_h=ctx.keep_h)
        pairs = [(o, g) for o, g in zip(outputs, grads_out) if o is not None and g is not None]
        if not pairs:
            return (None,) * len(inputs)
        grads = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True,
                                         allow_unused=True, materialize_grads=True))
    return tuple(next(grads) if need else None for need in ctx.needs_input_grad[:len(inputs)])


def backward(ctx, d_out, d_h_n, d_c_n, _d_acts, _d_cells, d_h_seq):
    *inputs, out = ctx.saved_tensors
    acts, cells = ctx.acts, ctx.cells
    x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr = inputs
    if not ctx.keep_h:
        d_h_seq = None
    if torch.is_grad_enabled():
        return _differentiable_backward(ctx, inputs, (d_out, d_h_n, d_c_n, d_h_seq))
    if ctx.consumed:  # an earlier backward (retain_graph=True) wrote over the saved gates and cells
        acts, cells = ops.lstm_forward(*inputs, **ctx.options, training=True, keep_h=False)[3:5]
    ctx.consumed = True
    need = dict(zip(ops.OPERANDS, ctx.needs_input_grad))
    needs = ops.Needs(x=need["x"], h0=need["h0"], c0=need["c0"], peephole=need["peephole"], bias=need["bias"],
                      weight_ih=need["weight_ih"], weight_hh=need["weight_hh"], weight_hr=need["weight_hr"])
    zeros = lambda g, like: torch.zeros_like(like) if g is None else g  # noqa: E731 (an output not used)
    grads = ops.lstm_backward(zeros(d_out, out), zeros(d_h_n, h0), zeros(d_c_n, c0), acts, cells, out, *inputs,
                              d_h_seq, **ctx.options, needs=list(needs))
    by_name = dict(zip(ops.Needs._fields, grads))
    if weight_ih is None and needs.x:
        by_name["x"] = acts  # dL/dgates, which lstm_backward wrote over acts: the input product's gradient
    return tuple(by_name[name] if need[name] else None for name in ops.OPERANDS)


torch.library.register_autograd("lstmkit::lstm_forward", backward, setup_context=setup_context)
