// bf16 operands of the time loop: weights packed once per call in bf16 pairs, h_t kept in bf16 for the next
// product, fp32 accumulation. The register tile runs vdpbf16ps (acc += a[2k] b[2k] + a[2k+1] b[2k+1]) where the
// CPU has AVX512_BF16, else a portable tile of two fp32 FMAs per pair in the order the instruction adds them
// (odd then even, measured bit for bit on this repo's CPU), so both give the same bits; LSTMKIT_PORTABLE_BF16=1,
// read once, forces the portable one (tests/test_bf16_native.py).
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "env.h"
#include "gemm.h"

#if defined(__x86_64__) && defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#define LSTMKIT_BF16_DOT 1
#define LSTMKIT_BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))
#endif

namespace lstmkit {

using bf16 = c10::BFloat16;

// Whether the tiles run the bf16 dot-product instructions: compiled in, the CPU has them, and the portable path is
// not asked for. Decided once per process, so a run never mixes the two.
inline bool bf16_dot_instructions() {
  static const bool on = [] {
    if (env_flag("LSTMKIT_PORTABLE_BF16")) return false;
#ifdef LSTMKIT_BF16_DOT
    return static_cast<bool>(__builtin_cpu_supports("avx512bf16"));
#else
    return false;
#endif
  }();
  return on;
}

// n (<= L) floats from bf16, and back rounded to nearest even (as torch's .to(torch.bfloat16), NaN to 0x7fc0).
inline Vectorized<float> load_bf16(const bf16* p, int n) {
#ifdef CPU_CAPABILITY_AVX512
  const __m256i h = _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
#else
  float f[Vectorized<float>::size()] = {};
  for (int i = 0; i < n; ++i) f[i] = static_cast<float>(p[i]);
  return Vectorized<float>::loadu(f);
#endif
}

#ifdef CPU_CAPABILITY_AVX512
// v rounded to nearest even bf16, the result in the upper half of each 32 bits (the lower half is rounding residue;
// NaN becomes 0x7fc0....)
inline __m512i round_to_bf16_bits(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i bias = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)),
                                        _mm512_set1_epi32(0x7fff));
  return _mm512_mask_mov_epi32(_mm512_add_epi32(u, bias), _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                               _mm512_set1_epi32(0x7fc00000));
}
#endif

inline void store_bf16(Vectorized<float> v, bf16* p, int n) {
#ifdef CPU_CAPABILITY_AVX512
  const __m512i r = _mm512_srli_epi32(round_to_bf16_bits(v), 16);
  _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << n) - 1), _mm512_cvtepi32_epi16(r));
#else
  float f[Vectorized<float>::size()];
  v.store(f);
  for (int i = 0; i < n; ++i) p[i] = bf16(f[i]);
#endif
}

// t (float32) rounded to bf16 and held in float32, the value t.to(torch.bfloat16).to(torch.float32) has (NaN stays
// NaN): one pass into an empty_large buffer instead of two conversions into fresh ones (autocast's rounding of the
// operands, lstmkit/autocast.py).
inline at::Tensor rounded_to_bf16(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "rounded_to_bf16 takes a float32 CPU tensor");
  const at::Tensor src = t.contiguous();
  at::Tensor out = empty_large(src.sizes(), src.options());
  const float* in = src.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, src.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
#ifdef CPU_CAPABILITY_AVX512
    for (; begin + 16 <= end; begin += 16) {  // store_bf16's rounding, kept in the upper half of each float
      const __m512i r = round_to_bf16_bits(_mm512_loadu_ps(in + begin));
      _mm512_storeu_si512(dst + begin, _mm512_and_si512(r, _mm512_set1_epi32(int(0xffff0000u))));
    }
#endif
    for (int64_t i = begin; i < end; ++i) dst[i] = static_cast<float>(bf16(in[i]));
  });
  return out;
}

// B (K, N) in bf16 pairs: panel p, pair row q holds for each of its `width` columns u the two bf16
// (B[2q][u], B[2q + 1][u]) side by side (zero past K and N), so one 64-byte load feeds one vdpbf16ps.
struct PairPanels {
  at::Tensor storage;
  const bf16* data = nullptr;
  int64_t K = 0, width = 0, count = 0;  // K: rows of B; the panels hold (K + 1) / 2 pair rows
  int64_t pairs() const { return (K + 1) / 2; }
  const bf16* panel(int64_t p) const { return data + p * pairs() * width * 2; }
};

