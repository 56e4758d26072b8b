// The native loop of a layer-normalized, zoned LSTM layer (issue 15), forward and hand-written backward, for one
// layer and direction with a dense W_hh, no projection and fixed zoneout masks: the math of
// lstmkit/engine/regularized_bptt.py, reached as the ops lstmkit_ln::forward and lstmkit_ln::backward
// (lstmkit/engine/regularized_native.py). The input half P = LN_ih(W_ih x) + b comes done for all rows.
//
// LN_hh needs the whole 4H row of a = W_hh h_{t-1} and LN_c the whole H row of c̃_t, so a step is two phases of one
// team (team.h): the recurrent product in column panels (gemm.h's register tiles), then one item per row: LN_hh's
// statistics, the gates, c̃_t, LN_c's statistics, h̃_t and the zoneout mix, the row in L1 throughout. The backward
// mirrors it: per row the pointwise and both LN backwards down to dL/da, then dL/dh_{t-1} = dL/da W_hh in panels.
// Each row is one thread's item and each tile's sums run in a fixed order: the bits depend on neither the thread
// count nor the run.
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "activations.h"
#include "gemm.h"
#include "products.h"
#include "steps.h"
#include "team.h"

#ifndef LSTMKIT_LN_NAMESPACE
#define LSTMKIT_LN_NAMESPACE lstmkit_ln
#endif

namespace lstmkit::layer_norm {

template <typename T>
T sum_lanes(Vectorized<T> v) {  // in lane order: a fixed rounding
  alignas(64) T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T s = 0;
  for (T x : lanes) s += x;
  return s;
}

// mean and 1 / sqrt(biased variance + eps) of the n values at a, in two passes (as ATen's layer norm: no
// cancellation of a one-pass sum of squares)
template <typename T>
std::pair<T, T> moments(const T* a, int64_t n, double eps) {
  using V = Vectorized<T>;
  constexpr int64_t L = V::size();
  V sum(T(0));
  for (int64_t v = 0; v < n; v += L) sum = sum + V::loadu(a + v, std::min(L, n - v));  // loadu(p, m) zero-fills
  const T mean = sum_lanes(sum) / T(n);
  V sq(T(0));
  for (int64_t v = 0; v < n; v += L) {
    const int m = static_cast<int>(std::min(L, n - v));
    const V d = V::set(V(T(0)), V::loadu(a + v, m) - V(mean), m);
    sq = at::vec::fmadd(d, d, sq);
  }
  return {mean, T(1) / std::sqrt(sum_lanes(sq) / T(n) + T(eps))};
}

constexpr int64_t kStats = 6;  // per row: mean and 1/std of LN_hh, of LN_c, of LN_ih

// dL/da for y = LN(a) over one row of F values, gain γ, from dL/dy = dy:
// rstd (γ ⊙ dy - mean(γ ⊙ dy) - â mean(γ ⊙ dy ⊙ â)), â = (a - mean) ⋅ rstd
template <typename T>
void norm_backward(const T* dy, const T* a, const T* gamma, T mean, T rstd, int64_t F, T* da) {
  using V = Vectorized<T>;
  constexpr int64_t L = V::size();
  V s1(T(0)), s2(T(0));
  for (int64_t v = 0; v < F; v += L) {
    const int m = static_cast<int>(std::min(L, F - v));
    const V g = V::loadu(dy + v, m) * V::loadu(gamma + v, m);  // zero past m: so are the products
    s1 = s1 + g;
    s2 = at::vec::fmadd(g, (V::loadu(a + v, m) - V(mean)) * V(rstd), s2);
  }
  const T m1 = sum_lanes(s1) / T(F), m2 = sum_lanes(s2) / T(F);
  for (int64_t v = 0; v < F; v += L) {
    const int m = static_cast<int>(std::min(L, F - v));
    const V a_hat = (V::loadu(a + v, m) - V(mean)) * V(rstd);
    (V(rstd) * (V::loadu(dy + v, m) * V::loadu(gamma + v, m) - V(m1) - a_hat * V(m2))).store(da + v, m);
  }
}

// γ ⊙ (a - mean) ⋅ rstd + β for one vector, or a itself without a norm (γ null)
template <typename T>
Vectorized<T> normalized(Vectorized<T> a, const T* gamma, const T* beta, T mean, T rstd, int m) {
  using V = Vectorized<T>;
  if (!gamma) return a;
  return at::vec::fmadd((a - V(mean)) * V(rstd), V::loadu(gamma, m), V::loadu(beta, m));
}

template <typename T>
struct Forward {
  using V = Vectorized<T>;
  static constexpr int64_t L = V::size();

