// The diagonal recurrent kind as a policy of the native loop (see recurrent_dense.h for the shape of a policy):
// W_hh is the four gates' diagonals (4, H), a_q += u_q ⊙ h_{t-1}, with P == H and no projection. It has no tile
// product: the term is added in the pointwise step, the backward's dL/dh_{t-1} = sum_q u_q ⊙ dG_q is elementwise,
// and its items are panels of hidden units with nothing packed. Float and double only (T == E).
#pragma once

#include <optional>
#include <type_traits>

#include "packing.h"
#include "products.h"
#include "steps.h"

namespace lstmkit {

template <typename T, typename E>
struct DiagonalRecurrence {
  static_assert(std::is_same_v<T, E>, "a diagonal W_hh runs float32 and float64 operands");
  using V = Vectorized<T>;
  static constexpr bool kProduct = false;  // nothing in the tile: h_{t-1}'s rows are read in the pointwise step
  static constexpr int64_t L = V::size();

  const T* diag = nullptr;  // (4, H)
  int64_t H = 0, panel_width = L, panels = 0;  // the backward's items: panels of panel_width units

  static DiagonalRecurrence for_forward(const at::Tensor& w_hh, const std::optional<at::Tensor>& /*scale*/,
                                        const RecurrentShape& shape) {
    return {w_hh.data_ptr<T>(), shape.H};
  }
  static DiagonalRecurrence for_backward(const at::Tensor& w_hh, const RecurrentShape& shape, int threads) {
    const int64_t width = span_vecs(shape.H, shape.H, L, threads) * L;
    return {w_hh.data_ptr<T>(), shape.H, width, (shape.H + width - 1) / width};
  }

  template <typename Row>
  void forward_tile(int64_t, int64_t, const Row&, T*, bool) const {}  // never called: kProduct is false
  // a_g += u_g ⊙ h_{t-1} for units [u0, u0 + n), h_prev their h_{t-1}
  V outside(int g, int64_t u0, int n, const T* h_prev, V a) const {
    return at::vec::fmadd(V::loadu(diag + g * H + u0, n), V::loadu(h_prev, n), a);
  }

  int64_t items() const { return panels; }
  int64_t width() const { return panel_width; }
  // rows [b0, b1) of dL/dh_{t-1} = sum_q u_q ⊙ dG_q for the n units from col
  void backward_panel(const T* d_g, int64_t b0, int64_t b1, int64_t /*p*/, int64_t col, int64_t n, T* dst,
                      int64_t ld, T* /*tile*/) const {
    for (int64_t b = b0; b < b1; ++b) {
      const T* dg = d_g + b * 4 * H + col;
      for (int64_t v = 0; v < n; v += L) {
        const int m = static_cast<int>(std::min<int64_t>(L, n - v));
        V sum = V::loadu(diag + col + v, m) * V::loadu(dg + v, m);
        for (int q = 1; q < 4; ++q)
          sum = at::vec::fmadd(V::loadu(diag + q * H + col + v, m), V::loadu(dg + q * H + v, m), sum);
        sum.store(dst + (b - b0) * ld + v, m);
      }
    }
  }

  // dU = sum over rows of dG_q ⊙ h_prev: (4, H), each thread summing its own units over all rows
  static at::Tensor weight_grad(const at::Tensor& d_gates, const at::Tensor& out, const at::Tensor& h0,
                                const Steps& steps, const RecurrentShape& shape) {
    const int64_t H = shape.H;
    at::Tensor grad = at::empty({4, H}, out.options());
    constexpr int64_t kVecs = 4;  // a chunk: 4 vectors of units, 16 accumulators
    const T *dg = d_gates.data_ptr<T>(), *o = out.data_ptr<T>(), *h = h0.data_ptr<T>();
    T* g = grad.data_ptr<T>();
    at::parallel_for(0, (H + kVecs * L - 1) / (kVecs * L), 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t u0 = c * kVecs * L, vecs = std::min<int64_t>(kVecs, (H - u0 + L - 1) / L);
        int m[kVecs];
        V sum[4][kVecs];
        for (int64_t j = 0; j < vecs; ++j) m[j] = static_cast<int>(std::min<int64_t>(L, H - u0 - j * L));
        for (auto& gate : sum) std::fill(gate, gate + kVecs, V(T(0)));
        for (int64_t s = 0; s < steps.count(); ++s)
          for (int64_t b = 0; b < steps.rows[s]; ++b) {
            const T* hp = steps.prev(s, b, o, h, H) + u0;
            const T* d = dg + (steps.start[s] + b) * 4 * H + u0;
            for (int64_t j = 0; j < vecs; ++j) {
              const V hv = V::loadu(hp + j * L, m[j]);
              for (int q = 0; q < 4; ++q) sum[q][j] = at::vec::fmadd(V::loadu(d + q * H + j * L, m[j]), hv, sum[q][j]);
            }
          }
        for (int q = 0; q < 4; ++q)
          for (int64_t j = 0; j < vecs; ++j) sum[q][j].store(g + q * H + u0 + j * L, m[j]);
      }
    });
    return grad;
  }
};

}  // namespace lstmkit
