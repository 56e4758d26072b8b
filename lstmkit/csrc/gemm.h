// The per-step products of the time loop, C (rows, N) = A (rows, K) B (K, N), with B packed once per call
// into column panels and a register-tile kernel that leaves each (rows x panel) tile in a small buffer for a
// fused epilogue (the LSTM pointwise step) to consume while it is still in L1.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

#include "pool.h"

namespace lstmkit {

using at::vec::Vectorized;

// Rows of A per register tile: 6 x 4 vector accumulators take 24 of AVX-512's 32 registers; with 16 (AVX2), 3 x 4.
constexpr int kTileRows = sizeof(Vectorized<float>) == 64 ? 6 : 3;
constexpr int kMaxVecs = 4;  // vectors of columns per panel

// B (K, N) packed into `count` panels of `width` columns: B[k][p * width + u] sits at panel(p)[k * width + u],
// zero past N, so the kernel streams one panel row per k with full-vector loads.
template <typename T>
struct Panels {
  at::Tensor storage;  // allocated through PyTorch, so memory profilers see it
  const T* data = nullptr;
  int64_t K = 0, width = 0, count = 0;
  const T* panel(int64_t p) const { return data + p * K * width; }
};

// B (K, N), rows `ld` apart, packed into panels of `width` columns: row by row, a copy.
template <typename T>
Panels<T> pack_rows(const T* b, int64_t ld, int64_t K, int64_t N, int64_t width, const at::TensorOptions& options) {
  const int64_t count = (N + width - 1) / width;
  at::Tensor storage = empty_large({count * K * width}, options);
  T* data = storage.template data_ptr<T>();
  at::parallel_for(0, count, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = std::min(width, N - p * width);
      for (int64_t k = 0; k < K; ++k) {
        T* dst = data + (p * K + k) * width;
        std::fill(std::copy_n(b + k * ld + p * width, n, dst), dst + width, T(0));
      }
    }
  });
  return {storage, data, K, width, count};
}

// B (K, N) given as its transpose S (rows `ld` apart, each contiguous along k), packed into `count` panels of
// `width` columns: vector column c of panel p holds the `rows` rows of S from `first`, where {first, rows} =
// run(p, c) (rows < L: zeros after them). Transposed in L x L blocks, vectorized by ATen.
template <typename T, typename Run>
Panels<T> pack_transposed(const T* s, int64_t ld, int64_t K, int64_t width, int64_t count,
                          const at::TensorOptions& options, const Run& run) {
  constexpr int64_t L = Vectorized<T>::size();
  at::Tensor storage = empty_large({count * K * width}, options);
  T* data = storage.template data_ptr<T>();
  at::parallel_for(0, count, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t c = 0; c < width / L; ++c) {
        const auto [first, rows] = run(p, c);
        for (int64_t k0 = 0; k0 < K; k0 += L) {
          const int kk = static_cast<int>(std::min(L, K - k0));
          T* dst = data + (p * K + k0) * width + c * L;
          const int valid = static_cast<int>(std::max<int64_t>(rows, 0));
          if (valid) at::vec::transpose_mxn<T>(s + first * ld + k0, ld, dst, width, valid, kk);
          for (int64_t k = 0; k < kk; ++k) std::fill(dst + k * width + valid, dst + k * width + L, T(0));
        }
      }
  });
  return {storage, data, K, width, count};
}