  const T *gates_x;              // (N, 4H) W_ih x
  const T *gamma_ih, *beta_ih;   // (4H) or null: no LN_ih
  const T *bias;                 // (4H) b = b_ih + b_hh, or null
  const T *h0, *c0;              // (B, H)
  const T *gamma_hh, *beta_hh;   // (4H) or null: no LN_hh
  const T *gamma_c, *beta_c;     // (H) or null: no LN_c
  const T *keep_c, *keep_h;      // (N, H) zoneout masks d^c, d^h, or null
  T *out, *h_n, *c_n;            // (N, H), (B, H), (B, H)
  T *acts;                       // (N, 4H) the activated gates
  T *rec;                        // (N, 4H) a = W_hh h_{t-1}, LN_hh's input
  T *c_new;                      // (N, H) c̃_t, LN_c's input
  T *cells;                      // (N, H) c_t (the zoned state); c_new itself without cell zoneout
  T *tanh_y;                     // (N, H) tanh(LN_c(c̃_t))
  T *stats;                      // (N, kStats) mean and 1/std of LN_hh, LN_c, LN_ih
  T *h_prev;                     // (N, H) h_{t-1} of each row: the operand of dW_hh after the loop
  int64_t H;
  double eps_ih, eps_hh, eps_c;
  Steps walk;
  Panels<T> recurrent;           // W_hh^T (H, 4H) in column panels
  bool split_rows;  // see split_rows(Steps)

  // a = W_hh h_{t-1} for the columns of panel p and rows [first, last) of step s
  void product(int64_t s, int64_t p, int64_t first, int64_t last) const {
    alignas(64) T tile[kTileRows * kMaxVecs * L];
    const T* a[kTileRows];
    const RowTiles tiles(last - first);
    const int64_t width = recurrent.width, col = p * width, n = std::min(width, 4 * H - col);
    for (int64_t t = 0; t < tiles.count; ++t) {
      const int64_t b0 = first + tiles.begin(t), b1 = first + tiles.begin(t + 1);
      for (int64_t b = b0; b < b1; ++b) a[b - b0] = walk.prev(s, b, out, h0, H);
      Operand<T>::kernel(b1 - b0, width / L)(H, a, recurrent.panel(p), tile, false);
      for (int64_t b = b0; b < b1; ++b) std::copy_n(tile + (b - b0) * width, n, rec + (walk.start[s] + b) * 4 * H + col);
    }
  }

  // the rest of step s for row b: LN_ih, LN_hh, gates, c̃_t, LN_c, h̃_t, zoneout
  void row(int64_t s, int64_t b) const {
    using A = Act<T>;
    const int64_t r = walk.start[s] + b, G = 4 * H;
    const bool ends = b >= walk.rows_at(s + 1);
    const T *a = rec + r * G, *px = gates_x + r * G;
    const T *cp = walk.prev(s, b, cells, c0, H), *hp = walk.prev(s, b, out, h0, H);
    T *ac = acts + r * G, *cn = c_new + r * H, *st = stats + r * kStats;
    std::copy_n(hp, H, h_prev + r * H);
    T mean_ih = 0, rstd_ih = 1;
    if (gamma_ih) {
      std::tie(mean_ih, rstd_ih) = moments(px, G, eps_ih);
      st[4] = mean_ih, st[5] = rstd_ih;
    }
    T mean_hh = 0, rstd_hh = 1;
    if (gamma_hh) {
      std::tie(mean_hh, rstd_hh) = moments(a, G, eps_hh);
      st[0] = mean_hh, st[1] = rstd_hh;
    }
    for (int64_t v = 0; v < H; v += L) {
      const int m = static_cast<int>(std::min(L, H - v));
      const auto pre = [&](int g) {  // G_t = LN_ih(W_ih x_t) + LN_hh(W_hh h_{t-1}) + b
        const int64_t k = g * H + v;
        const V p = normalized<T>(V::loadu(px + k, m), gamma_ih ? gamma_ih + k : nullptr,
                                  beta_ih ? beta_ih + k : nullptr, mean_ih, rstd_ih, m) + normalized<T>(V::loadu(a + k, m), gamma_hh ? gamma_hh + k : nullptr,
                                                        beta_hh ? beta_hh + k : nullptr, mean_hh, rstd_hh, m);
        return bias ? p + V::loadu(bias + k, m) : p;
      };
      const V i = A::sigmoid(pre(0)), f = A::sigmoid(pre(1)), g = A::tanh(pre(2)), o = A::sigmoid(pre(3));
      i.store(ac + v, m), f.store(ac + H + v, m), g.store(ac + 2 * H + v, m), o.store(ac + 3 * H + v, m);
      at::vec::fmadd(f, V::loadu(cp + v, m), i * g).store(cn + v, m);  // c̃_t = f ⊙ c_{t-1} + i ⊙ g
    }
    T mean_c = 0, rstd_c = 1;
    if (gamma_c) {
      std::tie(mean_c, rstd_c) = moments(cn, H, eps_c);
      st[2] = mean_c, st[3] = rstd_c;
    }
    T *o_row = out + r * H, *c_row = cells + r * H, *ty_row = tanh_y + r * H;
    for (int64_t v = 0; v < H; v += L) {
      const int m = static_cast<int>(std::min(L, H - v));
      const V c_tilde = V::loadu(cn + v, m);
      const V ty = A::tanh(normalized<T>(c_tilde, gamma_c ? gamma_c + v : nullptr, beta_c ? beta_c + v : nullptr,
                                         mean_c, rstd_c, m));
      ty.store(ty_row + v, m);
      V h = V::loadu(ac + 3 * H + v, m) * ty;  // h̃_t = o ⊙ tanh(LN_c(c̃_t))
      if (keep_h) {  // h_t = d^h ⊙ h_{t-1} + (1 - d^h) ⊙ h̃_t
        const V d = V::loadu(keep_h + r * H + v, m);
        h = d * V::loadu(hp + v, m) + (V(T(1)) - d) * h;
      }
      V c = c_tilde;
      if (keep_c) {  // c_t = d^c ⊙ c_{t-1} + (1 - d^c) ⊙ c̃_t
        const V d = V::loadu(keep_c + r * H + v, m);
        c = d * V::loadu(cp + v, m) + (V(T(1)) - d) * c_tilde;
        c.store(c_row + v, m);
      }
      h.store(o_row + v, m);
      if (ends) h.store(h_n + b * H + v, m), c.store(c_n + b * H + v, m);
    }
  }

