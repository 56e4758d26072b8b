// The products over all rows that follow the backward loop (the weight gradients, one GEMM each), through MKL
// (at::mm) or oneDNN's matmul, whichever runs the shape faster on this machine: each new (shape, layout, threads)
// is timed with both, the best of three turns each, and the winner remembered. oneDNN is reached through ATen's
// at::native::mkldnn_matmul, whose header torch does not install: declared weak, so a torch without it still
// loads this and uses MKL.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

namespace at::native {
__attribute__((weak)) void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2, const Tensor& result, float beta,
                                         float alpha);
}  // namespace at::native

namespace lstmkit {

inline void product_with(bool onednn, const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool accumulate) {
  if (onednn) {
    at::native::mkldnn_matmul(a, b, c, accumulate ? 1.f : 0.f, 1.f);
  } else if (accumulate) {
    c.addmm_(a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

// c = a b, or c += a b when `accumulate`; a and b may be transposed views, c is contiguous.
inline void product(const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool accumulate = false) {
  if (a.scalar_type() != at::kFloat || !at::native::mkldnn_matmul || !at::globalContext().hasMKLDNN())
    return product_with(false, a, b, c, accumulate);
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int>;
  static std::mutex mutex;
  static std::map<Key, bool> onednn_faster;
  const Key key{a.size(0), a.size(1), b.size(1), a.stride(0) == 1, b.stride(0) == 1, at::get_num_threads()};
  std::optional<bool> onednn;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (const auto it = onednn_faster.find(key); it != onednn_faster.end()) onednn = it->second;
  }
  if (!onednn) {
    at::Tensor scratch = at::empty_like(c);
    double seconds[2] = {1e30, 1e30};
    for (const bool backend : {false, true}) product_with(backend, a, b, scratch, false);  // oneDNN compiles
    for (int round = 0; round < 3; ++round) {  // the best of three, taking turns: one slow spell decides nothing
      for (const bool backend : {false, true}) {
        const auto start = std::chrono::steady_clock::now();
        product_with(backend, a, b, scratch, false);
        const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        seconds[backend] = std::min(seconds[backend], took);
      }
    }
    onednn = seconds[1] < seconds[0];
    const std::lock_guard<std::mutex> lock(mutex);
    onednn_faster[key] = *onednn;
  }
  product_with(*onednn, a, b, c, accumulate);
}

}  // namespace lstmkit
