"""The layer-normalized, zoned LSTM of issue 15 written out naively (padded loops, one sequence at a time if asked),
for tests/test_layer_norm.py and tests/test_zoneout.py; and a mask source that records the masks a module draws."""
from __future__ import annotations

import copy

import torch
from torch import nn


def layer_norm(a, module):
    """Ba et al. (2016): (a - mean) / sqrt(biased variance + eps) ⊙ γ + β over the last dim; identity for None."""
    if module is None:
        return a
    mean = a.mean(-1, keepdim=True)
    var = ((a - mean) ** 2).mean(-1, keepdim=True)
    return (a - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias


class Naive(nn.Module):
    """Issue 15's equations on a copy of an lstmkit.LSTM's parameters: x (T, B, I) time-major, hx given.

    masks: {(k, d): (d_c (T, B, H), d_h (T, B, P))} in training (None entries: no zoneout); in eval the module's
    z values are used. Its parameters are named as the module's (prefix "m.")."""

    def __init__(self, lstm, masks=None):
        super().__init__()
        self.m = copy.deepcopy(lstm)
        self.masks = masks or {}

    def forward(self, x, hx):
        m = self.m
        T, B, _ = x.shape
        L, D, H = m.num_layers, 2 if m.bidirectional else 1, m.hidden_size
        h0, c0 = hx
        get = lambda name, k, sfx: getattr(m, f"{name}_l{k}{sfx}", None)  # noqa: E731
        layer_in, h_n, c_n = x, [], []
        for k in range(L):
            outputs = []
            for d, sfx in enumerate(["", "_reverse"][:D]):
                w_ih, w_hh, w_hr = get("weight_ih", k, sfx), get("weight_hh", k, sfx), get("weight_hr", k, sfx)
                ln_ih, ln_hh, ln_c = (get(f"layer_norm_{n}", k, sfx) for n in ("ih", "hh", "c"))
                d_c, d_h = self.masks.get((k, d), (None, None))
                if not m.training:  # eval: the masks' expectation z
                    d_c = torch.full((T, B, H), m.cell_zoneout, dtype=x.dtype) if m.cell_zoneout else None
                    d_h = (torch.full((T, B, h0.shape[-1]), m.hidden_zoneout, dtype=x.dtype) if m.hidden_zoneout
                           else None)
                h, c = h0[k * D + d], c0[k * D + d]
                seq = [None] * T
                for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                    gates = layer_norm(layer_in[t] @ w_ih.t(), ln_ih) + layer_norm(h @ w_hh.t(), ln_hh)
                    if m.bias:
                        gates = gates + get("bias_ih", k, sfx) + get("bias_hh", k, sfx)
                    i = torch.sigmoid(gates[:, :H])
                    f = torch.sigmoid(gates[:, H:2 * H])
                    g = torch.tanh(gates[:, 2 * H:3 * H])
                    o = torch.sigmoid(gates[:, 3 * H:])
                    c_new = f * c + i * g
                    h_new = o * torch.tanh(layer_norm(c_new, ln_c))
                    if w_hr is not None:
                        h_new = h_new @ w_hr.t()
                    c = c_new if d_c is None else d_c[t] * c + (1 - d_c[t]) * c_new
                    h = h_new if d_h is None else d_h[t] * h + (1 - d_h[t]) * h_new
                    seq[t] = h
                outputs.append(torch.stack(seq))  # (T, B, P)
                h_n.append(h)
                c_n.append(c)
            layer_in = torch.cat(outputs, -1)
        return layer_in, (torch.stack(h_n), torch.stack(c_n))


class Recorder:
    """A zoneout mask source (LSTM.zoneout_mask) that draws as lstmkit does and keeps every mask with its z."""

    def __init__(self, draw):
        self.draw, self.drawn = draw, []

    def __call__(self, rows, width, p, like):
        mask = self.draw(rows, width, p, like)
        self.drawn.append((p, mask))
        return mask

    def padded(self, lstm, T, B):
        """{(k, d): (d_c (T, B, H), d_h (T, B, P))} from a padded call's masks, in the order the module drew them."""
        drawn, out = iter(self.drawn), {}
        H, P = lstm.hidden_size, lstm.proj_size or lstm.hidden_size
        for k in range(lstm.num_layers):
            for d in range(2 if lstm.bidirectional else 1):
                d_c = self._next(drawn, lstm.cell_zoneout).view(T, B, H) if lstm.cell_zoneout else None
                d_h = self._next(drawn, lstm.hidden_zoneout).view(T, B, P) if lstm.hidden_zoneout else None
                out[(k, d)] = (d_c, d_h)
        return out

    @staticmethod
    def _next(drawn, p):
        q, mask = next(drawn)
        assert q == p, f"expected a mask of z = {p}, the module drew one of z = {q}"
        return mask
