// The packed layout of a layer's rows in the order its time loop walks them (lstmkit/engine/schedule.py), shared
// by the native loops (lstm.cpp, layer_norm.cpp) and the recurrent kinds' weight gradients (recurrent_*.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm.h"

namespace lstmkit {

// Step s covers rows [start[s], start[s] + rows[s]) and its rows are the first rows[s] sequences of the batch.
struct Steps {
  std::vector<int64_t> start, rows;
  int64_t total = 0;  // N, all rows

  Steps() = default;
  Steps(c10::ArrayRef<int64_t> batch_sizes, bool reverse) {
    TORCH_CHECK(!batch_sizes.empty(), "batch_sizes must not be empty");
    int64_t offset = 0;
    for (int64_t n : batch_sizes) {
      TORCH_CHECK(n > 0 && (rows.empty() || n <= rows.back()), "batch_sizes must be positive and non-increasing");
      start.push_back(offset);
      rows.push_back(n);
      offset += n;
    }
    total = offset;
    if (reverse) {
      std::reverse(start.begin(), start.end());
      std::reverse(rows.begin(), rows.end());
    }
  }

  int64_t count() const { return static_cast<int64_t>(rows.size()); }
  int64_t rows_at(int64_t s) const { return s < 0 || s >= count() ? 0 : rows[s]; }
  int64_t batch() const { return *std::max_element(rows.begin(), rows.end()); }  // B
  bool uniform() const { return rows.front() == rows.back(); }  // a padded batch

  // Row b's state entering step s, `width` wide: the previous step's row b of `seq` (N, width) if the
  // sequence was running there, else its initial state, row b of `init` (B, width).
  template <typename T>
  const T* prev(int64_t s, int64_t b, const T* seq, const T* init, int64_t width) const {
    return b < rows_at(s - 1) ? seq + (start[s - 1] + b) * width : init + b * width;
  }
};

// h_prev (N, P): the state entering each row's step, gathered in the walk's row order (h0 for a step's first
// rows), as a product over all rows reads it: out (N, P) every h_t, h0 (B, P). Written into `h_prev`, of out's
// dtype, which may be a view of some columns of a wider buffer (its rows h_prev.stride(0) apart).
inline void write_previous_states(const at::Tensor& out, const at::Tensor& h0, const Steps& steps, at::Tensor h_prev) {
  const int64_t N = out.size(0), P = out.size(1), ld = h_prev.stride(0);
  TORCH_CHECK(h_prev.scalar_type() == out.scalar_type() && h_prev.stride(1) == 1, "h_prev must be rows of out's dtype");
  if (steps.uniform()) {  // a padded batch: the output B rows earlier in the walk
    const int64_t B = steps.rows[0];
    const bool reverse = steps.start[0] != 0;  // step t reads h_{t+1}
    h_prev.narrow(0, reverse ? N - B : 0, B).copy_(h0);
    h_prev.narrow(0, reverse ? 0 : B, N - B).copy_(out.narrow(0, reverse ? B : 0, N - B));
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, out.scalar_type(), "lstmkit_h_prev", [&] {
    at::parallel_for(0, steps.count(), 1, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s)
        for (int64_t b = 0; b < steps.rows[s]; ++b)
          std::memcpy(h_prev.data_ptr<scalar_t>() + (steps.start[s] + b) * ld,
                      steps.prev(s, b, out.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(), P), P * sizeof(scalar_t));
    });
  });
}

// The same in a buffer of its own.
inline at::Tensor previous_states(const at::Tensor& out, const at::Tensor& h0, const Steps& steps) {
  at::Tensor h_prev = empty_large({out.size(0), out.size(1)}, out.options());
  write_previous_states(out, h0, steps, h_prev);
  return h_prev;
}

// Calls add(rows of rows_by_step (N, .), the states entering their steps (rows, P), accumulate) over all N rows:
// once with the gathered previous_states, or for a padded batch twice on views, the first step's rows with h0 and
// the others with the output B rows earlier in the walk, which need no copy. A weight gradient sum_t dG_t^T h_{t-1}
// is add(dG, h_prev) = (+)= dG^T h_prev.
template <typename Add>
void over_previous_states(const at::Tensor& rows_by_step, const at::Tensor& out, const at::Tensor& h0,
                          const Steps& steps, const Add& add) {
  const int64_t N = rows_by_step.size(0);
  if (!steps.uniform()) return add(rows_by_step, previous_states(out, h0, steps), false);  // packed: gathered
  const int64_t B = steps.rows[0], first = steps.start[0];
  add(rows_by_step.narrow(0, first, B), h0, false);
  if (N > B) {
    const bool reverse = first != 0;
    add(rows_by_step.narrow(0, reverse ? 0 : B, N - B), out.narrow(0, reverse ? B : 0, N - B), true);
  }
}

}  // namespace lstmkit
