// int8 operands of the time loop (inference): weights int8 with per-output-row scales, activations (x_t, h_{t-1},
// and h_t before a projection) quantized per row each step as lstmkit/maps/int8.py's int_mm kernel does (symmetric,
// s_b = max_j |x_bj| / 127, q = round(x / s_b) half to even), exact int32 sums, y = (float(sum) · s_b) · s_w in
// the tile's epilogue; the loop keeps x and h_t in float32 and each product reads a per-step quantized copy
// (QuantRows, the policy's RowCopy). The register tile runs vpdpbusd (u8 × s8 in groups of 4 k, the rows held as
// q + 128 and 128·Σ_k w_k subtracted per column) where the CPU has AVX512_VNNI, else a portable integer tile; both
// hand the same int32 sums to one epilogue, so the same bits. LSTMKIT_PORTABLE_INT8=1, read once, forces the
// portable one (tests/test_int8_native.py).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "env.h"
#include "gemm.h"

#if defined(__x86_64__) && defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#define LSTMKIT_INT8_DOT 1
#define LSTMKIT_INT8_TARGET __attribute__((target("avx512vnni,avx512f,avx512bw,avx512vl")))
#endif

namespace lstmkit {

enum class q8 : uint8_t {};  // an activation as the products read it: q + 128, q in [-127, 127]

// Whether the tiles run vpdpbusd: compiled in, the CPU has AVX512_VNNI, and the portable path is not asked for.
inline bool int8_dot_instructions() {
  static const bool on = [] {
    if (env_flag("LSTMKIT_PORTABLE_INT8")) return false;
#ifdef LSTMKIT_INT8_DOT
    return static_cast<bool>(__builtin_cpu_supports("avx512vnni"));
#else
    return false;
#endif
  }();
  return on;
}

inline int64_t quads(int64_t K) { return (K + 3) / 4; }  // groups of 4 k, the unit of one vpdpbusd lane

constexpr int64_t kRowHeader = 64;  // bytes before each quantized row: its scale s_b (float), then padding

// `count` rows of K activations quantized per row: slot b holds s_b, then q_bj + 128 for j < K (128 past K, to a
// whole group of 4), rows a cache line apart.
struct QuantRows {
  static constexpr bool kPass = true;  // the loop quantizes each row once (a phase) before the products read it
  at::Tensor storage;
  uint8_t* data = nullptr;
  int64_t K = 0, stride = 0;

  QuantRows() = default;
  QuantRows(int64_t count, int64_t K, const at::TensorOptions& options)
      : K(K), stride(kRowHeader + (quads(K) * 4 + 63) / 64 * 64) {
    storage = at::empty({std::max<int64_t>(count, 1) * stride}, options.dtype(at::kByte));
    data = storage.data_ptr<uint8_t>();
  }

  const q8* operator()(int64_t b, const float* /*values: quantized into slot b*/) const {
    return reinterpret_cast<const q8*>(data + b * stride + kRowHeader);
  }

  // slot b from the K floats at x
  void prepare(int64_t b, const float* x) const {
    uint8_t* row = data + b * stride;
    uint8_t* q = row + kRowHeader;
    float top = 0.f;
    int64_t j = 0;
#ifdef CPU_CAPABILITY_AVX512
    __m512 m = _mm512_setzero_ps();
    for (; j + 16 <= K; j += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
    top = _mm512_reduce_max_ps(m);
#endif
    for (; j < K; ++j) top = std::max(top, std::fabs(x[j]));
    const float s = std::max(top, FLT_MIN) / 127.f;  // as row_scales: clamp_min(tiny) / 127
    std::memcpy(row, &s, sizeof s);
    j = 0;
#ifdef CPU_CAPABILITY_AVX512
    const __m512 sv = _mm512_set1_ps(s), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
    for (; j + 16 <= K; j += 16) {
      __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + j), sv),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
      const __m512i u = _mm512_add_epi32(_mm512_cvtps_epi32(r), _mm512_set1_epi32(128));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j), _mm512_cvtepi32_epi8(u));
    }
#endif
    for (; j < K; ++j) q[j] = static_cast<uint8_t>(std::clamp(std::nearbyint(x[j] / s), -127.f, 127.f) + 128.f);
    for (; j < quads(K) * 4; ++j) q[j] = 128;
  }
};

inline float row_scale(const q8* row) {
  float s;
  std::memcpy(&s, reinterpret_cast<const uint8_t*>(row) - kRowHeader, sizeof s);
  return s;
}