  void run() const {
    if (split_rows) {  // each thread its own sequences through all steps: no step waits for another thread
      const int64_t B = walk.batch(), parts = team_size(B);
      at::parallel_for(0, parts, 1, [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) {
          const auto [first, end] = share(B, g, parts);
          for (int64_t s = 0; s < walk.count(); ++s) {
            const int64_t last = std::min(end, walk.rows[s]);
            if (last <= first) continue;  // (reverse) this share's sequences start later
            for (int64_t p = 0; p < recurrent.count; ++p) product(s, p, first, last);
            for (int64_t b = first; b < last; ++b) row(s, b);
          }
        }
      });
      return;
    }
    std::vector<int64_t> counts;
    for (int64_t s = 0; s < walk.count(); ++s) counts.push_back(recurrent.count), counts.push_back(walk.rows[s]);
    run_phases(counts, team_size(std::max(recurrent.count, walk.batch())), [&](int64_t phase, int64_t i) {
      phase % 2 ? row(phase / 2, i) : product(phase / 2, i, 0, walk.rows[phase / 2]);
    });
  }
};

template <typename T>
struct Backward {
  using V = Vectorized<T>;
  static constexpr int64_t L = V::size();

  const T *d_out;                           // (N, H)
  const T *gates_x;                         // (N, 4H) W_ih x
  const T *acts, *rec, *c_new, *cells, *tanh_y, *stats, *c0;  // the forward's (see Forward)
  const T *gamma_ih, *gamma_hh, *gamma_c, *keep_c, *keep_h;
  T *d_gates;                               // (N, 4H) dL/dG_t (= dL/d LN_ih(W_ih x) and dL/d LN_hh(a))
  T *d_x;                                   // (N, 4H) dL/d(W_ih x_t); d_gates itself without LN_ih
  T *d_rec;                                 // (N, 4H) dL/da, a = W_hh h_{t-1}; d_gates itself without LN_hh
  T *d_y;                                   // (N, H) dL/d LN_c(c̃_t) (dL/dc̃_t's part through LN_c without it)
  T *dh;                                    // (B, H) dL/dh_t from the steps after t; ends as dL/dh_0
  T *dc;                                    // (B, H) dL/dc_t likewise; ends as dL/dc_0
  int64_t H;
  Steps walk;
  Panels<T> recurrent;                      // W_hh (4H, H) in column panels
  bool split_rows;  // see split_rows(Steps)

