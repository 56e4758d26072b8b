"""The vmap rule of lstmkit::lstm_forward and lstm_backward: the op once per vmapped slice, outputs stacked.

Correct for any operand vmapped (inputs, states or weights, e.g. an ensemble through torch.func.stack_module_state);
each slice runs the native loop at full speed, so the cost is V calls of the op.
"""
from __future__ import annotations

import torch

from lstmkit.engine import ops


def _slice(t, dim, v):
    return t if t is None or dim is None else t.select(dim, v)


def _per_slice(op):
    def rule(info, in_dims, *args, **options):
        results = [op(*(_slice(t, d, v) for t, d in zip(args, in_dims)), **options) for v in range(info.batch_size)]
        outputs = tuple(torch.stack(r) for r in zip(*results))
        return outputs, (0,) * len(outputs)
    return rule


torch.library.register_vmap("lstmkit::lstm_forward", _per_slice(ops.lstm_forward))
torch.library.register_vmap("lstmkit::lstm_backward", _per_slice(ops.lstm_backward))