// int8 weights (rows, K) with per-row scales (rows,), as Int8Map stores them (lstmkit/maps/quantized.py).
struct Int8Weight {
  at::Tensor q, scale;
  int64_t size(int64_t d) const { return q.size(d); }
};

// B (K, N) int8 in panels of `width` columns: panel p holds quads(K) rows of `width` groups of 4 bytes
// (B[4r..4r+3][u] for column u), then the columns' scales s_w (floats) and 128·Σ_k B[k][u] (int32), zero past N,
// so one 64-byte load feeds one vpdpbusd and the epilogue finds its scales after the weights.
struct Int8Panels {
  at::Tensor storage;
  const int32_t* data = nullptr;
  int64_t K = 0, width = 0, count = 0;
  const int32_t* panel(int64_t p) const { return data + p * (quads(K) + 2) * width; }
};

// The layout of pack_transposed (gemm.h) for int8: vector column c of panel p holds the `rows` rows of W (rows, K)
// from `first`, where {first, rows} = run(p, c), each as quads(K) words of 4 weights, its scale and 128·Σ_k W_k.
template <typename Run>
Int8Panels pack_int8_transposed(const Int8Weight& w, int64_t width, int64_t count, const Run& run) {
  constexpr int64_t L = Vectorized<float>::size();
  const int64_t K = w.q.size(1), words = quads(K), height = words + 2;
  const at::Tensor scale = w.scale.to(at::kFloat).contiguous();
  at::Tensor storage = empty_large({count * height * width}, w.q.options().dtype(at::kInt));
  int32_t* data = storage.data_ptr<int32_t>();
  const int8_t* q = w.q.data_ptr<int8_t>();
  const float* s = scale.data_ptr<float>();
  const bool whole = K % 4 == 0 && reinterpret_cast<uintptr_t>(q) % 4 == 0;  // rows of aligned 32-bit words
  at::parallel_for(0, count, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t c = 0; c < width / L; ++c) {
        const auto [first, rows] = run(p, c);
        int32_t* panel = data + p * height * width + c * L;
        const int64_t valid = std::max<int64_t>(rows, 0);
        if (whole && valid) {  // the rows as (rows, words) 32-bit matrices, transposed by ATen
          const float* words_of = reinterpret_cast<const float*>(q + first * K);
          for (int64_t k0 = 0; k0 < words; k0 += L) {
            const int kk = static_cast<int>(std::min(L, words - k0));
            at::vec::transpose_mxn<float>(words_of + k0, words, reinterpret_cast<float*>(panel + k0 * width), width,
                                          static_cast<int>(valid), kk);
          }
        }
        for (int64_t u = 0; u < L; ++u) {
          int32_t* column = panel + u;
          if (u >= valid) {
            for (int64_t r = 0; r < height; ++r) column[r * width] = 0;
            continue;
          }
          const int8_t* row = q + (first + u) * K;
          int32_t sum = 0;
          for (int64_t k = 0; k < K; ++k) sum += row[k];
          for (int64_t r = whole ? words : 0; r < words; ++r) {  // else byte by byte
            int8_t four[4] = {0, 0, 0, 0};
            for (int64_t k = 0; k < 4 && 4 * r + k < K; ++k) four[k] = row[4 * r + k];
            std::memcpy(column + r * width, four, sizeof four);
          }
          std::memcpy(column + words * width, s + first + u, sizeof(float));
          column[(words + 1) * width] = 128 * sum;
        }
      }
  });
  return {storage, data, K, width, count};
}

// tile (MR, NV·16) (+)= (float(sum) · s_b) · s_w from the int32 sums of the rows as stored (q + 128) times the
// weights, (MR, NV·16), less 128·Σ_k w_k: the one epilogue of both tiles (vpdpbusd's sums in registers, handed over
// as they are: GCC keeps the accumulators in memory when the tile subtracts before storing them).
template <int MR, int NV>
__attribute__((noinline)) void dequantize(const int32_t* sums, const q8* const* a, const int32_t* panel_end,
                                          float* tile, bool accumulate) {
  constexpr int W = NV * 16;
  const float* sw = reinterpret_cast<const float*>(panel_end);
  const int32_t* comp = panel_end + W;
  for (int m = 0; m < MR; ++m) {
    const float sx = row_scale(a[m]);
    float* t = tile + m * W;
    const int32_t* sum = sums + m * W;
    if (accumulate) {
      for (int u = 0; u < W; ++u) t[u] += static_cast<float>(sum[u] - comp[u]) * sx * sw[u];
    } else {
      for (int u = 0; u < W; ++u) t[u] = static_cast<float>(sum[u] - comp[u]) * sx * sw[u];
    }
  }
}

