// fma_ceiling, dot_ceiling and int8_dot_ceiling (ceiling.h): 16 independent accumulators cover the latency (4 cycles)
// times the ports (2) of the FMA (and vdpbf16ps, 32 multiply-adds each; vpdpbusd, 64) with room to spare, so the loop
// runs at throughput.
#include "ceiling.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include "bf16.h"
#include "int8.h"

#include <algorithm>
#include <atomic>
#include <chrono>

namespace lstmkit {

namespace {

constexpr int kChains = 16;

float fma_chains(int64_t iterations) {
  using Vec = at::vec::Vectorized<float>;
  Vec acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = Vec(1.0f + j * 1e-7f);
  const Vec a(0.9999999f), b(1e-7f);
  for (int64_t n = 0; n < iterations; ++n) {
#pragma GCC unroll 16
    for (int j = 0; j < kChains; ++j) acc[j] = at::vec::fmadd(acc[j], a, b);
  }
  Vec sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = sum + acc[j];
  float out[Vec::size()];
  sum.store(out);
  return out[0];  // used, so the loop cannot be dropped
}

#ifdef LSTMKIT_BF16_DOT
LSTMKIT_BF16_TARGET float dot_chains(int64_t iterations) {
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(1.0f + j * 1e-7f);
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);  // 1, 1e-7
  for (int64_t n = 0; n < iterations; ++n) {
#pragma GCC unroll 16
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  }
  __m512 sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm512_add_ps(sum, acc[j]);
  return _mm512_reduce_add_ps(sum);
}
#endif

#ifdef LSTMKIT_INT8_DOT
LSTMKIT_INT8_TARGET float int8_dot_chains(int64_t iterations) {
  __m512i acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_epi32(j);
  const __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x01ff01ff);  // u8 1s; s8 -1, 1, -1, 1
  for (int64_t n = 0; n < iterations; ++n) {
#pragma GCC unroll 16
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  __m512i sum = acc[0];
  for (int j = 1; j < kChains; ++j) sum = _mm512_add_epi32(sum, acc[j]);
  return static_cast<float>(_mm512_reduce_add_epi32(sum));
}
#endif

template <typename Chains>
double rate(int64_t threads, int64_t iterations, double flops_per_iteration, const Chains& chains) {
  threads = std::min<int64_t>(threads, at::get_num_threads());
  std::atomic<float> sink{0.0f};
  const auto start = std::chrono::steady_clock::now();
  at::parallel_for(0, threads, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) sink.store(sink.load() + chains(iterations));
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return flops_per_iteration * iterations * threads / seconds / 1e9 + 0.0 * sink.load();
}

}  // namespace

double dot_ceiling(int64_t threads, int64_t iterations) {
  TORCH_CHECK(threads >= 1 && iterations >= 1, "dot_ceiling: threads and iterations must be >= 1, got ", threads,
              " and ", iterations);
#ifdef LSTMKIT_BF16_DOT
  if (bf16_dot_instructions()) return rate(threads, iterations, 2.0 * kChains * 32, dot_chains);
#endif
  return 0.0;
}

double int8_dot_ceiling(int64_t threads, int64_t iterations) {
  TORCH_CHECK(threads >= 1 && iterations >= 1, "int8_dot_ceiling: threads and iterations must be >= 1, got ", threads,
              " and ", iterations);
#ifdef LSTMKIT_INT8_DOT
  if (int8_dot_instructions()) return rate(threads, iterations, 2.0 * kChains * 64, int8_dot_chains);
#endif
  return 0.0;
}

double fma_ceiling(int64_t threads, int64_t iterations) {
  TORCH_CHECK(threads >= 1 && iterations >= 1, "fma_ceiling: threads and iterations must be >= 1, got ", threads,
              " and ", iterations);
  return rate(threads, iterations, 2.0 * kChains * at::vec::Vectorized<float>::size(), fma_chains);
}

}  // namespace lstmkit
