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
    const char* portable = std::getenv("LSTMKIT_PORTABLE_INT8");
    if (portable && *portable && std::strcmp(portable, "0") != 0) return false;
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

// The transposed packing of pack_transposed (gemm.h): W (rows, K) int8 with its scales is a (rows, quads(K) + 2)
// matrix of 32-bit words (4 weights a word, then the scale's bits, then the compensation), panelled as fp32 would be.
template <typename Run>
Int8Panels pack_int8_transposed(const Int8Weight& w, int64_t width, int64_t count, const Run& run) {
  const int64_t rows = w.q.size(0), K = w.q.size(1), words = quads(K);
  at::Tensor padded = at::zeros({rows, 4 * words}, w.q.options().dtype(at::kChar));
  padded.narrow(1, 0, K).copy_(w.q);
  const at::Tensor comp = padded.to(at::kInt).sum(1, /*keepdim=*/true, at::kInt).mul_(128);  // (rows, 1)
  const at::Tensor scale = w.scale.to(at::kFloat).contiguous().view({rows, 1}).view(at::kInt);
  const at::Tensor s = at::cat({padded.view(at::kInt), scale, comp}, 1).contiguous();  // (rows, words + 2)
  const Panels<float> p = pack_transposed<float>(reinterpret_cast<const float*>(s.data_ptr<int32_t>()), words + 2,
                                                 words + 2, width, count, w.q.options().dtype(at::kFloat), run);
  return {p.storage, reinterpret_cast<const int32_t*>(p.data), K, width, count};
}

// tile (MR, NV·16) (+)= (float(sum) · s_b) · s_w from the int32 sums (MR, NV·16): the one epilogue of both tiles.
template <int MR, int NV>
__attribute__((noinline)) void dequantize(const int32_t* sums, const q8* const* a, const int32_t* panel_end,
                                          float* tile, bool accumulate) {
  constexpr int W = NV * 16;
  const float* sw = reinterpret_cast<const float*>(panel_end);
  for (int m = 0; m < MR; ++m) {
    const float sx = row_scale(a[m]);
    float* t = tile + m * W;
    const int32_t* sum = sums + m * W;
    if (accumulate) {
      for (int u = 0; u < W; ++u) t[u] += static_cast<float>(sum[u]) * sx * sw[u];
    } else {
      for (int u = 0; u < W; ++u) t[u] = static_cast<float>(sum[u]) * sx * sw[u];
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
      const int x0 = x[0] - 128, x1 = x[1] - 128, x2 = x[2] - 128, x3 = x[3] - 128;
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
#pragma GCC unroll 4
  for (int n = 0; n < NV; ++n) {
    const __m512i comp = _mm512_loadu_si512(panel + W + n * 16);  // 128·Σ_k w_k: the +128 of the rows, removed
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) _mm512_store_si512(sums + m * W + n * 16, _mm512_sub_epi32(acc[m][n], comp));
  }
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
