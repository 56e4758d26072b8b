"""Block-circulant weights (C-LSTM, Wang et al. 2018): b×b circulant blocks, one vector each, applied in frequency."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmkit import checks
from lstmkit.maps.base import LinearMap
from lstmkit.maps.cast import OwnDtype
from lstmkit.maps.structure import StructureSpec, fit_entry_means_, init_uniform_


def dft_matrices(b: int, dtype=None, device=None) -> tuple[Tensor, Tensor]:
    """The real DFT of length b as matrices, F = b//2 + 1 frequencies, planes a = re, im:

    forward (b, 4F), columns (k, f, a): k=0 gives [Re X_f, Im X_f] of X = rfft(x), k=1 gives [-Im X_f, Re X_f]
    (the spectrum times i, which the complex products below need); inverse (2F, b), rows (f, a): irfft, the
    Hermitian weights 1/b (DC, Nyquist) or 2/b included, so x = irfft(rfft(x)) = [Re, Im] @ inverse.
    """
    j, f = torch.arange(b, dtype=torch.float64), torch.arange(b // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * j[:, None] * f[None, :] / b  # (b, F)
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), 0)  # (k, b, F, a)
    weight = torch.full_like(f, 2.0 / b)  # an inner frequency stands for itself and its mirror image
    weight[0] = 1.0 / b
    if b % 2 == 0:
        weight[-1] = 1.0 / b  # Nyquist
    inverse = torch.stack((weight[:, None] * cos.t(), -weight[:, None] * sin.t()), 1)  # (F, a, b)
    return (forward.permute(1, 0, 2, 3).reshape(b, -1).to(dtype=dtype, device=device),
            inverse.reshape(-1, b).to(dtype=dtype, device=device))


class CirculantMap(LinearMap):
    """W (out, in) as a p×q grid of b×b circulant blocks, block (r, s) = C(c_rs) with C(c)[i, j] = c[(i - j) mod b]:
    p·q·b parameters instead of out·in. By the convolution theorem, with ^ the DFT of length b:

        y_r = Σ_s C(c_rs) x_s = irfft(Σ_s ĉ_rs ⊙ x̂_s),     Cᵀ(c) = C(c reversed), spectrum conj(ĉ)

    so per frequency f the map is a complex (q → p) matrix product, all F = b/2+1 of them batched. In real
    arithmetic, with planes (re, im) kept separate: Y = X @ Re ĉ + (iX) @ Im ĉ, two batched GEMMs (bmm over
    the 2F (frequency, plane) pairs). The DFT and its inverse are themselves GEMMs with the small dense DFT
    matrices (`dft_matrices`): for block sizes up to a few dozen they beat torch.fft's per-transform overhead
    and put the spectra straight into the frequency-major layout the bmm needs, so a call is four GEMMs and
    no permute copies (O(b²) per block for the transforms instead of the FFT's O(b log b); the weight spectra
    ĉ use torch.fft.rfft). Without a gradient through it (the engine's per-step calls, inference), the weight
    spectrum is cached for as long as the weight is bit-identical to the copy it was computed from.

    Sizes not divisible by b are padded: p = ⌈out/b⌉, q = ⌈in/b⌉; inputs get zeros up to q·b and outputs are
    cut to out, so the padding's entries are parameters that never act. Block size 1 is the dense matrix.
    weight (p, q, b): c_rs. Init: dense-equivalent entries U(-1/√in, 1/√in), as every output sees all inputs.
    """

    def __init__(self, in_features: int, out_features: int, block: int, *, device=None, dtype=None):
        super().__init__()
        checks.positive_int("block", block)
        self.in_features, self.out_features, self.block = in_features, out_features, block
        p, q = -(-out_features // block), -(-in_features // block)
        self.weight = nn.Parameter(torch.empty(p, q, block, device=device, dtype=dtype))
        init_uniform_(self.weight, 1 / (3 * in_features))
        dft, idft = dft_matrices(block, self.weight.dtype, device)
        self.register_buffer("dft", dft, persistent=False)  # (b, 4F)
        self.register_buffer("idft", idft, persistent=False)  # (2F, b)
        self._cache: tuple[Tensor, Tensor, Tensor] | None = None  # (weight copy, Re ĉ, Im ĉ)

    def cast(self, dtype: torch.dtype) -> LinearMap:
        return OwnDtype(self)  # torch.fft has no bfloat16 kernel: the spectra stay in the weights' dtype

    def _spectrum_of_weight(self) -> tuple[Tensor, Tensor]:
        """Re ĉ and Im ĉ, each (2F, q, p) with rows (f, plane), repeated over the plane so that one bmm serves both
        planes of the input spectrum."""
        w = self.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return self._planes(w)
        if self._cache is None or self._cache[0].dtype != w.dtype or not torch.equal(self._cache[0], w):
            self._cache = (w.detach().clone(), *self._planes(w.detach()))
        return self._cache[1], self._cache[2]

    @staticmethod
    def _planes(w: Tensor) -> tuple[Tensor, Tensor]:
        p, q, _ = w.shape
        spec = torch.fft.rfft(w, dim=-1).permute(2, 1, 0)  # (F, q, p): ĉ_rs[f] at [f, s, r]
        F = spec.shape[0]
        return tuple(part.unsqueeze(1).expand(F, 2, q, p).reshape(2 * F, q, p) for part in (spec.real, spec.imag))

    def _to_spectrum(self, x: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        """(..., n) -> x̂ and i·x̂, each (2F, N, blocks) with rows (f, plane): one GEMM with the DFT matrix."""
        b = self.block
        x = x.reshape(-1, x.shape[-1])
        if x.shape[-1] != blocks * b:
            x = nn.functional.pad(x, (0, blocks * b - x.shape[-1]))  # zeros up to whole blocks
        spec = (self.dft.t() @ x.reshape(-1, b).t()).view(2, -1, x.shape[0], blocks)  # (k, 2F, N, blocks)
        return spec[0], spec[1]

    def _from_spectrum(self, Y: Tensor, n: int) -> Tensor:
        """(2F, N, blocks) -> (N, n): the inverse DFT of every block, one GEMM, cut to n features."""
        F2, N, blocks = Y.shape
        y = (Y.view(F2, N * blocks).t() @ self.idft).view(N, blocks * self.block)  # (N·blocks, b) = (N, blocks·b)
        return y if y.shape[1] == n else y[:, :n]

    def forward(self, x: Tensor) -> Tensor:
        p, q, _ = self.weight.shape
        re, im = self._spectrum_of_weight()
        X, iX = self._to_spectrum(x, q)  # (2F, N, q)
        Y = torch.bmm(X, re).baddbmm_(iX, im)  # ŷ = x̂ ĉ: [Xr, Xi] Re ĉ + [-Xi, Xr] Im ĉ, (2F, N, p)
        return self._from_spectrum(Y, self.out_features).reshape(*x.shape[:-1], self.out_features)

    def transpose(self, g: Tensor) -> Tensor:
        p, q, _ = self.weight.shape
        re, im = self._spectrum_of_weight()
        G, iG = self._to_spectrum(g, p)  # (2F, N, p)
        X = torch.bmm(G, re.transpose(1, 2)).baddbmm_(iG, im.transpose(1, 2), alpha=-1)  # conj(ĉ) ĝ
        return self._from_spectrum(X, self.in_features).reshape(*g.shape[:-1], self.in_features)

    def weight_grads(self, x: Tensor, g: Tensor) -> tuple[Tensor]:
        """dc_rs[m] = Σ_n Σ_i g_r[i] x_s[(i - m) mod b], a cross-correlation: irfft(Σ_n ĝ_r conj(x̂_s)).
        Re(ĝ conj(x̂)) = Gr Xr + Gi Xi and Im = Gi Xr - Gr Xi: sums over (plane, n) of G with x̂ and with i·x̂."""
        p, q, b = self.weight.shape
        X, iX = self._to_spectrum(x, q)  # (2F, N, q)
        G, _ = self._to_spectrum(g, p)  # (2F, N, p)
        F = X.shape[0] // 2
        Gt = G.reshape(F, -1, p).transpose(1, 2)  # (F, p, 2N): per frequency, the planes stacked over rows
        re = torch.bmm(Gt, X.reshape(F, -1, q))  # (F, p, q)
        im = torch.bmm(Gt, iX.reshape(F, -1, q))
        spec = torch.stack((re, im), 1).view(2 * F, p * q)  # rows (f, plane)
        return ((spec.t() @ self.idft).view(p, q, b),)

    def to_dense(self) -> Tensor:
        p, q, b = self.weight.shape
        i = torch.arange(b, device=self.weight.device)
        blocks = self.weight[..., (i[:, None] - i[None, :]) % b]  # (p, q, b, b): C(c_rs)[i, j] = c_rs[(i - j) % b]
        return blocks.permute(0, 2, 1, 3).reshape(p * b, q * b)[:self.out_features, :self.in_features]

    @classmethod
    def from_dense(cls, weight: Tensor, block: int) -> "CirculantMap":
        """The least-squares block-circulant fit: each c_rs[m] is the mean of block (r, s)'s wrapped diagonal m
        (i - j ≡ m mod b), over the entries inside the matrix (padding excluded)."""
        m = cls(weight.shape[1], weight.shape[0], block, device=weight.device, dtype=weight.dtype)
        return fit_entry_means_(m, weight.detach())

    def flops(self, rows: int) -> int:
        """Multiply-adds per row: the DFTs (q·b·4F in, including i·x̂; p·2F·b out) and the spectral
        product (4F·q·p: a complex product is 4 real ones)."""
        p, q, b = self.weight.shape
        F = b // 2 + 1
        return rows * (q * b * 4 * F + 4 * F * q * p + p * 2 * F * b)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, block={self.block}"


@dataclass(frozen=True)
class Circulant(StructureSpec):
    """b×b circulant blocks (C-LSTM), for the gate matrices and the projection; sizes not divisible by b padded."""

    block: int
    map_class = CirculantMap

    def __post_init__(self):
        checks.positive_int("block", self.block)