  // step s, row b: from dL/dh_t and dL/dc_t to dL/da, dL/dc_{t-1} and the zoneout part of dL/dh_{t-1}
  void row(int64_t s, int64_t b) const {
    const int64_t r = walk.start[s] + b, G = 4 * H;
    const V one(T(1));
    const T *ac = acts + r * G, *cn = c_new + r * H, *ty_row = tanh_y + r * H, *st = stats + r * kStats;
    const T* cp = walk.prev(s, b, cells, c0, H);
    T *dg = d_gates + r * G, *dy_row = d_y + r * H, *dhr = dh + b * H, *dcr = dc + b * H;
    const T mean_c = gamma_c ? st[2] : T(0), rstd_c = gamma_c ? st[3] : T(1);
    V sum_g(T(0)), sum_gx(T(0));  // Σ γ ⊙ dy and Σ γ ⊙ dy ⊙ ŷ over the row, ŷ = (c̃ - mean) ⋅ rstd
    for (int64_t v = 0; v < H; v += L) {
      const int m = static_cast<int>(std::min(L, H - v));
      const V d_h = V::loadu(d_out + r * H + v, m) + V::loadu(dhr + v, m);  // dL/dh_t: output and step t+1
      V dh_tilde = d_h;
      if (keep_h) {  // h_t = d h_{t-1} + (1 - d) h̃_t; the d h_{t-1} part waits in dh for the product to add to
        const V d = V::loadu(keep_h + r * H + v, m);
        dh_tilde = (one - d) * d_h;
        (d * d_h).store(dhr + v, m);
      } else {
        V(T(0)).store(dhr + v, m);
      }
      const V o = V::loadu(ac + 3 * H + v, m), ty = V::loadu(ty_row + v, m);
      (dh_tilde * ty * o * (one - o)).store(dg + 3 * H + v, m);  // h̃ = o ⊙ tanh(y), σ' = σ(1 - σ)
      const V dy = dh_tilde * o * (one - ty * ty);                // tanh' = 1 - tanh²
      dy.store(dy_row + v, m);
      if (gamma_c) {
        const V gdy = dy * V::loadu(gamma_c + v, m);
        sum_g = sum_g + gdy;
        sum_gx = at::vec::fmadd(gdy, (V::loadu(cn + v, m) - V(mean_c)) * V(rstd_c), sum_gx);
      }
    }
    const T mg = sum_lanes(sum_g) / T(H), mgx = sum_lanes(sum_gx) / T(H);
    for (int64_t v = 0; v < H; v += L) {
      const int m = static_cast<int>(std::min(L, H - v));
      const V d_c = V::loadu(dcr + v, m);
      V dc_tilde = keep_c ? (one - V::loadu(keep_c + r * H + v, m)) * d_c : d_c;  // c_t = d c_{t-1} + (1-d) c̃_t
      V dy = V::loadu(dy_row + v, m);
      if (gamma_c) {  // y = LN_c(c̃): dc̃ = rstd (γ ⊙ dy - mean(γ ⊙ dy) - ŷ mean(γ ⊙ dy ⊙ ŷ))
        const V y_hat = (V::loadu(cn + v, m) - V(mean_c)) * V(rstd_c);
        dy = V(rstd_c) * (V::loadu(gamma_c + v, m) * dy - V(mg) - y_hat * V(mgx));
      }
      dc_tilde = dc_tilde + dy;
      const V i = V::loadu(ac + v, m), f = V::loadu(ac + H + v, m), g = V::loadu(ac + 2 * H + v, m);
      (dc_tilde * g * i * (one - i)).store(dg + v, m);  // c̃ = f ⊙ c_{t-1} + i ⊙ g
      (dc_tilde * V::loadu(cp + v, m) * f * (one - f)).store(dg + H + v, m);
      (dc_tilde * i * (one - g * g)).store(dg + 2 * H + v, m);
      V dc_prev = dc_tilde * f;
      if (keep_c) dc_prev = at::vec::fmadd(V::loadu(keep_c + r * H + v, m), d_c, dc_prev);
      dc_prev.store(dcr + v, m);
    }
    // G = LN_ih(W_ih x) + LN_hh(a) + b: dL/dG through each norm
    if (gamma_hh) norm_backward(dg, rec + r * G, gamma_hh, st[0], st[1], G, d_rec + r * G);
    if (gamma_ih) norm_backward(dg, gates_x + r * G, gamma_ih, st[4], st[5], G, d_x + r * G);
  }

  // dL/dh_{t-1} += dL/da W_hh for the columns of panel p and rows [first, last) of step s
  void product(int64_t s, int64_t p, int64_t first, int64_t last) const {
    alignas(64) T tile[kTileRows * kMaxVecs * L];
    const T* a[kTileRows];
    const RowTiles tiles(last - first);
    const int64_t width = recurrent.width, col = p * width, n = std::min(width, H - col);
    for (int64_t t = 0; t < tiles.count; ++t) {
      const int64_t b0 = first + tiles.begin(t), b1 = first + tiles.begin(t + 1);
      for (int64_t b = b0; b < b1; ++b) a[b - b0] = d_rec + (walk.start[s] + b) * 4 * H;
      Operand<T>::kernel(b1 - b0, width / L)(4 * H, a, recurrent.panel(p), tile, false);
      for (int64_t b = b0; b < b1; ++b) {
        T* dst = dh + b * H + col;
        const T* src = tile + (b - b0) * width;
        for (int64_t v = 0; v < n; v += L) {
          const int m = static_cast<int>(std::min(L, n - v));
          (V::loadu(dst + v, m) + V::loadu(src + v, m)).store(dst + v, m);
        }
      }
    }
  }