template <int MR, int NV>
void portable_int8_tile(int64_t K, const q8* const* a, const int32_t* panel, float* tile, bool accumulate) {
  constexpr int W = NV * 16;
  int32_t sums[MR * W] = {};
  const int64_t words = quads(K);
  for (int64_t r = 0; r < words; ++r, panel += W) {
    const int8_t* b = reinterpret_cast<const int8_t*>(panel);
    for (int m = 0; m < MR; ++m) {
      const uint8_t* x = reinterpret_cast<const uint8_t*>(a[m]) + 4 * r;
      const int x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];  // q + 128, as vpdpbusd reads them
      for (int u = 0; u < W; ++u)
        sums[m * W + u] += x0 * b[4 * u] + x1 * b[4 * u + 1] + x2 * b[4 * u + 2] + x3 * b[4 * u + 3];
    }
  }
  dequantize<MR, NV>(sums, a, panel, tile, accumulate);
}

#ifdef LSTMKIT_INT8_DOT
template <int MR, int NV>
LSTMKIT_INT8_TARGET void vnni_int8_tile(int64_t K, const q8* const* a, const int32_t* panel, float* tile,
                                        bool accumulate) {
  constexpr int W = NV * 16;
  __m512i acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[m][n] = _mm512_setzero_si512();
  const int64_t words = quads(K);
  for (int64_t r = 0; r < words; ++r, panel += W) {
    __m512i b[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) b[n] = _mm512_loadu_si512(panel + n * 16);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      int32_t word;
      std::memcpy(&word, reinterpret_cast<const uint8_t*>(a[m]) + 4 * r, sizeof word);
      const __m512i x = _mm512_set1_epi32(word);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[m][n] = _mm512_dpbusd_epi32(acc[m][n], x, b[n]);
    }
  }
  alignas(64) int32_t sums[MR * W];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) _mm512_store_si512(sums + m * W + n * 16, acc[m][n]);
  dequantize<MR, NV>(sums, a, panel, tile, accumulate);
}
#endif

using Int8Kernel = void (*)(int64_t, const q8* const*, const int32_t*, float*, bool);

template <int NV, int... MR>
Int8Kernel int8_kernel_for(int rows, std::integer_sequence<int, MR...>) {
#ifdef LSTMKIT_INT8_DOT
  static constexpr Int8Kernel dot[] = {vnni_int8_tile<MR + 1, NV>...};
  if (int8_dot_instructions()) return dot[rows - 1];
#endif
  static constexpr Int8Kernel portable[] = {portable_int8_tile<MR + 1, NV>...};
  return portable[rows - 1];
}

template <>
struct Operand<q8> {
  using Acc = float;
  using Stored = float;  // x and h_t as the loop keeps them; the products read QuantRows of them
  using RowCopy = QuantRows;
  using Weight = Int8Weight;
  using Panels = Int8Panels;
  static Weight weight(const at::Tensor& q, const std::optional<at::Tensor>& scale) {
    TORCH_CHECK(scale && scale->dim() == 1 && scale->size(0) == q.size(0) && scale->scalar_type() == at::kFloat,
                "an int8 weight (", q.size(0), ", ", q.size(1), ") needs its float32 scales (", q.size(0), ",)");
    return {q, *scale};
  }
  static Int8Kernel kernel(int rows, int vecs) {
    constexpr auto mr = std::make_integer_sequence<int, kTileRows>{};
    switch (vecs) {
      case 1: return int8_kernel_for<1>(rows, mr);
      case 2: return int8_kernel_for<2>(rows, mr);
      default: return int8_kernel_for<4>(rows, mr);
    }
  }
  template <typename Run>
  static Panels pack_transposed(const Weight& w, int64_t width, int64_t count, const Run& run) {
    return pack_int8_transposed(w, width, count, run);
  }
  static Vectorized<float> load(const float* p, int n) { return Vectorized<float>::loadu(p, n); }
  static void store(Vectorized<float> v, float* p, int n) { v.store(p, n); }
};

}  // namespace lstmkit
