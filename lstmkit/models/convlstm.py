"""ConvLSTM (Shi et al. 2015): the LSTM with convolutional gate products on (T, B, C, Hs, Ws) feature-map sequences.

    G_t = W_x * X_t + W_h * H_{t-1} + b          (* : 'same' 2-D convolution; 4·Hc output channels i, f, g, o)
    i, f, o = σ(G^{i,f,o} [+ w_c{i,f} ⊙ C_{t-1}, w_co ⊙ C_t]);  g = tanh(G^g)
    C_t = f ⊙ C_{t-1} + i ⊙ g;  H_t = o ⊙ tanh(C_t)

A convolution is a linear map on the flattened maps (lstmkit.maps.Conv2dMap), so each layer is the unchanged
lstmkit engine (hoisted input convolution, hand-written BPTT with conv_transpose2d per step) on states of
H = Hc·Hs·Ws features, flattened channel-major so that the engine's four gate chunks are channel blocks.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lstmkit import checks
from lstmkit.engine import layer_function
from lstmkit.maps import Conv

__all__ = ["ConvLSTM"]


class ConvLSTM(nn.Module):
    """Stacked ConvLSTM layers, `hidden_channels` each, on feature maps of fixed `height`×`width`.

    `separable=True` makes both gate convolutions depthwise-separable (k×k depthwise, then 1×1 pointwise).
    Biases are per channel (4Hc,), shared over positions; peepholes (Shi et al.'s Hadamard W_c ⊙ C) are per
    channel and position, (3, Hc, Hs, Ws). Parameters per layer k: weight_ih_l{k} and weight_hh_l{k} (maps),
    bias_l{k}, weight_peephole_l{k}.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int, height: int, width: int,
                 num_layers: int = 1, *, bias: bool = True, peephole: bool = False, separable: bool = False,
                 batch_first: bool = False, impl: str = "auto", device=None, dtype=None):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                        ("height", height), ("width", width), ("num_layers", num_layers)):
            checks.positive_int(name, v)
        layer_function(impl)  # validates the name
        self.in_channels, self.hidden_channels, self.size = in_channels, hidden_channels, (height, width)
        self.num_layers, self.batch_first, self.impl = num_layers, batch_first, impl
        kw = {"device": device, "dtype": dtype}
        spec = Conv(kernel_size, height, width, separable)
        S, Hc = height * width, hidden_channels
        for k in range(num_layers):
            channels = in_channels if k == 0 else Hc
            self.add_module(f"weight_ih_l{k}", spec.build(channels * S, 4 * Hc * S, **kw))
            self.add_module(f"weight_hh_l{k}", spec.build(Hc * S, 4 * Hc * S, **kw))
            if bias:
                self.register_parameter(f"bias_l{k}", nn.Parameter(torch.empty(4 * Hc, **kw)))
            if peephole:
                self.register_parameter(f"weight_peephole_l{k}", nn.Parameter(torch.empty(3, Hc, height, width, **kw)))
        bound = 1 / math.sqrt(Hc)
        for p in self._parameters.values():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):
        """input (T, B, C, Hs, Ws), or (B, T, ...) with batch_first; hx = (h_0, c_0), each (L, B, Hc, Hs, Ws).
        Returns the top layer's outputs (T, B, Hc, Hs, Ws) (or batch-first) and (h_n, c_n), each (L, B, Hc, Hs, Ws)."""
        C, (Hs, Ws), Hc, L = self.in_channels, self.size, self.hidden_channels, self.num_layers
        if not isinstance(input, Tensor) or input.dim() != 5 or tuple(input.shape[2:]) != (C, Hs, Ws):
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            order = "(B, T" if self.batch_first else "(T, B"
            raise ValueError(f"input must be {order}, C={C}, Hs={Hs}, Ws={Ws}), got {got}")
        x = input.transpose(0, 1) if self.batch_first else input
        T, B = x.shape[:2]
        state = (L, B, Hc, Hs, Ws)
        if hx is None:
            h0 = c0 = x.new_zeros(state)
        else:
            h0, c0 = (checks.state_tensor(name, s, state, x) for name, s in zip(("h_0", "c_0"), hx))
        run = layer_function(self.impl)
        x = x.reshape(T * B, C * Hs * Ws)  # (T*B, C·Hs·Ws): rows of all steps, maps flattened channel-major
        h_n, c_n = [], []
        for k in range(L):
            get = lambda name: getattr(self, f"{name}_l{k}", None)  # noqa: E731
            b, w_c = get("bias"), get("weight_peephole")
            x, h, c = run(x, [B] * T, h0[k].reshape(B, -1), c0[k].reshape(B, -1), get("weight_ih"),
                          get("weight_hh"), None if b is None else b.repeat_interleave(Hs * Ws),  # (4Hc·Hs·Ws,)
                          None if w_c is None else w_c.reshape(3, -1))  # (T*B, Hc·Hs·Ws)
            h_n.append(h)
            c_n.append(c)
        out = x.view(T, B, Hc, Hs, Ws)
        h_n, c_n = torch.stack(h_n).view(state), torch.stack(c_n).view(state)
        return (out.transpose(0, 1) if self.batch_first else out), (h_n, c_n)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, size={self.size}, num_layers={self.num_layers}"