  void run() const {  // s from the last step of the walk down to the first: its rows, then its product
    const int64_t last = walk.count() - 1;
    if (split_rows) {
      const int64_t B = walk.batch(), parts = team_size(B);
      at::parallel_for(0, parts, 1, [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) {
          const auto [first, end] = share(B, g, parts);
          for (int64_t s = last; s >= 0; --s) {
            const int64_t stop = std::min(end, walk.rows[s]);
            if (stop <= first) continue;
            for (int64_t b = first; b < stop; ++b) row(s, b);
            for (int64_t p = 0; p < recurrent.count; ++p) product(s, p, first, stop);
          }
        }
      });
      return;
    }
    std::vector<int64_t> counts;
    for (int64_t s = walk.count() - 1; s >= 0; --s) counts.push_back(walk.rows[s]), counts.push_back(recurrent.count);
    run_phases(counts, team_size(std::max(recurrent.count, walk.batch())), [&](int64_t phase, int64_t i) {
      const int64_t s = last - phase / 2;
      phase % 2 ? product(s, i, 0, walk.rows[s]) : row(s, i);
    });
  }
};

// Whether the threads split the batch (each its own sequences through all steps: no step waits for another thread,
// measured 1.2x less CPU time than the phases at T = B = 64, H = 512 on 2 busy cores) rather than each step's
// columns (two phases a step, every thread reading only its panels of W_hh): where each thread gets a full tile of
// rows or more. The same bits either way: a row's sums run in the same order in any tile.
inline bool split_rows(const Steps& walk) {
  const int64_t B = walk.batch();
  return B >= kTileRows * team_size(B);
}

// panels of `vecs` vectors at most, fewer where that leaves a thread without one
inline int64_t panel_width(int64_t N, int64_t L) {
  const int64_t threads = team_size(N);
  for (int64_t vecs : {4, 2})
    if ((N + vecs * L - 1) / (vecs * L) >= threads) return vecs * L;
  return L;
}

template <typename T>
const T* data_or_null(const std::optional<at::Tensor>& t) {
  return t ? t->data_ptr<T>() : nullptr;
}

void check(const at::Tensor& t, const char* name, const at::Tensor& like, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type() && t.is_contiguous(), name,
              " must be a contiguous CPU tensor of dtype ", like.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, " must be of shape ", shape, ", got ", t.sizes());
}

void check(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& like, at::IntArrayRef shape) {
  if (t) check(*t, name, like, shape);
}

