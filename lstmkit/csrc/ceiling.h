// The machine's arithmetic ceiling: what its vector FMA units do with no memory traffic at all.
#pragma once

#include <cstdint>

namespace lstmkit {

// GFLOP/s of fp32 fused multiply-adds on `threads` threads (torch's pool), each running `iterations` rounds of
// 16 independent vector FMAs on registers: the bound that no GEMM, and no LSTM, can pass on this machine.
double fma_ceiling(int64_t threads, int64_t iterations);

// GFLOP/s of bf16 dot products (vdpbf16ps, two multiply-adds per fp32 lane) likewise: the bound of the bf16 loop;
// 0 where the CPU (or the build) lacks them.
double dot_ceiling(int64_t threads, int64_t iterations);

// GOP/s (two per multiply-add) of int8 dot products (vpdpbusd, u8 × s8, 64 multiply-adds per instruction) likewise:
// the bound of the int8 loop; 0 where the CPU (or the build) lacks them.
double int8_dot_ceiling(int64_t threads, int64_t iterations);

}  // namespace lstmkit
