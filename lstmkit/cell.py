"""The LSTM equations, written once: the pointwise step and its gradient, the reference step, and LSTMCell.

Gate order is i, f, g, o, as torch.nn.LSTM stores it: rows [0:H) of a (4H, ...) weight are the input gate,
[H:2H) the forget gate, [2H:3H) the candidate, [3H:4H) the output gate.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from lstmkit import autocast, checks, maps
from lstmkit.maps import Map


# the elementwise ops of `lstm_pointwise`: out of place (autograd), or in place (loops without autograd)
POINTWISE_OPS = {False: (torch.sigmoid, torch.tanh, torch.mul, torch.addcmul),
                 True: (torch.sigmoid_, torch.tanh_, Tensor.mul_, Tensor.addcmul_)}


def lstm_pointwise(gates: Tensor, c_prev: Tensor, peephole: Tensor | None = None, inplace: bool = False):
    """One step's elementwise part.

    gates (B, 4H): pre-activations W_x x_t + W_h h_{t-1} + b, in order i, f, g, o
    c_prev (B, H); peephole (3, H): the diagonal weights w_ci, w_cf, w_co from the cell into i, f, o.
    Returns h (B, H), c (B, H) and the activated gates (i, f, g, o), each (B, H).
    inplace: write the activated gates over `gates` and c_t over `c_prev` (only h is a new tensor); for loops
    that run without autograd (lstmkit.engine.inference).
    """
    sigmoid, tanh, mul, addcmul = POINTWISE_OPS[inplace]
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=-1)
    if peephole is not None:
        a_i = addcmul(a_i, peephole[0], c_prev)  # a_i += w_ci ⊙ c_{t-1}
        a_f = addcmul(a_f, peephole[1], c_prev)  # a_f += w_cf ⊙ c_{t-1}
    i, f, g = sigmoid(a_i), sigmoid(a_f), tanh(a_g)
    c = addcmul(mul(c_prev, f), i, g)  # c_t = f ⊙ c_{t-1} + i ⊙ g
    if peephole is not None:
        a_o = addcmul(a_o, peephole[2], c)  # the output gate looks at the new cell c_t
    o = sigmoid(a_o)
    h = mul(torch.tanh(c), o)  # h_t = o ⊙ tanh(c_t)
    return h, c, (i, f, g, o)


def lstm_pointwise_backward(dh: Tensor, dc: Tensor, acts: Tensor, c: Tensor, c_prev: Tensor,
                            peephole: Tensor | None = None):
    """Gradient of `lstm_pointwise` for one step.

    dh (B, H): dL/dh_t; dc (B, H): dL/dc_t arriving from step t+1; acts (B, 4H): the saved i, f, g, o;
    c, c_prev (B, H): c_t and c_{t-1}. Returns dL/dgates (B, 4H) and dL/dc_{t-1} (B, H).
    """
    i, f, g, o = acts.chunk(4, dim=-1)
    tanh_c = torch.tanh(c)
    da_o = dh * tanh_c * o * (1 - o)  # h = o ⊙ tanh(c), σ' = σ(1 - σ)
    dc = dc + dh * o * (1 - tanh_c * tanh_c)  # tanh' = 1 - tanh²
    if peephole is not None:
        dc = dc + da_o * peephole[2]  # a_o += w_co ⊙ c_t
    da_i = dc * g * i * (1 - i)  # c = f ⊙ c_prev + i ⊙ g
    da_f = dc * c_prev * f * (1 - f)
    da_g = dc * i * (1 - g * g)
    dc_prev = dc * f
    if peephole is not None:
        dc_prev = dc_prev + da_i * peephole[0] + da_f * peephole[1]  # a_i += w_ci ⊙ c_prev, a_f += w_cf ⊙ c_prev
    return torch.cat((da_i, da_f, da_g, da_o), dim=-1), dc_prev


def lstm_step(x: Tensor, h: Tensor, c: Tensor, weight_ih: Map, weight_hh: Map, bias: Tensor | None = None,
              peephole: Tensor | None = None, weight_hr: Map | None = None):
    """The reference step: x (B, I), h (B, P), c (B, H) -> h_t (B, P), c_t (B, H).

    With dense weights, the four gates' input and recurrent products are ONE product on [x_t, h_{t-1}]
    with the stacked matrix [W_ih, W_hh] (4H, I+P); a structured map applies its two halves separately.
    Projection (LSTMP): the state carried and output is r_t = W_hr h_t.
    """
    if isinstance(weight_ih, Tensor) and isinstance(weight_hh, Tensor):
        gates = torch.cat((x, h), -1) @ torch.cat((weight_ih, weight_hh), 1).t()  # (B, 4H)
    else:
        gates = maps.apply(weight_ih, x) + maps.apply(weight_hh, h)  # (B, 4H)
    if bias is not None:
        gates = gates + bias
    h_full, c, _ = lstm_pointwise(gates, c, peephole)
    return (h_full if weight_hr is None else maps.apply(weight_hr, h_full)), c


ACTIVATIONS = {"identity": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU,
               "softmax": lambda: nn.Softmax(dim=-1), "log_softmax": lambda: nn.LogSoftmax(dim=-1)}


class OutputLayer(nn.Module):
    """The optional output layer of the seed equations: y_t = φ(W_y h_t + b_y)."""

    def __init__(self, in_features: int, out_features: int, activation: str = "identity", *, device=None,
                 dtype=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.linear = nn.Linear(in_features, out_features, device=device, dtype=dtype)
        self.activation = ACTIVATIONS[activation]()

    def forward(self, h: Tensor) -> Tensor:  # (..., H) -> (..., Y)
        return self.activation(self.linear(h))


class LSTMCell(nn.Module):
    """A drop-in for torch.nn.LSTMCell (same arguments, parameters and state_dict keys), plus peepholes
    and an optional output layer (`cell.output(h)` computes y = φ(W_y h + b_y)).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 peephole: bool = False, output_size: int = 0, output_activation: str = "identity"):
        super().__init__()
        checks.positive_int("input_size", input_size)
        checks.positive_int("hidden_size", hidden_size)
        checks.nonnegative_int("output_size", output_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **kw)) if bias else None
        self.weight_peephole = nn.Parameter(torch.empty(3, hidden_size, **kw)) if peephole else None
        self.output_layer = (OutputLayer(hidden_size, output_size, output_activation, **kw)
                             if output_size else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if not name.startswith("output_layer."):
                nn.init.uniform_(p, -bound, bound)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """input (B, I) or (I,); hx = (h, c), each (B, H) or (H,). Returns (h_t, c_t).
        Under torch.autocast: computed in its dtype, returned in the dtype torch.nn.LSTMCell returns."""
        amp = autocast.compute_dtype(self.weight_ih)  # the autocast dtype, or None
        checks.input_tensor(input, self.input_size, self.weight_ih, ranks=(1, 2), autocast=amp)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)  # (B, I)
        B = x.shape[0]
        if hx is None:
            h = c = x.new_zeros(B, self.hidden_size)
        else:
            h, c = (checks.state_tensor(name, s, (B, self.hidden_size) if batched else (self.hidden_size,), x, amp)
                    for name, s in zip(("h", "c"), hx))
            h, c = (h, c) if batched else (h.unsqueeze(0), c.unsqueeze(0))
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        weights, engine = (self.weight_ih, self.weight_hh, bias, self.weight_peephole), contextlib.nullcontext()
        if amp is not None:  # cast through autograd, then computed with autocast off
            result = autocast.cell_dtype(x.device.type, amp, c.dtype)
            x, h, c = autocast.cast(x, amp), autocast.cast(h, amp), autocast.cast(c, amp)
            engine = autocast.engine(x.device.type)
            weights = tuple(autocast.cast(w, amp) for w in weights)
        with engine:
            h, c = lstm_step(x, h, c, *weights)
        if amp is not None:
            h, c = h.to(result), c.to(result)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def output(self, h: Tensor) -> Tensor:
        if self.output_layer is None:
            raise ValueError("this LSTMCell has no output layer: construct it with output_size > 0")
        return self.output_layer(h)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.weight_peephole is not None:
            s += ", peephole=True"
        return s