// -> [out (N, H), h_n (B, H), c_n (B, H), acts (N, 4H), rec (N, 4H), c_new (N, H), cells (N, H), tanh_y (N, H),
//     stats (N, kStats), h_prev (N, H)]; cells is c_new without keep_c
std::vector<at::Tensor> forward(const at::Tensor& gates_x, const std::optional<at::Tensor>& bias,
                                const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_hh,
                                const std::optional<at::Tensor>& gamma_ih, const std::optional<at::Tensor>& beta_ih,
                                const std::optional<at::Tensor>& gamma_hh,
                                const std::optional<at::Tensor>& beta_hh, const std::optional<at::Tensor>& gamma_c,
                                const std::optional<at::Tensor>& beta_c, const std::optional<at::Tensor>& keep_c,
                                const std::optional<at::Tensor>& keep_h, c10::ArrayRef<int64_t> batch_sizes,
                                bool reverse, double eps_ih, double eps_hh, double eps_c) {
  TORCH_CHECK(gates_x.scalar_type() == at::kFloat || gates_x.scalar_type() == at::kDouble,
              "the layer-norm loop runs float32 and float64, got ", gates_x.scalar_type());
  TORCH_CHECK(gates_x.dim() == 2 && h0.dim() == 2, "gates_x (N, 4H) and h0 (B, H) must be matrices");
  const int64_t N = gates_x.size(0), H = h0.size(1), B = h0.size(0);
  const Steps walk(batch_sizes, reverse);
  TORCH_CHECK(batch_sizes[0] == B && walk.total == N, "batch_sizes do not match the rows of gates_x and h0");
  check(gates_x, "gates_x", gates_x, {N, 4 * H}), check(h0, "h0", gates_x, {B, H}), check(c0, "c0", gates_x, {B, H});
  check(weight_hh, "weight_hh", gates_x, {4 * H, H}), check(bias, "bias", gates_x, {4 * H});
  check(gamma_ih, "gamma_ih", gates_x, {4 * H}), check(beta_ih, "beta_ih", gates_x, {4 * H});
  check(gamma_hh, "gamma_hh", gates_x, {4 * H}), check(beta_hh, "beta_hh", gates_x, {4 * H});
  check(gamma_c, "gamma_c", gates_x, {H}), check(beta_c, "beta_c", gates_x, {H});
  TORCH_CHECK(gamma_ih.has_value() == beta_ih.has_value() && gamma_hh.has_value() == beta_hh.has_value() && gamma_c.has_value() == beta_c.has_value(),
              "a norm comes with its gain and its bias");
  check(keep_c, "keep_c", gates_x, {N, H}), check(keep_h, "keep_h", gates_x, {N, H});
  const auto opt = gates_x.options();
  at::Tensor out = empty_large({N, H}, opt), h_n = at::empty({B, H}, opt), c_n = at::empty({B, H}, opt),
             acts = empty_large({N, 4 * H}, opt), rec = empty_large({N, 4 * H}, opt),
             c_new = empty_large({N, H}, opt), cells = keep_c ? empty_large({N, H}, opt) : c_new,
             tanh_y = empty_large({N, H}, opt), stats = at::zeros({N, kStats}, opt), h_prev = empty_large({N, H}, opt);
  AT_DISPATCH_FLOATING_TYPES(gates_x.scalar_type(), "lstmkit_ln_forward", [&] {
    using T = scalar_t;
    const int64_t width = panel_width(4 * H, Vectorized<T>::size());
    Forward<T> f{gates_x.data_ptr<T>(), data_or_null<T>(gamma_ih), data_or_null<T>(beta_ih), data_or_null<T>(bias),
                 h0.data_ptr<T>(), c0.data_ptr<T>(), data_or_null<T>(gamma_hh),
                 data_or_null<T>(beta_hh), data_or_null<T>(gamma_c), data_or_null<T>(beta_c), data_or_null<T>(keep_c),
                 data_or_null<T>(keep_h), out.data_ptr<T>(), h_n.data_ptr<T>(), c_n.data_ptr<T>(),
                 acts.data_ptr<T>(), rec.data_ptr<T>(), c_new.data_ptr<T>(), cells.data_ptr<T>(),
                 tanh_y.data_ptr<T>(), stats.data_ptr<T>(), h_prev.data_ptr<T>(), H, eps_ih, eps_hh, eps_c, walk,
                 Operand<T>::pack_transposed(weight_hh, width, (4 * H + width - 1) / width, [&](int64_t p, int64_t c) {
                   const int64_t first = p * width + c * Vectorized<T>::size();
                   return std::pair{first, std::min<int64_t>(Vectorized<T>::size(), 4 * H - first)};
                 }), split_rows(walk)};
    f.run();
  });
  return {out, h_n, c_n, acts, rec, c_new, cells, tanh_y, stats, h_prev};
}

// Σ_n dy[n] ⊙ (a[n] - mean[n]) ⋅ rstd[n] and Σ_n dy[n] over the N rows of dy and a (N, F), stats[n][k], stats[n][k + 1]
// the row's mean and 1/std: a norm's gain and bias gradients (with stats null, Σ_n dy[n] alone, a bias's). In blocks
// of a fixed number of rows, each one thread's, whose partial sums add in block order: the same bits at any thread
// count.
template <typename T>
void norm_grads(const T* dy, const T* a, const T* stats, int k, int64_t N, int64_t F, T* d_gamma, T* d_beta) {
  using V = Vectorized<T>;
  constexpr int64_t L = V::size(), kBlock = 256;
  const int64_t blocks = (N + kBlock - 1) / kBlock, parts = stats ? 2 : 1;
  std::vector<T> partial(blocks * parts * F);
  at::parallel_for(0, blocks, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      T *sg = partial.data() + j * parts * F, *sb = sg + (parts - 1) * F;
      std::fill(sg, sg + parts * F, T(0));
      for (int64_t n = j * kBlock; n < std::min(N, (j + 1) * kBlock); ++n)
        for (int64_t v = 0; v < F; v += L) {
          const int m = static_cast<int>(std::min(L, F - v));
          const V d = V::loadu(dy + n * F + v, m);
          (V::loadu(sb + v, m) + d).store(sb + v, m);
          if (stats) {
            const V a_hat = (V::loadu(a + n * F + v, m) - V(stats[n * kStats + k])) * V(stats[n * kStats + k + 1]);
            at::vec::fmadd(d, a_hat, V::loadu(sg + v, m)).store(sg + v, m);
          }
        }
    }
  });
  std::fill(d_beta, d_beta + F, T(0));
  if (stats) std::fill(d_gamma, d_gamma + F, T(0));
  for (int64_t j = 0; j < blocks; ++j)
    for (int64_t f = 0; f < F; ++f) {
      d_beta[f] += partial[(j * parts + parts - 1) * F + f];
      if (stats) d_gamma[f] += partial[j * parts * F + f];
    }
}