// tile (MR, NV * L) (+)= sum over k of a[m][k] * panel[k][:], with a[m] the MR row pointers of A.
template <typename T, int MR, int NV>
void tile_kernel(int64_t K, const T* const* a, const T* panel, T* tile, bool accumulate) {
  using V = Vectorized<T>;
  constexpr int L = V::size(), W = NV * L;
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[m][n] = accumulate ? V::loadu(tile + m * W + n * L) : V(T(0));
  for (int64_t k = 0; k < K; ++k, panel += W) {
    V b[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) b[n] = V::loadu(panel + n * L);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const V am(a[m][k]);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[m][n] = at::vec::fmadd(am, b[n], acc[m][n]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[m][n].store(tile + m * W + n * L);
}

template <typename T>
using TileKernel = void (*)(int64_t, const T* const*, const T*, T*, bool);

template <typename T, int NV, int... MR>
constexpr TileKernel<T> kernel_for(int rows, std::integer_sequence<int, MR...>) {
  constexpr TileKernel<T> table[] = {tile_kernel<T, MR + 1, NV>...};
  return table[rows - 1];
}

// The kernel for a tile of `rows` (1..kTileRows) rows and `vecs` (1, 2 or 4) vectors of columns.
template <typename T>
TileKernel<T> kernel(int rows, int vecs) {
  constexpr auto mr = std::make_integer_sequence<int, kTileRows>{};
  switch (vecs) {
    case 1: return kernel_for<T, 1>(rows, mr);
    case 2: return kernel_for<T, 2>(rows, mr);
    default: return kernel_for<T, 4>(rows, mr);
  }
}

// The rows a product reads of values the loop keeps as they are (float, double, bf16): the values themselves, no
// copy and no pass over them (int8.h's QuantRows is the other kind: a per-step quantized copy).
template <typename E>
struct NoCopy {
  static constexpr bool kPass = false;
  NoCopy() = default;
  NoCopy(int64_t /*count*/, int64_t /*K*/, const at::TensorOptions& /*options*/) {}
  const E* operator()(int64_t /*b*/, const E* values) const { return values; }
  void prepare(int64_t /*b*/, const E* /*values*/) const {}
};

// The element type of the loop's operands (weights packed per call, and h_t as the next product reads it), as a
// policy: its panels, packing, register tile, and loads and stores of the fp32 (or fp64) vectors the cell computes
// in. Here the operands as they are, float or double; bf16.h adds bf16. The loop (lstm.cpp) never names a type.
template <typename E>
struct Operand {
  using Acc = E;  // what tiles accumulate in and the cell computes in
  using Stored = E;  // what the loop keeps x and h_t in
  using RowCopy = NoCopy<E>;  // what its products read of those rows
  using Weight = at::Tensor;  // a weight as the packing takes it
  using Panels = lstmkit::Panels<E>;
  static const at::Tensor& weight(const at::Tensor& w, const std::optional<at::Tensor>& /*scale: none*/) { return w; }
  static TileKernel<E> kernel(int rows, int vecs) { return lstmkit::kernel<E>(rows, vecs); }
  // S (rows, K) of dtype E, its transpose packed as pack_transposed lays it out
  template <typename Run>
  static Panels pack_transposed(const at::Tensor& s, int64_t width, int64_t count, const Run& run) {
    return lstmkit::pack_transposed<E>(s.data_ptr<E>(), s.size(1), s.size(1), width, count, s.options(), run);
  }
  // B (K, N) as it is, in panels of `width` columns
  static Panels pack_rows(const at::Tensor& b, int64_t width) {
    return lstmkit::pack_rows<E>(b.data_ptr<E>(), b.size(1), b.size(0), b.size(1), width, b.options());
  }
  // the rows a product reads of values the loop keeps in E: the E values themselves (no copy)
  static const E* rows(const E* values, const E* /*copy: none*/) { return values; }
  static Vectorized<E> load(const E* p, int n) { return Vectorized<E>::loadu(p, n); }
  static void store(Vectorized<E> v, E* p, int n) { v.store(p, n); }
};

// `rows` split into the fewest tiles of at most kTileRows rows, as even as possible.
struct RowTiles {
  int64_t rows, count;
  explicit RowTiles(int64_t rows) : rows(rows), count((rows + kTileRows - 1) / kTileRows) {}
  int64_t begin(int64_t i) const { return i * (rows / count) + std::min(i, rows % count); }
};

}  // namespace lstmkit
