// The threads of one call: the time loop as a sequence of phases (one per dependent product of a step),
// each a set of independent items (weight panels), each phase after everything of the phase before.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LSTMKIT_PAUSE() _mm_pause()
#else
#define LSTMKIT_PAUSE() ((void)0)
#endif

namespace lstmkit {

// The share [begin, end) of n items that belongs to `part` of `parts`.
inline std::pair<int64_t, int64_t> share(int64_t n, int64_t part, int64_t parts) {
  return {n * part / parts, n * (part + 1) / parts};
}

// Threads a call may use: one from inside a parallel region, never more than it has items for.
inline int64_t team_size(int64_t max_items) {
  return at::in_parallel_region() ? 1 : std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), max_items));
}

struct alignas(64) Counter {  // one cache line each: workers count on their own without false sharing
  std::atomic<int64_t> n{0};
};

inline void wait_until(const std::atomic<int64_t>& counter, int64_t target) {
  for (int spins = 0; counter.load(std::memory_order_acquire) < target;) {
    if (spins < 4096) {
      ++spins;
      LSTMKIT_PAUSE();
    } else {
      std::this_thread::yield();  // a long wait: the worker we wait for may need this core
    }
  }
}

// Runs item(phase, i) for every i < counts[phase], phase by phase: an item sees everything that the items of
// earlier phases wrote. Each of the `workers` takes the items of its own share first (so the weight panels it
// uses stay in its core's cache from step to step), then any still unclaimed in the others' shares. So, unlike
// a static split with a barrier, a worker the OS deschedules on a busy machine holds a step up only if it stops
// in the middle of its items, and a worker that a busy thread pool never starts holds nothing up at all.
//
// `first(phase, worker)` is where the worker's share begins (shares are contiguous and in worker order, the last
// ending at counts[phase]); by default the items are split evenly by count. A caller whose items differ in cost
// orders them so that equal costs fall to each share and says where each begins.
template <typename Item, typename First>
void run_phases(const std::vector<int64_t>& counts, int64_t workers, const Item& item, const First& first) {
  const int64_t phases = static_cast<int64_t>(counts.size());
  if (workers <= 1) {
    for (int64_t p = 0; p < phases; ++p)
      for (int64_t i = 0; i < counts[p]; ++i) item(p, i);
    return;
  }
  std::vector<Counter> claimed(phases * workers), done(phases);
  const auto work = [&](int64_t worker) {
    for (int64_t p = 0; p < phases; ++p) {
      if (p > 0) wait_until(done[p - 1].n, counts[p - 1]);
      int64_t finished = 0;
      for (int64_t k = 0; k < workers; ++k) {
        const int64_t owner = (worker + k) % workers;
        const int64_t begin = first(p, owner), end = owner + 1 < workers ? first(p, owner + 1) : counts[p];
        std::atomic<int64_t>& next = claimed[p * workers + owner].n;
        for (int64_t i; (i = begin + next.fetch_add(1, std::memory_order_relaxed)) < end; ++finished) item(p, i);
      }
      if (finished) done[p].n.fetch_add(finished, std::memory_order_release);  // one shared write per phase
    }
  };
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) work(w);
  });
}

template <typename Item>
void run_phases(const std::vector<int64_t>& counts, int64_t workers, const Item& item) {
  run_phases(counts, workers, item, [&](int64_t p, int64_t w) { return share(counts[p], w, workers).first; });
}

// The items of a phase of two kinds, `a` of the first and `b` of the second, ordered so that each worker's share
// holds its even share of each kind: items of different cost then still split evenly.
struct TwoKinds {
  int64_t a, b, workers;
  int64_t first(int64_t worker) const { return share(a, worker, workers).first + share(b, worker, workers).first; }
  // Item i as {second kind?, its index among its kind}.
  std::pair<bool, int64_t> operator[](int64_t i) const {
    int64_t w = workers - 1;
    while (w > 0 && first(w) > i) --w;
    const auto [a0, a1] = share(a, w, workers);
    const int64_t offset = i - first(w);
    if (offset < a1 - a0) return {false, a0 + offset};
    return {true, share(b, w, workers).first + offset - (a1 - a0)};
  }
};

}  // namespace lstmkit