// -> [d_x (N, 4H) (dL/d(W_ih x)), d_h0 (B, H), d_c0 (B, H), d_bias (4H), d_weight_hh (4H, H) = Σ_t da_t^T h_{t-1},
//     d_gamma_ih, d_beta_ih, d_gamma_hh, d_beta_hh (4H), d_gamma_c, d_beta_c (H)]: each empty, (0,), where not asked for or absent
std::vector<at::Tensor> backward(const at::Tensor& d_out, const at::Tensor& d_h_n, const at::Tensor& d_c_n,
                                 const at::Tensor& gates_x, const at::Tensor& acts, const at::Tensor& rec, const at::Tensor& c_new,
                                 const at::Tensor& cells, const at::Tensor& tanh_y, const at::Tensor& stats,
                                 const at::Tensor& c0, const at::Tensor& weight_hh,
                                 const std::optional<at::Tensor>& gamma_ih, const std::optional<at::Tensor>& gamma_hh,
                                 const std::optional<at::Tensor>& gamma_c,
                                 const std::optional<at::Tensor>& keep_c, const std::optional<at::Tensor>& keep_h,
                                 const at::Tensor& h_prev, c10::ArrayRef<int64_t> batch_sizes, bool reverse,
                                 bool bias_grad, bool weight_grad) {
  const int64_t N = acts.size(0), H = acts.size(1) / 4, B = c0.size(0);
  const Steps walk(batch_sizes, reverse);
  TORCH_CHECK(batch_sizes[0] == B, "batch_sizes do not match the rows of c0");
  check(acts, "acts", acts, {N, 4 * H}), check(rec, "rec", acts, {N, 4 * H}), check(d_out, "d_out", acts, {N, H});
  check(d_h_n, "d_h_n", acts, {B, H}), check(d_c_n, "d_c_n", acts, {B, H}), check(c0, "c0", acts, {B, H});
  for (auto [t, name] : {std::pair{c_new, "c_new"}, {cells, "cells"}, {tanh_y, "tanh_y"}}) check(t, name, acts, {N, H});
  check(gates_x, "gates_x", acts, {N, 4 * H}), check(gamma_ih, "gamma_ih", acts, {4 * H});
  check(stats, "stats", acts, {N, kStats}), check(weight_hh, "weight_hh", acts, {4 * H, H});
  check(gamma_hh, "gamma_hh", acts, {4 * H}), check(gamma_c, "gamma_c", acts, {H});
  check(keep_c, "keep_c", acts, {N, H}), check(keep_h, "keep_h", acts, {N, H}), check(h_prev, "h_prev", acts, {N, H});
  const auto opt = acts.options();
  at::Tensor d_gates = empty_large({N, 4 * H}, opt), d_rec = gamma_hh ? empty_large({N, 4 * H}, opt) : d_gates,
             d_x = gamma_ih ? empty_large({N, 4 * H}, opt) : d_gates,
             d_y = empty_large({N, H}, opt), dh = d_h_n.clone(), dc = d_c_n.clone();
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstmkit_ln_backward", [&] {
    using T = scalar_t;
    Backward<T> bw{d_out.data_ptr<T>(), gates_x.data_ptr<T>(), acts.data_ptr<T>(), rec.data_ptr<T>(), c_new.data_ptr<T>(),
                   cells.data_ptr<T>(), tanh_y.data_ptr<T>(), stats.data_ptr<T>(), c0.data_ptr<T>(),
                   data_or_null<T>(gamma_ih), data_or_null<T>(gamma_hh), data_or_null<T>(gamma_c),
                   data_or_null<T>(keep_c), data_or_null<T>(keep_h), d_gates.data_ptr<T>(), d_x.data_ptr<T>(),
                   d_rec.data_ptr<T>(), d_y.data_ptr<T>(),
                   dh.data_ptr<T>(), dc.data_ptr<T>(), H, walk,
                   Operand<T>::pack_rows(weight_hh, panel_width(H, Vectorized<T>::size())), split_rows(walk)};
    bw.run();
  });

  // after the loop, once over all rows
  const at::Tensor none = at::empty({0}, opt);
  at::Tensor d_bias = bias_grad ? at::empty({4 * H}, opt) : none, d_w = weight_grad ? at::empty({4 * H, H}, opt) : none;
  at::Tensor d_gamma_ih = gamma_ih ? at::empty({4 * H}, opt) : none, d_beta_ih = gamma_ih ? at::empty({4 * H}, opt) : none;
  at::Tensor d_gamma_hh = gamma_hh ? at::empty({4 * H}, opt) : none, d_beta_hh = gamma_hh ? at::empty({4 * H}, opt) : none;
  at::Tensor d_gamma_c = gamma_c ? at::empty({H}, opt) : none, d_beta_c = gamma_c ? at::empty({H}, opt) : none;
  if (weight_grad) product(d_rec.t(), h_prev, d_w);  // dW_hh = Σ_t da_t^T h_{t-1}
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstmkit_ln_sums", [&] {
    using T = scalar_t;
    if (bias_grad) norm_grads<T>(d_gates.data_ptr<T>(), nullptr, nullptr, 0, N, 4 * H, nullptr, d_bias.data_ptr<T>());
    if (gamma_ih)  // LN_ih(W_ih x)'s gradient is dG: dγ = Σ dG ⊙ x̂, dβ = Σ dG
      norm_grads<T>(d_gates.data_ptr<T>(), gates_x.data_ptr<T>(), stats.data_ptr<T>(), 4, N, 4 * H,
                    d_gamma_ih.data_ptr<T>(), d_beta_ih.data_ptr<T>());
    if (gamma_hh)  // LN_hh(a)'s gradient is dG: dγ = Σ dG ⊙ â, dβ = Σ dG
      norm_grads<T>(d_gates.data_ptr<T>(), rec.data_ptr<T>(), stats.data_ptr<T>(), 0, N, 4 * H,
                    d_gamma_hh.data_ptr<T>(), d_beta_hh.data_ptr<T>());
    if (gamma_c)  // y = LN_c(c̃): dγ = Σ dy ⊙ ŷ, dβ = Σ dy
      norm_grads<T>(d_y.data_ptr<T>(), c_new.data_ptr<T>(), stats.data_ptr<T>(), 2, N, H, d_gamma_c.data_ptr<T>(),
                    d_beta_c.data_ptr<T>());
  });
  return {d_x, dh, dc, d_bias, d_w, d_gamma_ih, d_beta_ih, d_gamma_hh, d_beta_hh, d_gamma_c, d_beta_c};
}