// t rounded to bf16 (as torch's .to(torch.bfloat16)), contiguous, with an even size along `dim` (the pairs): t
// itself where it already is that, else one conversion (pool.h's `converted`); a zero row or column follows an odd
// size.
inline at::Tensor bf16_even(const at::Tensor& t, int64_t dim) {
  if (t.size(dim) % 2 == 0) return converted(t, at::kBFloat16);
  std::vector<int64_t> shape = t.sizes().vec();
  ++shape[dim];
  at::Tensor padded = at::zeros(shape, t.options().dtype(at::kBFloat16));
  padded.narrow(dim, 0, t.size(dim)).copy_(t);
  return padded;
}

// pack_transposed (gemm.h) for bf16 pairs: S (rows, K) of any float dtype, rounded to bf16 and padded to an even K,
// is a (rows, K / 2) matrix of 32-bit pairs, and its transpose, panelled as fp32 would be, is exactly this layout.
template <typename Run>
PairPanels pack_pairs_transposed(const at::Tensor& s, int64_t width, int64_t count, const Run& run) {
  const int64_t K = s.size(1), pairs = (K + 1) / 2;
  const at::Tensor s16 = bf16_even(s, 1);  // (rows, 2 * pairs)
  const Panels<float> p = pack_transposed<float>(reinterpret_cast<const float*>(s16.data_ptr<bf16>()), pairs, pairs,
                                                 width, count, s.options().dtype(at::kFloat), run);
  return {p.storage, reinterpret_cast<const bf16*>(p.data), K, width, count};
}

// B (K, N) of any float dtype, rounded to bf16, in pair panels of `width` columns: rows 2q and 2q + 1 interleaved
// column by column are a (K / 2, N) matrix of 32-bit pairs, panelled as fp32 would be.
inline PairPanels pack_pair_rows(const at::Tensor& b, int64_t width) {
  const int64_t K = b.size(0), N = b.size(1), pairs = (K + 1) / 2;
  const at::Tensor interleaved = bf16_even(b, 0).view({pairs, 2, N}).transpose(1, 2).contiguous();  // (pairs, N, 2)
  const Panels<float> p = pack_rows<float>(reinterpret_cast<const float*>(interleaved.data_ptr<bf16>()), N, pairs, N,
                                           width, b.options().dtype(at::kFloat));
  return {p.storage, reinterpret_cast<const bf16*>(p.data), K, width, p.count};
}

// tile (MR, NV * 16) (+)= sum over k of a[m][k] * B[k][:], B in pairs, each a[m] K bf16 (an odd K's last pair
// padded with zero).
template <int MR, int NV>
void portable_pair_tile(int64_t K, const bf16* const* a, const bf16* panel, float* tile, bool accumulate) {
  using V = Vectorized<float>;
  constexpr int L = V::size(), W = NV * L;
  V acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NV; ++n) acc[m][n] = accumulate ? V::loadu(tile + m * W + n * L) : V(0.f);
  const int64_t pairs = (K + 1) / 2;
  for (int64_t q = 0; q < pairs; ++q, panel += 2 * W) {
    V even[NV], odd[NV];
    for (int n = 0; n < NV; ++n) {
#ifdef CPU_CAPABILITY_AVX512
      const __m512i b = _mm512_loadu_si512(panel + n * 2 * L);
      even[n] = _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
      odd[n] = _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32(int(0xffff0000u))));
#else
      float e[L], o[L];
      for (int u = 0; u < L; ++u) e[u] = float(panel[n * 2 * L + 2 * u]), o[u] = float(panel[n * 2 * L + 2 * u + 1]);
      even[n] = V::loadu(e), odd[n] = V::loadu(o);
