"""Convolutions as linear maps on flattened feature maps: the gate products of ConvLSTM, standard or separable."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmkit import checks
from lstmkit.maps.base import LinearMap
from lstmkit.maps.compose import Compose
from lstmkit.maps.structure import StructureSpec, divides, fit_entry_means_, init_uniform_


class Conv2dMap(LinearMap):
    """A stride-1, 'same'-padded 2-D convolution on feature maps flattened channel-major:
    (..., C·Hs·Ws) -> (..., O·Hs·Ws). With O = 4·Hc the output's four chunks are the channel blocks [i; f; g; o],
    which is the gate layout the engine expects.

    weight (O, C/groups, k, k): groups=1 standard, groups=C depthwise, k=1 pointwise. The adjoint is
    conv_transpose2d with the same weight (stride 1, symmetric padding); the weight gradient is one
    conv2d weight-gradient over all rows. Init U(-1/√fan_in, 1/√fan_in), fan_in = C/groups·k².
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, height: int, width: int,
                 groups: int = 1, *, device=None, dtype=None):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", kernel_size),
                        ("height", height), ("width", width), ("groups", groups)):
            checks.positive_int(name, v)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding keeps the map size), got {kernel_size}")
        divides("groups", groups, "in_channels", in_channels)
        divides("groups", groups, "out_channels", out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.groups = kernel_size, groups
        self.size = (height, width)
        self.in_features, self.out_features = in_channels * height * width, out_channels * height * width
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size,
                                               device=device, dtype=dtype))
        init_uniform_(self.weight, 1 / (3 * in_channels // groups * kernel_size ** 2))

    def _maps(self, x: Tensor, channels: int) -> Tensor:  # (..., channels·Hs·Ws) -> (N, channels, Hs, Ws)
        return x.reshape(-1, channels, *self.size)

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.conv2d(self._maps(x, self.in_channels), self.weight, padding=self.kernel_size // 2,
                                 groups=self.groups)  # (N, O, Hs, Ws)
        return y.reshape(*x.shape[:-1], self.out_features)

    def transpose(self, g: Tensor) -> Tensor:
        x = nn.functional.conv_transpose2d(self._maps(g, self.out_channels), self.weight,
                                           padding=self.kernel_size // 2, groups=self.groups)  # (N, C, Hs, Ws)
        return x.reshape(*g.shape[:-1], self.in_features)

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor]:
        return (torch.nn.grad.conv2d_weight(self._maps(x, self.in_channels), self.weight.shape,
                                            self._maps(g, self.out_channels), padding=self.kernel_size // 2,
                                            groups=self.groups),)

    def to_dense(self) -> Tensor:  # the map applied to the identity: column j is W e_j
        eye = torch.eye(self.in_features, dtype=self.weight.dtype, device=self.weight.device)
        return self(eye).t()

    @classmethod
    def from_dense(cls, weight: Tensor, in_channels: int, kernel_size: int, height: int, width: int,
                   groups: int = 1) -> "Conv2dMap":
        """The least-squares kernel: each weight is the mean of the dense entries it occupies."""
        m = cls(in_channels, weight.shape[0] // (height * width), kernel_size, height, width, groups,
                device=weight.device, dtype=weight.dtype)
        return fit_entry_means_(m, weight.detach())

    def flops(self, rows: int) -> int:
        return rows * self.out_features * (self.in_channels // self.groups) * self.kernel_size ** 2

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, size={self.size}, "
                f"groups={self.groups}")


class SeparableConv2dMap(Compose):
    """Depthwise-separable convolution: a k×k depthwise conv (one filter per input channel) then a 1×1 pointwise
    conv mixing channels: C·k² + C·O weights instead of C·O·k²."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, height: int, width: int, *,
                 device=None, dtype=None):
        kw = {"device": device, "dtype": dtype}
        super().__init__(Conv2dMap(in_channels, in_channels, kernel_size, height, width, groups=in_channels, **kw),
                         Conv2dMap(in_channels, out_channels, 1, height, width, **kw))

    @classmethod
    def from_dense(cls, weight: Tensor, in_channels: int, kernel_size: int, height: int,
                   width: int) -> "SeparableConv2dMap":
        """The best separable fit of the least-squares standard kernel K (O, C, k, k): separable means each input
        channel's slice K[:, c] (O, k²) is rank one, pointwise[:, c] ⊗ depthwise[c], so its truncated SVD
        (optimal in the kernel's Frobenius norm; the dense norm weighs each tap by the pixels it reaches)."""
        K = Conv2dMap.from_dense(weight, in_channels, kernel_size, height, width).weight.detach()
        m = cls(in_channels, K.shape[0], kernel_size, height, width, device=weight.device, dtype=weight.dtype)
        U, S, Vh = torch.linalg.svd(K.transpose(0, 1).flatten(2), full_matrices=False)  # of (C, O, k²)
        with torch.no_grad():
            m.inner.weight.copy_((S[:, :1, None] * Vh[:, :1]).view_as(m.inner.weight))  # (C, 1, k, k)
            m.outer.weight.copy_(U[:, :, 0].t().reshape(m.outer.weight.shape))  # (O, C, 1, 1)
        return m


@dataclass(frozen=True)
class Conv(StructureSpec):
    """Convolutional gates for feature maps of `height`×`width` flattened channel-major (ConvLSTM): in and out
    features must be multiples of height·width. `separable`: depthwise k×k then pointwise 1×1."""

    kernel_size: int
    height: int
    width: int
    separable: bool = False

    def build(self, in_features: int, out_features: int, *, device=None, dtype=None) -> LinearMap:
        S = self.height * self.width
        divides("height * width", S, "in_features", in_features)
        divides("height * width", S, "out_features", out_features)
        cls = SeparableConv2dMap if self.separable else Conv2dMap
        return cls(in_features // S, out_features // S, self.kernel_size, self.height, self.width, device=device,
                   dtype=dtype)

    def from_dense(self, weight: Tensor) -> LinearMap:
        cls = SeparableConv2dMap if self.separable else Conv2dMap
        return cls.from_dense(weight, weight.shape[1] // (self.height * self.width), self.kernel_size, self.height,
                              self.width)
