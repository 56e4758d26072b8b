// The grouped (block-diagonal) recurrent kind of G-LSTM as a policy of the native loop (see recurrent_dense.h for
// the shape of a policy): W_hh has `groups` blocks, given as their rows (4H, P / groups), row q·H + u holding unit
// u's gate q on h_{t-1}'s group of u. Hidden units j·h.. (h = H / groups) read only h_{t-1}'s columns j·c..
// (c = P / groups); every group is a whole number of panels (check_groups), so no panel straddles two groups.
#pragma once

#include <optional>

#include "packing.h"
#include "products.h"
#include "steps.h"

namespace lstmkit {

template <typename T, typename E>
struct GroupedRecurrence {
  using Op = Operand<E>;
  using V = Vectorized<T>;
  static constexpr bool kProduct = true;
  static constexpr int64_t L = V::size();

  typename Op::Panels forward;   // the blocks' rows transposed, (P / groups, 4H), as pack_gates lays them out
  typename Op::Panels backward;  // the blocks' rows (4H, P / groups) in panels of one group's dL/dh_{t-1} columns
  int64_t H = 0, groups = 1;

  static GroupedRecurrence for_forward(const at::Tensor& w_hh, const std::optional<at::Tensor>& scale,
                                       const RecurrentShape& shape) {
    return {pack_gates<E>(Op::weight(w_hh, scale), shape.H), {}, shape.H, shape.groups};
  }
  static GroupedRecurrence for_backward(const at::Tensor& w_hh, const RecurrentShape& shape, int threads) {
    const int vecs = span_vecs(shape.P, shape.P / shape.groups, L, threads);  // a group's columns: whole panels
    return {{}, pack_plain<E>(w_hh, vecs), shape.H, shape.groups};
  }

  // tile (+)= the units' own block times their group of h_{t-1}
  template <typename Row>
  void forward_tile(int64_t j, int64_t rows, const Row& row, T* tile, bool accumulate) const {
    const E* a[kTileRows];
    const int64_t k0 = j * L / (H / groups) * forward.K;  // the first column of the units' group
    for (int64_t b = 0; b < rows; ++b) a[b] = row(b, k0);
    Op::kernel(rows, 4)(forward.K, a, forward.panel(j), tile, accumulate);
  }
  template <typename S>
  V outside(int /*g*/, int64_t /*u0*/, int /*n*/, const S* /*h_prev*/, V a) const { return a; }

  int64_t items() const { return backward.count * groups; }
  int64_t width() const { return backward.width; }
  // panel p of dL/dh_{t-1}: its columns lie in group j, which only gate rows q·H + j·h.. of each gate q reach, one
  // product per gate
  void backward_panel(const E* d_g, int64_t b0, int64_t b1, int64_t p, int64_t /*col*/, int64_t n, T* dst,
                      int64_t ld, T* tile) const {
    const E* a[kTileRows];
    const int64_t per_group = backward.count, j = p / per_group, h = H / groups, w = backward.width;
    const E* panel = backward.panel(p % per_group);
    for (int q = 0; q < 4; ++q) {
      for (int64_t b = b0; b < b1; ++b) a[b - b0] = d_g + b * 4 * H + q * H + j * h;
      Op::kernel(b1 - b0, w / L)(h, a, panel + (q * H + j * h) * w, tile, q > 0);
    }
    for (int64_t b = b0; b < b1; ++b) std::copy_n(tile + (b - b0) * w, n, dst + (b - b0) * ld);
  }

  // the blocks of dW_hh only, as forward takes them (4H, P / groups): one product per group and gate on column
  // blocks of dG and h_prev as they lie (MKL, which takes any strides)
  static at::Tensor weight_grad(const at::Tensor& d_gates, const at::Tensor& out, const at::Tensor& h0,
                                const Steps& steps, const RecurrentShape& shape) {
    const int64_t H = shape.H, h = H / shape.groups, c = shape.P / shape.groups;
    at::Tensor grad = at::empty({4 * H, c}, out.options());
    over_previous_states(d_gates, out, h0, steps, [&](const at::Tensor& d_g, const at::Tensor& h_prev, bool acc) {
      for (int64_t j = 0; j < shape.groups; ++j)
        for (int64_t q = 0; q < 4; ++q) {
          at::Tensor block = grad.narrow(0, q * H + j * h, h);
          product_with(false, d_g.narrow(1, q * H + j * h, h).t(), h_prev.narrow(1, j * c, c), block, acc);
        }
    });
    return grad;
  }
};

}  // namespace lstmkit
