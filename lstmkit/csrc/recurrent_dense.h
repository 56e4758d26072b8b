// The dense recurrent kind, W_hh (4H, P) h_{t-1}, as a policy of the native time loop (lstm.cpp): its forward tile,
// its backward panel of dL/dh_{t-1} = dG_t W_hh and its weight gradient. The other kinds follow the same shape
// (recurrent_grouped.h, recurrent_diagonal.h); the low-rank kind W_hh = U V is this one with the loop's projection
// (U as W_hh, V as W_hr, every h_t kept: ops.py), as LSTMP's is. A policy holds what it packs: `forward` in a
// forward call, `backward` in a backward call. T is the cell's type, E the operands' (Operand<E>, gemm.h).
#pragma once

#include <optional>

#include "packing.h"
#include "products.h"
#include "steps.h"

namespace lstmkit {

template <typename T, typename E>
struct DenseRecurrence {
  using Op = Operand<E>;
  using V = Vectorized<T>;
  static constexpr bool kProduct = true;  // W_hh h_{t-1} is a tile product, reading h_{t-1}'s rows (Op::RowCopy)

  typename Op::Panels forward;   // W_hh^T (P, 4H) as pack_gates lays it out
  typename Op::Panels backward;  // W_hh (4H, P) in panels of dL/dh_{t-1}'s columns
  int64_t H = 0;

  static DenseRecurrence for_forward(const at::Tensor& w_hh, const std::optional<at::Tensor>& scale,
                                     const RecurrentShape& shape) {
    return {pack_gates<E>(Op::weight(w_hh, scale), shape.H), {}, shape.H};
  }
  static DenseRecurrence for_backward(const at::Tensor& w_hh, const RecurrentShape& shape, int threads) {
    return {{}, pack_plain<E>(w_hh, span_vecs(shape.P, shape.P, V::size(), threads)), shape.H};
  }

  // tile (+)= W_hh h_{t-1} for panel j of hidden units, over `rows` rows; row(b, k) is tile row b's h_{t-1} from
  // its column k (as the products read it)
  template <typename Row>
  void forward_tile(int64_t j, int64_t rows, const Row& row, T* tile, bool accumulate) const {
    const E* a[kTileRows];
    for (int64_t b = 0; b < rows; ++b) a[b] = row(b, 0);
    Op::kernel(rows, 4)(forward.K, a, forward.panel(j), tile, accumulate);
  }
  // what the pre-activation a_g of units [u0, u0 + n) adds outside the tile: nothing
  template <typename S>
  V outside(int /*g*/, int64_t /*u0*/, int /*n*/, const S* /*h_prev*/, V a) const { return a; }

  int64_t items() const { return backward.count; }  // panels of dL/dh_{t-1} per step
  int64_t width() const { return backward.width; }  // columns per panel
  // dL/dh_{t-1} = dG_t W_hh, panel p (columns from col, the first n), for rows [b0, b1) of d_g (dG_t's rows, 4H
  // apart) into dst (row b0), rows ld apart
  void backward_panel(const E* d_g, int64_t b0, int64_t b1, int64_t p, int64_t /*col*/, int64_t n, T* dst, int64_t ld,
                    T* tile) const {
    const E* a[kTileRows];
    for (int64_t b = b0; b < b1; ++b) a[b - b0] = d_g + b * 4 * H;
    panel_product<T, E>(a, b1 - b0, 4 * H, backward, p, n, dst, ld, tile);
  }

  // dW_hh = sum over steps of dG_s^T h_prev_s, as one product over all rows
  static at::Tensor weight_grad(const at::Tensor& d_gates, const at::Tensor& out, const at::Tensor& h0,
                                const Steps& steps, const RecurrentShape& shape) {
    at::Tensor grad = at::empty({4 * shape.H, shape.P}, out.options());
    over_previous_states(d_gates, out, h0, steps, [&](const at::Tensor& d_g, const at::Tensor& h_prev, bool acc) {
      lstmkit::product(d_g.t(), h_prev, grad, acc);
    });
    return grad;
  }
};

}  // namespace lstmkit