// x (N, I) W^T for W (O, I), and a b for any strides: products.h's GEMM (oneDNN in float32 where torch has it), the
// input half's product and its two gradients
at::Tensor matmul_op(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0) && a.scalar_type() == b.scalar_type() &&
                  a.device().is_cpu() && b.device().is_cpu(),
              "matmul takes CPU matrices (M, K) and (K, N) of one dtype");
  at::Tensor c = empty_large({a.size(0), b.size(1)}, a.options());
  product(a, b, c);
  return c;
}

at::Tensor linear_op(const at::Tensor& x, const at::Tensor& weight) { return matmul_op(x, weight.t()); }

}  // namespace lstmkit::layer_norm

TORCH_LIBRARY(LSTMKIT_LN_NAMESPACE, m) {
  m.def("forward(Tensor gates_x, Tensor? bias, Tensor h0, Tensor c0, Tensor weight_hh, Tensor? gamma_ih, "
        "Tensor? beta_ih, Tensor? gamma_hh, Tensor? beta_hh, "
        "Tensor? gamma_c, Tensor? beta_c, Tensor? keep_c, Tensor? keep_h, *, int[] batch_sizes, bool reverse, "
        "float eps_ih, float eps_hh, float eps_c) -> Tensor[]");
  m.def("backward(Tensor d_out, Tensor d_h_n, Tensor d_c_n, Tensor gates_x, Tensor acts, Tensor rec, Tensor c_new, Tensor cells, "
        "Tensor tanh_y, Tensor stats, Tensor c0, Tensor weight_hh, Tensor? gamma_ih, Tensor? gamma_hh, "
        "Tensor? gamma_c, "
        "Tensor? keep_c, Tensor? keep_h, Tensor h_prev, *, int[] batch_sizes, bool reverse, bool bias_grad, "
        "bool weight_grad) -> Tensor[]");
  m.def("linear(Tensor x, Tensor weight) -> Tensor");
  m.def("matmul(Tensor a, Tensor b) -> Tensor");
}

TORCH_LIBRARY_IMPL(LSTMKIT_LN_NAMESPACE, CPU, m) {
  m.impl("forward", &lstmkit::layer_norm::forward);
  m.impl("backward", &lstmkit::layer_norm::backward);
  m.impl("linear", &lstmkit::layer_norm::linear_op);
  m.impl("matmul", &lstmkit::layer_norm::matmul_op);
}
