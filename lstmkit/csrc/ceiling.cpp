// fma_ceiling (ceiling.h): 16 independent accumulators cover the FMA latency (4 cycles) times the FMA ports (2)
// with room to spare, so the loop runs at the units' throughput.
#include "ceiling.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

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

}  // namespace

double fma_ceiling(int64_t threads, int64_t iterations) {
  TORCH_CHECK(threads >= 1 && iterations >= 1, "fma_ceiling: threads and iterations must be >= 1, got ", threads,
              " and ", iterations);
  threads = std::min<int64_t>(threads, at::get_num_threads());
  std::atomic<float> sink{0.0f};
  const auto start = std::chrono::steady_clock::now();
  at::parallel_for(0, threads, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) sink.store(sink.load() + fma_chains(iterations));
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double flops = 2.0 * kChains * at::vec::Vectorized<float>::size() * iterations * threads;
  return flops / seconds / 1e9 + 0.0 * sink.load();
}

}  // namespace lstmkit