#endif
    }
    for (int m = 0; m < MR; ++m) {
      const V ae(float(a[m][2 * q])), ao(2 * q + 1 < K ? float(a[m][2 * q + 1]) : 0.f);
      for (int n = 0; n < NV; ++n) acc[m][n] = at::vec::fmadd(ae, even[n], at::vec::fmadd(ao, odd[n], acc[m][n]));
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NV; ++n) acc[m][n].store(tile + m * W + n * L);
}

#ifdef LSTMKIT_BF16_DOT
// acc[m][:] += the pair am[m] (broadcast) dotted with the NV vectors of pairs at `row`
template <int MR, int NV>
LSTMKIT_BF16_TARGET inline void dot_step(__m512 (&acc)[MR][NV], const __m512i* am, const bf16* row) {
  __m512bh b[NV];
#pragma GCC unroll 4
  for (int n = 0; n < NV; ++n) b[n] = (__m512bh)_mm512_loadu_si512(row + n * 32);
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], (__m512bh)am[m], b[n]);
}

template <int MR, int NV>
LSTMKIT_BF16_TARGET void dot_pair_tile(int64_t K, const bf16* const* a, const bf16* panel, float* tile,
                                       bool accumulate) {
  constexpr int W = NV * 16;
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[m][n] = accumulate ? _mm512_loadu_ps(tile + m * W + n * 16) : _mm512_setzero_ps();
  const int64_t full = K / 2;
  for (int64_t q = 0; q < full; ++q, panel += 2 * W) {
    __m512i am[MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      int32_t pair;
      std::memcpy(&pair, a[m] + 2 * q, sizeof pair);
      am[m] = _mm512_set1_epi32(pair);
    }
    dot_step<MR, NV>(acc, am, panel);
  }
  if (K % 2) {  // the last pair: (a[m][K - 1], 0)
    __m512i am[MR];
    for (int m = 0; m < MR; ++m) {
      uint16_t last;
      std::memcpy(&last, a[m] + K - 1, sizeof last);
      am[m] = _mm512_set1_epi32(last);
    }
    dot_step<MR, NV>(acc, am, panel);
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) _mm512_storeu_ps(tile + m * W + n * 16, acc[m][n]);
}
#endif

using PairKernel = void (*)(int64_t, const bf16* const*, const bf16*, float*, bool);

template <int NV, int... MR>
PairKernel pair_kernel_for(int rows, std::integer_sequence<int, MR...>) {
#ifdef LSTMKIT_BF16_DOT
  static constexpr PairKernel dot[] = {dot_pair_tile<MR + 1, NV>...};
  if (bf16_dot_instructions()) return dot[rows - 1];
#endif
  static constexpr PairKernel portable[] = {portable_pair_tile<MR + 1, NV>...};
  return portable[rows - 1];
}

// The kernel for a tile of `rows` (1..kTileRows) rows and `vecs` (1, 2 or 4) vectors of columns.
inline PairKernel pair_kernel(int rows, int vecs) {
  constexpr auto mr = std::make_integer_sequence<int, kTileRows>{};
  switch (vecs) {
    case 1: return pair_kernel_for<1>(rows, mr);
    case 2: return pair_kernel_for<2>(rows, mr);
    default: return pair_kernel_for<4>(rows, mr);
  }
}

template <>
struct Operand<bf16> {
  using Acc = float;
  using Stored = bf16;
  using RowCopy = NoCopy<bf16>;
  using Weight = at::Tensor;
  using Panels = PairPanels;
  static const at::Tensor& weight(const at::Tensor& w, const std::optional<at::Tensor>& /*scale: none*/) { return w; }
  static PairKernel kernel(int rows, int vecs) { return pair_kernel(rows, vecs); }
  template <typename Run>
  static Panels pack_transposed(const at::Tensor& s, int64_t width, int64_t count, const Run& run) {
    return pack_pairs_transposed(s, width, count, run);
  }
  static Panels pack_rows(const at::Tensor& b, int64_t width) { return pack_pair_rows(b, width); }
  // the rows a product reads: the bf16 copy the loop keeps beside its float values
  static const bf16* rows(const float* /*values*/, const bf16* copy) { return copy; }
  static Vectorized<float> load(const bf16* p, int n) { return load_bf16(p, n); }
  static void store(Vectorized<float> v, bf16* p, int n) { store_bf16(v, p, n); }
};

}  // namespace lstmkit
