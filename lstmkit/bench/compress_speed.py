"""The compress study's speed half: int8 GEMM kernels, quantized and pruned LSTMs against fp32, the sparse sweep.

Everything here runs on random weights (speed and size do not depend on the values); the Tiny Shakespeare half
(lstmkit.bench.compress_lm) measures what compression does to a trained model's loss.
"""
from __future__ import annotations

import copy
import sys
import warnings

import torch
from torch import nn

from lstmkit.bench.timing import time_interleaved
from lstmkit.compress import densify, prune, quantize
from lstmkit.compress.summary import stored_bytes
from lstmkit.layer import LSTM
from lstmkit.maps import int8
from lstmkit.maps.quantized import Int8Map
from lstmkit.maps.sparse import SparseMap

SHAPES = {"L": (64, 64, 512), "XL": (32, 64, 1024)}  # name -> (T, B, H = I), as lstmkit.bench.cases
QUICK_SHAPES = {"Q": (8, 4, 32)}
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
QUICK_SPARSITIES = (0.5, 0.9)


def gemm_kernels(M: int, H: int) -> dict:
    """(M, H) · (H, 4H) products with fp32, bf16 and int8 weights: name -> zero-argument function."""
    gen = torch.Generator().manual_seed(0)
    x, W = torch.randn(M, H, generator=gen), torch.randn(4 * H, H, generator=gen) / H ** 0.5
    m = Int8Map.from_dense(W)
    wb = W.bfloat16()
    fns = {"fp32": lambda: nn.functional.linear(x, W), "bf16": lambda: nn.functional.linear(x.bfloat16(), wb),
           "int_mm": lambda: int8.int_mm_linear(x, m.weight, m.scale)}
    for kernel in int8.PACKED:
        if int8.packed_available(kernel):
            packed = int8.prepack(kernel, m.weight, m.scale)
            fns[kernel] = (lambda p: lambda: int8.packed_linear(x, p))(packed)
    if M <= 64:  # weight-only int8 (float activations): far slower, timed at batch size only
        fns["weight_int8pack"] = lambda: torch._weight_int8pack_mm(x, m.weight, m.scale)
    return fns


def kernel_table(quick: bool, repeats: int, warmup: int) -> list[dict]:
    shapes = [(4, 32)] if quick else [(64, 512), (64, 1024), (4096, 512), (2048, 1024)]
    rows = []
    for M, H in shapes:
        print(f"int8 kernels: ({M} x {H}) . ({H} x {4 * H})", file=sys.stderr, flush=True)
        t = time_interleaved(gemm_kernels(M, H), repeats, warmup)
        fp32 = t["fp32"].median
        rows += [{"M": M, "K": H, "N": 4 * H, "kernel": k, "ms": v.median * 1e3, "speedup": fp32 / v.median}
                 for k, v in t.items()]
    return rows


def lstm_variants(H: int, seed: int) -> dict[str, nn.Module]:
    """fp32 lstmkit.LSTM (impl auto: the native loop) and its compressed copies, all in eval mode."""
    torch.manual_seed(seed)
    base = LSTM(H, H).eval()
    variants = {"fp32": base, "fp32 fused": copy.deepcopy(base)}
    variants["fp32 fused"].impl = "fused"  # the engine every map runs on: separates engine cost from kernel gains
    for mode in ("int8", "bf16", "fixed16"):
        variants[mode] = quantize(copy.deepcopy(base), mode)
    for s in (0.8, 0.9):
        variants[f"sparse {s:.0%}"] = prune(copy.deepcopy(base), s).eval()
    return variants


def engine_table(quick: bool, repeats: int, warmup: int, seed: int) -> list[dict]:
    rows = []
    for name, (T, B, H) in (QUICK_SHAPES if quick else SHAPES).items():
        print(f"compressed LSTMs: {name} T={T} B={B} H={H}", file=sys.stderr, flush=True)
        variants = lstm_variants(H, seed)
        x = torch.randn(T, B, H, generator=torch.Generator().manual_seed(seed + 1))
        t = time_interleaved({k: _inference(m, x) for k, m in variants.items()}, repeats, warmup)
        with torch.no_grad():
            ref = variants["fp32"](x)[0]
            for k, m in variants.items():  # error against fp32; a pruned layer against its own dense matrices
                exact = densify(m)(x)[0] if k.startswith("sparse") else ref
                rows.append({"shape": name, "T": T, "B": B, "H": H, "variant": k, "ms": t[k].median * 1e3,
                             "speedup": t["fp32"].median / t[k].median, "weight_bytes": stored_bytes(m),
                             "size_ratio": stored_bytes(variants["fp32"]) / stored_bytes(m),
                             "max_rel_err": float((m(x)[0] - exact).abs().max() / exact.abs().max())})
    return rows


def _inference(m: nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            m(x)
    return run


def gemm_sweep(quick: bool, repeats: int, warmup: int) -> list[dict]:
    """Dense against CSR products (the SparseMap's two inference paths) across sparsities."""
    rows = []
    shapes = [(4, 32)] if quick else [(64, 512), (64, 1024), (4096, 512)]
    for M, H in shapes:
        x = torch.randn(M, H, generator=torch.Generator().manual_seed(0))
        W = torch.randn(4 * H, H, generator=torch.Generator().manual_seed(1))
        for s in QUICK_SPARSITIES if quick else SPARSITIES:
            m = SparseMap.from_dense(W, s).eval()
            dense, csr = m._masked(), m._masked(csr=True)
            t = time_interleaved({"dense": lambda: nn.functional.linear(x, dense),
                                  "csr": lambda: torch.sparse.mm(csr, x.t()).t()}, repeats, warmup)
            rows.append({"M": M, "H": H, "sparsity": s, "dense_ms": t["dense"].median * 1e3,
                         "csr_ms": t["csr"].median * 1e3, "speedup": t["dense"].median / t["csr"].median})
    return rows


def lstm_sweep(quick: bool, repeats: int, warmup: int, seed: int) -> list[dict]:
    """Pruned LSTMs (SparseMap, its own dense/CSR choice) against the fp32 dense LSTM, at shape L."""
    T, B, H = QUICK_SHAPES["Q"] if quick else SHAPES["L"]
    torch.manual_seed(seed)
    base = LSTM(H, H).eval()
    models = {"fp32": base, **{f"{s:g}": prune(copy.deepcopy(base), s).eval()
                               for s in (QUICK_SPARSITIES if quick else SPARSITIES)}}
    x = torch.randn(T, B, H, generator=torch.Generator().manual_seed(seed + 1))
    print(f"pruned LSTMs: T={T} B={B} H={H}", file=sys.stderr, flush=True)
    t = time_interleaved({k: _inference(m, x) for k, m in models.items()}, repeats, warmup)
    return [{"sparsity": float(k), "T": T, "B": B, "H": H, "ms": t[k].median * 1e3,
             "speedup": t["fp32"].median / t[k].median} for k in models if k != "fp32"]


def run_speed(cfg) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sparse CSR beta; deprecated quantized tensors (packing)
        return {"kernels": kernel_table(cfg.quick, cfg.repeats, cfg.warmup),
                "engine": engine_table(cfg.quick, cfg.repeats, cfg.warmup, cfg.seed),
                "gemm_sweep": gemm_sweep(cfg.quick, cfg.repeats, cfg.warmup),
                "lstm_sweep": lstm_sweep(cfg.quick, cfg.repeats, cfg.warmup, cfg.seed)}
