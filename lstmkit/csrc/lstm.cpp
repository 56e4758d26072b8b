// The native engine: the whole time loop of one LSTM layer and direction, forward and hand-written backward,
// for dense weights on the CPU. Same math and packed layout as lstmkit/engine/bptt.py (gate order i, f, g, o;
// peephole rows w_ci, w_cf, w_co; projection r_t = W_hr h_t), run by one team of threads per call (team.h):
// a step is a phase of items (two with a projection), one per panel of hidden units; an item forms
// W_ih x_t + W_hh h_{t-1} for its units with a register-tile kernel (gemm.h) and runs the pointwise step on the
// tile while it is in L1. The input product stays in the loop: one tile with the recurrent one, no (N, 4H)
// buffer, and measured as fast here as hoisting it into one GEMM before the loop. The loop is written once over
// the cell's type T, the operands' element type E (an Operand policy: gemm.h for float and double, bf16.h for
// bf16 operands with a float cell, int8.h for int8 weights with per-row scales and activations quantized per row
// each step) and the recurrent kind R (recurrent.h: dense, grouped, diagonal; low-rank is dense with the
// projection); a new element type or kind adds a policy header, not branches here.
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "bf16.h"
#include "ceiling.h"
#include "cell.h"
#include "gemm.h"
#include "int8.h"
#include "options.h"
#include "packing.h"
#include "products.h"
#include "recurrent.h"
#include "step.h"
#include "steps.h"
#include "team.h"

namespace lstmkit {

// The size of the saved gates from which the training forward streams them past the caches (Forward::save). In one
// process, bf16 training under autocast with and without (21 alternating steps each): M (8 MiB of gates) 2-5 %,
// L and L-proj (32 MiB) 3-7 % faster with, M-packed (6 MiB) the same, S (2 MiB, in the caches until the backward)
// 2.5 % slower.
constexpr size_t kStreamSaved = size_t{4} << 20;

template <typename T, typename E, typename R>
struct Forward {
  using V = Vectorized<T>;
  using Op = Operand<E>;
  using S = typename Op::Stored;  // what x and h_t are kept in: E, or float where the products read a copy
  static constexpr int L = V::size();

  const S *x = nullptr;        // (N, I) inputs
  const T *x_gates = nullptr;  // without `input` panels, the input product W_ih x already done, (N, 4H); else null
  const T *bias = nullptr;     // (4H) or null
  const S *h0 = nullptr;
  const T *c0 = nullptr, *peep = nullptr;  // peep (3, H) or null
  S *out = nullptr, *h_n = nullptr;        // (N, P), (B, P)
  T *c_n = nullptr;                        // (B, H)
  T *acts = nullptr, *cells = nullptr;  // (N, 4H) activated gates and (N, H) c_t, saved for backward; null in inference
  T *c_state = nullptr;  // (B, H) running c_t in inference, updated in place (one item per unit per step)
  S *h_full = nullptr;   // (B, H) h_t before the projection, with one
  S *h_seq = nullptr;    // (N, H) every h_t before the projection, when asked for: the layer's output when the
                         // projection only feeds the recurrence (low-rank W_hh = U V as W_hh = U, W_hr = V)
  int64_t I = 0, H = 0, P = 0;
  Steps steps;
  typename Op::Panels input;       // W_ih^T (I, 4H) as pack_gates lays it out, or none
  R recurrence;                    // W_hh h_{t-1}, packed for the forward (recurrent.h)
  typename Op::Panels projection;  // W_hr^T (H, P)
  // what the products read of x, h_{t-1} and h_t before the projection (Op::RowCopy): the rows themselves, or
  // a quantized copy of each, made by a pass over the rows before the product (int8.h)
  typename Op::RowCopy input_rows, recurrent_rows, projection_rows;

  int64_t units() const { return (H + L - 1) / L; }  // the items of a gates phase: panels of L hidden units

  void pointwise(int64_t s, int64_t b, int64_t u0, int n, const T* tile) const {
    const int64_t row = steps.start[s] + b;
    const bool ends = b >= steps.rows_at(s + 1);
    const bool tiled = input.count || R::kProduct;  // the tile holds a product: W_ih x_t, W_hh h_{t-1} or both
    const S* h_prev = R::kProduct ? nullptr : steps.prev(s, b, out, h0, P) + u0;  // for a term outside the tile
    const auto pre_activation = [&](int g) {  // a_g = W_ih x_t + W_hh h_{t-1} + b
      V a = tiled ? V::loadu(tile + g * L) : V(T(0));
      if (!input.count) a = a + V::loadu(x_gates + row * 4 * H + g * H + u0, n);
      a = recurrence.outside(g, u0, n, h_prev, a);  // a diagonal W_hh: + u_g ⊙ h_{t-1}
      if (bias) a = a + V::loadu(bias + g * H + u0, n);
      return a;
    };
    const T* cp = acts ? steps.prev(s, b, cells, c0, H) + u0 : c_state + b * H + u0;
    T* c_out = (acts ? cells + row * H : c_state + b * H) + u0;
    const auto [i, f, g, o, c, h] = cell_forward<T>(pre_activation(0), pre_activation(1), pre_activation(2),
                                                    pre_activation(3), V::loadu(cp, n), Peep<T>(peep, H, u0, n));
    c.store(c_out, n);
    if (ends) c.store(c_n + b * H + u0, n);
    if (h_full) {
      Op::store(h, h_full + b * H + u0, n);
      if (h_seq) Op::store(h, h_seq + row * H + u0, n);
    } else {
      Op::store(h, out + row * P + u0, n);
      if (ends) Op::store(h, h_n + b * P + u0, n);
    }
    if (acts) {
      T* a = acts + row * 4 * H + u0;
      save(i, a, n);
      save(f, a + H, n);
      save(g, a + 2 * H, n);
      save(o, a + 3 * H, n);
    }
  }

  // Whether the activated gates are saved with streaming stores (from kStreamSaved bytes on, where they would leave
  // the caches before the backward reads them): past the caches, no line is read before it is written and none of
  // the loop's weights and states is evicted for them. The same bits either way.
  bool stream_saved = false;
  void save(V v, T* dst, int n) const {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<T, float>) {
      if (stream_saved && n == L) return _mm512_stream_ps(dst, v);
    }
#endif
    v.store(dst, n);
  }

  // Without input panels the pointwise step reads the rows of W_ih x (N, 4H), four lines H apart, that no
  // hardware prefetcher foresees: asked for before the tile's product, they arrive while it runs.
  void prefetch_input_product(int64_t s, int64_t b0, int64_t b1, int64_t u0) const {
    for (int64_t b = b0; b < b1; ++b)
      for (int g = 0; g < 4; ++g) __builtin_prefetch(x_gates + (steps.start[s] + b) * 4 * H + g * H + u0, 0, 3);
  }

  // gates = W_ih x_t + W_hh h_{t-1} for the L hidden units of panel j, then the pointwise step on each tile.
  void gates(int64_t s, int64_t j) const {
    alignas(64) T tile[kTileRows * 4 * L];
    const E* a[kTileRows];
    const RowTiles tiles(steps.rows[s]);
    const int64_t u0 = j * L;
    const int n = static_cast<int>(std::min<int64_t>(L, H - u0));
    for (int64_t t = 0; t < tiles.count; ++t) {
      const int64_t b0 = tiles.begin(t), b1 = tiles.begin(t + 1);
      if (input.count) {
        for (int64_t b = b0; b < b1; ++b) a[b - b0] = input_rows(steps.start[s] + b, x + (steps.start[s] + b) * I);
        Op::kernel(b1 - b0, 4)(I, a, input.panel(j), tile, false);
      } else {
        prefetch_input_product(s, b0, b1, u0);
      }
      if constexpr (R::kProduct) {  // tile row r's h_{t-1} from column k, as the products read it
        const auto row = [&](int64_t r, int64_t k) {
          return recurrent_rows(b0 + r, steps.prev(s, b0 + r, out, h0, P) + k);
        };
        recurrence.forward_tile(j, b1 - b0, row, tile, input.count > 0);
      }
      for (int64_t b = b0; b < b1; ++b) pointwise(s, b, u0, n, tile + (b - b0) * 4 * L);
    }
#if defined(CPU_CAPABILITY_AVX512)
    if (stream_saved) _mm_sfence();
#endif
  }

  static void store_row(const T* r, int64_t n, S* dst) {
    for (int64_t v = 0; v < n; v += L) {
      const int m = static_cast<int>(std::min<int64_t>(L, n - v));
      Op::store(V::loadu(r + v, m), dst + v, m);
    }
  }

  // r_t = W_hr h_t for the output columns of panel q.
  void project(int64_t s, int64_t q) const {
    alignas(64) T tile[kTileRows * kMaxVecs * L];
    const E* a[kTileRows];
    const RowTiles tiles(steps.rows[s]);
    const int64_t width = projection.width, col = q * width, n = std::min(width, P - col);
    for (int64_t t = 0; t < tiles.count; ++t) {
      const int64_t b0 = tiles.begin(t), b1 = tiles.begin(t + 1);
      for (int64_t b = b0; b < b1; ++b) a[b - b0] = projection_rows(b, h_full + b * H);
      Op::kernel(b1 - b0, width / L)(H, a, projection.panel(q), tile, false);
      for (int64_t b = b0; b < b1; ++b) {
        const T* r = tile + (b - b0) * width;
        store_row(r, n, out + (steps.start[s] + b) * P + col);
        if (b >= steps.rows_at(s + 1)) store_row(r, n, h_n + b * P + col);
      }
    }
  }

  // Per step: the gates of every hidden unit, then (with one) the projection; where the products read a copy of
  // their rows (Op::RowCopy::kPass), a phase before each makes it, one item per row (x's rows all before the loop).
  void run() const {
    enum Kind { kInputRows, kRecurrentRows, kGates, kProjectionRows, kProjection };
    std::vector<std::pair<Kind, int64_t>> phases;  // kind, step
    std::vector<int64_t> counts;
    const auto add = [&](Kind kind, int64_t s, int64_t items) { phases.push_back({kind, s}), counts.push_back(items); };
    constexpr bool copies = Op::RowCopy::kPass;
    if (copies && input.count) add(kInputRows, 0, steps.total);
    for (int64_t s = 0; s < steps.count(); ++s) {
      if (copies && R::kProduct) add(kRecurrentRows, s, steps.rows[s]);
      add(kGates, s, units());
      if (h_full && copies) add(kProjectionRows, s, steps.rows[s]);
      if (h_full) add(kProjection, s, projection.count);
    }
    run_phases(counts, team_size(std::max(units(), projection.count)), [&](int64_t phase, int64_t i) {
      const auto [kind, s] = phases[phase];
      switch (kind) {
        case kInputRows: return input_rows.prepare(i, x + i * I);
        case kRecurrentRows: return recurrent_rows.prepare(i, steps.prev(s, i, out, h0, P));
        case kGates: return gates(s, i);
        case kProjectionRows: return projection_rows.prepare(i, h_full + i * H);
        case kProjection: return project(s, i);
      }
    });
  }
};

// T and E as in Forward: the per-step products of the backward (dL/dh_{t-1} = dG W_hh, dL/dx = dG W_ih,
// dL/dh_t = dr W_hr) read dG and dr as E, a copy kept beside the T values where E is not T (Operand::rows).
template <typename T, typename E, typename R>
struct Backward {
  using V = Vectorized<T>;
  using Op = Operand<E>;
  static constexpr int L = V::size();

  // saved by the forward; d_out (N, P)
  const T *cells = nullptr, *c0 = nullptr, *peep = nullptr, *d_out = nullptr;
  T *gates = nullptr;  // (N, 4H): the activated gates saved by the forward, overwritten row by row with dL/dgates
  T *dx = nullptr;           // (N, I) dL/dx with W_ih in the loop (not with bf16 products: after it); else null
  T *dh_next = nullptr;      // (B, P): dL/dh_t (dL/dr_t with projection) from the step after t; ends as dL/dh0
  T *dc = nullptr;           // (B, H): dL/dc_t from the step after t; ends as dL/dc0
  T *d_peep = nullptr;       // (3, H) or null
  T *d_bias = nullptr;       // (4H) or null
  T *d_out_total = nullptr;  // (N, P) dL/dr_t from both the output and step t+1, kept for dW_hr; with projection only
  E *gates_op = nullptr;  // (N, 4H) dL/dgates as E where E is not T, the products' operand, written instead of
                          // `gates` (else null: `gates` itself)
  E *total_op = nullptr;  // (N, P) d_out_total likewise
  T *h_full = nullptr;    // (N, H) h_t = o ⊙ tanh(c_t) recomputed for dW_hr, with projection only: written over
                          // `cells` (the same array), row by row once c_t has had its last read
  const T *d_h_seq = nullptr;  // (N, H) dL/dh_t from outside the recurrence (forward's h_seq), or null
  int64_t I = 0, H = 0, P = 0;
  Steps steps;
  R recurrence;                    // dL/dh_{t-1} = dG W_hh, packed for the backward (recurrent.h)
  typename Op::Panels input;       // W_ih (4H, I), when dL/dx is asked for
  typename Op::Panels projection;  // W_hr (P, H)

  // dL/dgates of step s, row b, hidden units [u0, u0 + n), from dL/dh_t = dh (+ dh_extra) and dL/dc_t in dc.
  void pointwise(int64_t s, int64_t b, int64_t u0, int64_t n, const T* dh, const T* dh_extra) const {
    const int64_t row = steps.start[s] + b;
    const T* a = gates + row * 4 * H + u0;
    const T* cr = cells + row * H + u0;
    const T* cpr = steps.prev(s, b, cells, c0, H) + u0;
    T* dg = gates + row * 4 * H + u0;  // each vector's gates are read before its dL/dgates is written
    T* dcr = dc + b * H + u0;
    // sums over rows: one item per unit and phase, the phases in order, so no two threads add at once
    const auto add_to = [](T* sum, V v, int m) { (V::loadu(sum, m) + v).store(sum, m); };
    for (int64_t v = 0; v < n; v += L) {
      const int m = static_cast<int>(std::min<int64_t>(L, n - v));
      const V i = V::loadu(a + v, m), f = V::loadu(a + H + v, m), g = V::loadu(a + 2 * H + v, m),
              o = V::loadu(a + 3 * H + v, m);
      const V c = V::loadu(cr + v, m), c_prev = V::loadu(cpr + v, m);
      V d_h = V::loadu(dh + v, m);
      if (dh_extra) d_h = d_h + V::loadu(dh_extra + v, m);
      const auto [da_i, da_f, da_g, da_o, dc_prev, tanh_c] =
          cell_backward<T>(i, f, g, o, c, c_prev, d_h, V::loadu(dcr + v, m), Peep<T>(peep, H, u0 + v, m));
      if (d_peep) {
        add_to(d_peep + u0 + v, da_i * c_prev, m);
        add_to(d_peep + H + u0 + v, da_f * c_prev, m);
        add_to(d_peep + 2 * H + u0 + v, da_o * c, m);
      }
      const V da[4] = {da_i, da_f, da_g, da_o};
      for (int gate = 0; gate < 4; ++gate) {
        if (gates_op) Op::store(da[gate], gates_op + row * 4 * H + u0 + gate * H + v, m);  // all the products read
        else da[gate].store(dg + gate * H + v, m);
        if (d_bias) add_to(d_bias + gate * H + u0 + v, da[gate], m);  // dL/db = sum over rows of dL/da
      }
      dc_prev.store(dcr + v, m);
      // c_t is read here and as c_prev by step t+1, whose pointwise ran before: its place is free for h_t
      if (h_full) (o * tanh_c).store(h_full + row * H + u0 + v, m);
    }
  }

  // Rows [b0, b1) of dG_k times panel p of w, its first n columns into `dst` (row b0), rows `ld` apart.
  void gate_product(int64_t k, const typename Op::Panels& w, int64_t p, int64_t b0, int64_t b1, T* dst,
                    int64_t ld, int64_t n, T* tile) const {
    const E* a[kTileRows];
    const E* d_g = Op::rows(gates, gates_op);
    for (int64_t b = b0; b < b1; ++b) a[b - b0] = d_g + (steps.start[k] + b) * 4 * H;
    panel_product<T, E>(a, b1 - b0, 4 * H, w, p, n, dst, ld, tile);
  }

  // Panel p of dL/dh_{t-1} = W_hh^T dG_t for step k's rows (none when k is past the end), then for step k - 1's
  // rows the pointwise backward (no projection: these columns are hidden units) or dL/dr = d_out + dL/dh.
  void recurrent(int64_t k, int64_t p) const {
    alignas(64) T tile[kTileRows * kMaxVecs * L];
    const int64_t gemm_rows = steps.rows_at(k), next = k - 1, next_rows = steps.rows_at(next);
    const RowTiles tiles(std::max(gemm_rows, next_rows));
    const int64_t width = recurrence.width(), col = p * width, n = std::min(width, P - col);
    for (int64_t t = 0; t < tiles.count; ++t) {
      const int64_t b0 = tiles.begin(t), b1 = tiles.begin(t + 1), g1 = std::min(b1, gemm_rows);
      if (g1 > b0)
        recurrence.backward_panel(Op::rows(gates, gates_op) + steps.start[k] * 4 * H, b0, g1, p, col, n,
                                  dh_next + b0 * P + col, P, tile);
      for (int64_t b = b0; b < std::min(b1, next_rows); ++b) {
        const int64_t row = steps.start[next] + b;
        const T* d_o = d_out + row * P + col;
        const T* d_r = dh_next + b * P + col;
        if (!d_out_total) {
          pointwise(next, b, col, n, d_o, d_r);
          continue;
        }
        T* total = d_out_total + row * P + col;
        for (int64_t v = 0; v < n; v += L) {
          const int m = static_cast<int>(std::min<int64_t>(L, n - v));
          const V sum = V::loadu(d_o + v, m) + V::loadu(d_r + v, m);
          sum.store(total + v, m);
          if (total_op) Op::store(sum, total_op + row * P + col + v, m);
        }
      }
    }
  }

  // Panel q of dL/dx_t = W_ih^T dG_t for step k's rows.
  void input_grad(int64_t k, int64_t q) const {
    alignas(64) T tile[kTileRows * kMaxVecs * L];
    const RowTiles tiles(steps.rows[k]);
    const int64_t col = q * input.width, n = std::min(input.width, I - col);
    for (int64_t t = 0; t < tiles.count; ++t) {
      const int64_t b0 = tiles.begin(t), b1 = tiles.begin(t + 1);
      gate_product(k, input, q, b0, b1, dx + (steps.start[k] + b0) * I + col, I, n, tile);
    }
  }

  // With projection: panel p of dL/dh_t = W_hr^T dL/dr_t for step s, then its pointwise backward.
  void project(int64_t s, int64_t p) const {
    alignas(64) T tile[kTileRows * kMaxVecs * L];
    const E* a[kTileRows];
    const E* d_r = Op::rows(d_out_total, total_op);
    const RowTiles tiles(steps.rows[s]);
    const int64_t width = projection.width, u0 = p * width, n = std::min(width, H - u0);
    for (int64_t t = 0; t < tiles.count; ++t) {
      const int64_t b0 = tiles.begin(t), b1 = tiles.begin(t + 1);
      for (int64_t b = b0; b < b1; ++b) a[b - b0] = d_r + (steps.start[s] + b) * P;
      Op::kernel(b1 - b0, width / L)(P, a, projection.panel(p), tile, false);
      for (int64_t b = b0; b < b1; ++b) {
        const T* d_h = d_h_seq ? d_h_seq + (steps.start[s] + b) * H + u0 : nullptr;
        pointwise(s, b, u0, n, tile + (b - b0) * width, d_h);
      }
    }
  }

  void run() const {  // k from past the end down to 0: the products of step k with the pointwise of step k - 1
    struct Phase {
      int64_t k;
      bool projection;  // the projection and pointwise of step k - 1
    };
    std::vector<Phase> phases;
    std::vector<int64_t> counts;
    for (int64_t k = steps.count(); k >= 0; --k) {
      phases.push_back({k, false});
      counts.push_back(recurrence.items() + (k < steps.count() ? input.count : 0));
      if (d_out_total && k > 0) {
        phases.push_back({k, true});
        counts.push_back(projection.count);
      }
    }
    const int64_t most = std::max(recurrence.items() + input.count, projection.count), workers = team_size(most);
    // a recurrent phase's items: panels of dL/dh_{t-1} and of dL/dx_t, which may differ in width
    const auto kinds = [&](int64_t k) {
      return TwoKinds{recurrence.items(), k < steps.count() ? input.count : 0, workers};
    };
    run_phases(counts, workers, [&](int64_t phase, int64_t i) {
      const auto [k, projection_phase] = phases[phase];
      if (projection_phase) return project(k - 1, i);
      const auto [input_item, j] = kinds(k)[i];
      input_item ? input_grad(k, j) : recurrent(k, j);
    }, [&](int64_t phase, int64_t w) {
      const auto [k, projection_phase] = phases[phase];
      return projection_phase ? share(counts[phase], w, workers).first : kinds(k).first(w);
    });
  }
};

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t ? t->data_ptr<T>() : nullptr;
}

void check(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type() && t.is_contiguous(), name,
              " must be a contiguous CPU tensor of dtype ", like.scalar_type());
}

void check(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& like) {
  if (t) check(*t, name, like);
}

// A block-diagonal W_hh of `groups` groups: every group `L` units wide for the widest vector (so no panel of the
// forward or backward straddles two groups), and no projection.
void check_groups(int64_t groups, int64_t H, int64_t P, const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
                  int64_t L) {
  TORCH_CHECK(groups >= 1, "groups must be >= 1, got ", groups);
  TORCH_CHECK(groups == 1 || (!w_hr && P == H && H % groups == 0 && (H / groups) % L == 0 && w_hh.dim() == 2),
              "a grouped weight_hh needs P == H (no weight_hr) and groups of a multiple of ", L,
              " units, got H = ", H, " in ", groups, " groups");
}

// x (N, I) with weight_ih (4H, I), or the input product already done, x (N, 4H), without. weight_hh (4H, P), or
// with `diagonal` its four diagonals (4, H), u_q in a_q += u_q ⊙ h_{t-1}, without weight_hr (P == H), or with
// `groups` > 1 a block-diagonal W_hh as the rows of its blocks, (4H, P / groups): row q·H + u holds unit u's gate q
// on h_{t-1}'s group of u (see check_groups). Returns
// [out (N, P), h_n (B, P), c_n (B, H), when training the activated gates (N, 4H) and cells c_t (N, H), and with
// `keep_h` (and a projection) every h_t before the projection (N, H)]. With options.int8 the weights are int8 and
// `scales` holds their per-row scales; everything else float32, no training.
std::vector<at::Tensor> forward(const at::Tensor& x, const std::optional<at::Tensor>& w_ih,
                                const std::optional<at::Tensor>& bias, const at::Tensor& h0, const at::Tensor& c0,
                                const at::Tensor& w_hh, const std::optional<at::Tensor>& peephole,
                                const std::optional<at::Tensor>& w_hr, const LoopOptions& options,
                                const Int8Scales& scales = {}) {
  const std::vector<int64_t>& batch_sizes = options.batch_sizes;
  const bool reverse = options.reverse, training = options.training, keep_h = options.keep_h,
             diagonal = options.diagonal, bf16_operands = options.bf16, int8_weights = options.int8;
  const int64_t groups = options.groups;
  if (int8_weights) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && !bf16_operands && !training && !diagonal && groups == 1,
                "int8 weights run float32 activations, a dense weight_hh and no training, got x of ",
                x.scalar_type(), training ? " with training" : "");
  } else if (bf16_operands) {
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
                "bf16 operands come as float32 or bfloat16, got x of ", x.scalar_type());
    TORCH_CHECK(w_ih && !diagonal && groups == 1, "bf16 operands run a dense weight_ih and weight_hh");
  } else {
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                "the native engine runs float32 and float64 (and bf16 operands with options.bf16)");
  }
  const auto is_weight = [&](const char* name) { return std::strncmp(name, "weight", 6) == 0; };
  const auto check_operand = [&](const std::optional<at::Tensor>& t, const char* name) {
    if (t && int8_weights && is_weight(name)) {
      TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == at::kChar, name,
                  " must be a contiguous CPU tensor of dtype int8 (int8 weights)");
      return;
    }
    if (!t || !bf16_operands) return check(t, name, x);
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() &&
                (t->scalar_type() == at::kFloat || t->scalar_type() == at::kBFloat16),
                name, " must be a contiguous CPU tensor of dtype float32 or bfloat16 (bf16 operands)");
  };
  for (auto [t, name] : {std::pair{x, "x"}, {h0, "h0"}, {c0, "c0"}, {w_hh, "weight_hh"}}) check_operand(t, name);
  check_operand(w_ih, "weight_ih"), check_operand(bias, "bias"), check_operand(peephole, "peephole");
  check_operand(w_hr, "weight_hr");
  TORCH_CHECK(w_hh.dim() == 2 && (!diagonal || (w_hh.size(0) == 4 && !w_hr)),
              "a diagonal weight_hh is (4, H), without weight_hr");
  const int64_t N = x.size(0), I = x.size(1), H = diagonal ? w_hh.size(1) : w_hh.size(0) / 4, B = h0.size(0),
                P = h0.size(1);
  const Steps steps(batch_sizes, reverse);
  TORCH_CHECK(batch_sizes[0] == B && steps.total == N, "batch_sizes do not match the rows of x and h0");
  TORCH_CHECK(w_ih ? w_ih->size(0) == 4 * H && w_ih->size(1) == I : I == 4 * H,
              "x must be (N, I) with weight_ih (4H, I), or (N, 4H) without");
  check_groups(groups, H, P, w_hh, w_hr, Vectorized<float>::size());
  TORCH_CHECK(w_hh.size(1) * groups == P && c0.size(0) == B && c0.size(1) == H && (!w_hr || w_hr->size(0) == P),
              "weight_hh (4H, P) or diagonal (4, H), weight_hr (P, H), h0 (B, P) and c0 (B, H) do not fit together");
  // the cell's dtype (c_t, the gates, the tiles' sums) and the operands' (x, the packed weights, h_t): with bf16
  // operands, fp32 and bf16, the inputs converted here (a no-op where they already are)
  const at::ScalarType cell_type = bf16_operands || int8_weights ? at::kFloat : x.scalar_type(),
                       operand_type = bf16_operands ? at::kBFloat16 : cell_type;
  const auto as = [](const at::Tensor& t, at::ScalarType type) { return converted(t, type); };
  const auto as_opt = [&](const std::optional<at::Tensor>& t, at::ScalarType type) {
    return t ? as(*t, type) : at::Tensor();
  };
  const at::Tensor x_op = as(x, w_ih ? operand_type : cell_type), h0_op = as(h0, operand_type),
                   c0_cell = as(c0, cell_type), bias_cell = as_opt(bias, cell_type),
                   peep_cell = as_opt(peephole, cell_type);
  const auto cell = x.options().dtype(cell_type), operand = x.options().dtype(operand_type);
  at::Tensor out = empty_large({N, P}, operand), h_n = at::empty({B, P}, operand), c_n = at::empty({B, H}, cell);
  at::Tensor acts, cells, c_state;
  if (training) {
    acts = empty_large({N, 4 * H}, cell);
    cells = empty_large({N, H}, cell);
  } else {
    c_state = c0_cell.is_same(c0) ? c0_cell.clone() : c0_cell;  // a conversion of c0 is ours to update already
  }
  const at::Tensor h_full = w_hr ? at::empty({B, H}, operand) : at::Tensor();
  const at::Tensor h_seq = w_hr && keep_h ? empty_large({N, H}, operand) : at::Tensor();

  const auto run = [&](auto cell_zero, auto operand_zero, auto kind) {
    using T = decltype(cell_zero);
    using E = decltype(operand_zero);
    using Op = Operand<E>;
    using S = typename Op::Stored;
    using R = typename decltype(kind)::template type<T, E>;
    constexpr int64_t L = Vectorized<T>::size();
    Forward<T, E, R> f;
    f.x = w_ih ? x_op.data_ptr<S>() : nullptr, f.x_gates = w_ih ? nullptr : x_op.data_ptr<T>();
    f.bias = ptr_or_null<T>(bias_cell), f.h0 = h0_op.data_ptr<S>(), f.c0 = c0_cell.data_ptr<T>();
    f.peep = ptr_or_null<T>(peep_cell), f.out = out.data_ptr<S>(), f.h_n = h_n.data_ptr<S>();
    f.c_n = c_n.data_ptr<T>(), f.acts = ptr_or_null<T>(acts), f.cells = ptr_or_null<T>(cells);
    f.stream_saved = acts.defined() && acts.nbytes() >= kStreamSaved && H % L == 0 &&
                     reinterpret_cast<uintptr_t>(acts.data_ptr()) % 64 == 0;
    f.c_state = ptr_or_null<T>(c_state), f.h_full = ptr_or_null<S>(h_full), f.h_seq = ptr_or_null<S>(h_seq);
    f.I = I, f.H = H, f.P = P, f.steps = steps;
    f.recurrence = R::for_forward(w_hh, scales.weight_hh, {H, P, groups});
    if (w_ih) f.input = pack_gates<E>(Op::weight(*w_ih, scales.weight_ih), H);
    if (w_hr) f.projection = pack_projection<E>(Op::weight(*w_hr, scales.weight_hr), panel_vecs(P, L, team_size(P)));
    using Copy = typename Op::RowCopy;
    if (w_ih) f.input_rows = Copy(N, I, x.options());
    f.recurrent_rows = Copy(B, P, x.options());
    if (w_hr) f.projection_rows = Copy(B, H, x.options());
    f.run();
  };
  if (int8_weights) {
    run(float{}, q8{}, Kind<DenseRecurrence>{});
  } else if (bf16_operands) {
    run(float{}, bf16{}, Kind<DenseRecurrence>{});
  } else {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstmkit_forward", [&] {
      with_kind(options, [&](auto kind) { run(scalar_t{}, scalar_t{}, kind); });
    });
  }
  return {out, h_n, c_n, acts, cells, h_seq};
}

std::vector<at::Tensor> backward_loop(const at::Tensor& d_out, const at::Tensor& d_h_n, const at::Tensor& d_c_n,
                                      const at::Tensor& acts, const at::Tensor& cells, const at::Tensor& out,
                                      const at::Tensor& x, const std::optional<at::Tensor>& w_ih,
                                      const std::optional<at::Tensor>& bias, const at::Tensor& h0, const at::Tensor& c0,
                                      const at::Tensor& w_hh, const std::optional<at::Tensor>& peephole,
                                      const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& d_h_seq,
                                      const LoopOptions& options, const Needs& needs);

at::Tensor bf16_operand(const at::Tensor& t) { return converted(t, at::kBFloat16); }

// The most columns I + P for which the bf16 backward forms dW_ih and dW_hh as one product. oneDNN's bf16 matmul
// here, N = 4H rows of dG^T: M (4H = 1024, I = P = 256) 5.5 ms joined against 6.1 apart, L-proj (2048, 512 + 128)
// 26.9 against 28.8; L (2048, 512 + 512) 47.8 against 45.9, XL (4096, 1024 + 1024) 93.6 against 90.0.
constexpr int64_t kJointWeightGrads = 640;

// a b with bf16 operands (a and b bf16, b possibly a transposed view): oneDNN's bf16 matmul, fp32 accumulation, the
// result rounded to bf16 as torch's is, returned in float32; both results in empty_large buffers
at::Tensor bf16_product(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor c = empty_large({a.size(0), b.size(1)}, a.options().dtype(at::kBFloat16));
  at::mm_out(c, a, b);
  return converted(c, at::kFloat);
}

// A weight gradient d^T v over all rows (d (N, M) and v (N, K) bf16 operands held in bf16 or float32) with bf16
// products: oneDNN's bf16 matmul (AVX512_BF16 where the CPU has it), fp32 accumulation and the result rounded to
// bf16, as torch.nn.LSTM's weight gradients are under autocast; returned in float32. 2-3x the float32 GEMM here.
at::Tensor bf16_weight_grad(const at::Tensor& d, const at::Tensor& v) {
  return bf16_product(bf16_operand(d).t(), bf16_operand(v));
}

// `backward` of a forward with bf16 operands. The loop's cell and its incoming gradients in float32 (converted here
// where they come as bfloat16); the operands (x, h_0, out and the weights) as they come, float32 or bfloat16: the
// products read them rounded to bf16 (packing rounds the weights, the weight gradients' bf16_weight_grad the rest)
// as the forward did, with dG and dr rounded to bf16 as they enter them. Each gradient in its operand's dtype.
std::vector<at::Tensor> backward_bf16(const at::Tensor& d_out, const at::Tensor& d_h_n, const at::Tensor& d_c_n,
                                      const at::Tensor& acts, const at::Tensor& cells, const at::Tensor& out,
                                      const at::Tensor& x, const std::optional<at::Tensor>& w_ih,
                                      const std::optional<at::Tensor>& bias, const at::Tensor& h0,
                                      const at::Tensor& c0, const at::Tensor& w_hh,
                                      const std::optional<at::Tensor>& peephole, const std::optional<at::Tensor>& w_hr,
                                      const std::optional<at::Tensor>& d_h_seq, const LoopOptions& options,
                                      const Needs& needs) {
  const auto f32 = [](const at::Tensor& t) { return converted(t, at::kFloat); };
  const auto opt = [&](const std::optional<at::Tensor>& t) {
    return t ? std::optional<at::Tensor>(f32(*t)) : std::nullopt;
  };
  std::vector<at::Tensor> grads = backward_loop(f32(d_out), f32(d_h_n), f32(d_c_n), acts, cells, out, x, w_ih,
                                                opt(bias), h0, f32(c0), w_hh, opt(peephole), w_hr, opt(d_h_seq),
                                                options, needs);
  const std::optional<at::Tensor> operands[] = {x, h0, c0, peephole, bias, w_ih, w_hh, w_hr};
  for (size_t k = 0; k < grads.size(); ++k)
    if (grads[k].defined() && operands[k]) grads[k] = grads[k].to(operands[k]->scalar_type());
  return grads;
}

// The gradients of `forward`'s loss through its outputs (and through h_seq, d_h_seq, when it was kept), for [x, h0,
// c0, peephole, bias, weight_ih, weight_hh, weight_hr] where `needs` asks (h0 and c0 always come): None for those
// not asked or absent. The loop writes dL/dgates over `acts` (consuming them: no second (N, 4H) buffer) and forms
// dL/dx = W_ih^T dG step by step (with bf16 products, one product after it); the weight gradients follow it, one
// product over all rows each, every buffer dropped after its last use.
std::vector<at::Tensor> backward(const at::Tensor& d_out, const at::Tensor& d_h_n, const at::Tensor& d_c_n,
                                 const at::Tensor& acts, const at::Tensor& cells, const at::Tensor& out,
                                 const at::Tensor& x, const std::optional<at::Tensor>& w_ih,
                                 const std::optional<at::Tensor>& bias, const at::Tensor& h0, const at::Tensor& c0,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& peephole,
                                 const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& d_h_seq,
                                 const LoopOptions& options, const Needs& needs) {
  return (options.bf16 ? backward_bf16 : backward_loop)(d_out, d_h_n, d_c_n, acts, cells, out, x, w_ih, bias, h0, c0,
                                                        w_hh, peephole, w_hr, d_h_seq, options, needs);
}

// `backward` with every tensor of one dtype; with options.bf16 (see backward_bf16) the cell's float32 and the
// operands x, h0, out and the weights float32 or bfloat16.
std::vector<at::Tensor> backward_loop(const at::Tensor& d_out, const at::Tensor& d_h_n, const at::Tensor& d_c_n,
                                      const at::Tensor& acts, const at::Tensor& cells, const at::Tensor& out,
                                      const at::Tensor& x, const std::optional<at::Tensor>& w_ih,
                                      const std::optional<at::Tensor>& bias, const at::Tensor& h0,
                                      const at::Tensor& c0, const at::Tensor& w_hh,
                                      const std::optional<at::Tensor>& peephole, const std::optional<at::Tensor>& w_hr,
                                      const std::optional<at::Tensor>& d_h_seq, const LoopOptions& options,
                                      const Needs& needs) {
  const std::vector<int64_t>& batch_sizes = options.batch_sizes;
  const bool reverse = options.reverse, diagonal = options.diagonal;
  const int64_t groups = options.groups;
  const auto check_operand = [&](const std::optional<at::Tensor>& t, const char* name) {
    if (!t || !options.bf16) return check(t, name, acts);
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() &&
                (t->scalar_type() == at::kFloat || t->scalar_type() == at::kBFloat16),
                name, " must be a contiguous CPU tensor of dtype float32 or bfloat16 (bf16 operands)");
  };
  for (auto [t, name] : {std::pair{d_out, "d_out"}, {d_h_n, "d_h_n"}, {d_c_n, "d_c_n"}, {cells, "cells"},
                         {c0, "c0"}})
    check(t, name, acts);
  for (auto [t, name] : {std::pair{out, "out"}, {x, "x"}, {h0, "h0"}, {w_hh, "weight_hh"}}) check_operand(t, name);
  check_operand(w_ih, "weight_ih"), check(peephole, "peephole", acts), check_operand(w_hr, "weight_hr");
  check(d_h_seq, "d_h_seq", acts);
  const int64_t N = acts.size(0), I = x.size(1), H = acts.size(1) / 4, P = h0.size(1);
  TORCH_CHECK(!d_h_seq || (w_hr && d_h_seq->size(0) == N && d_h_seq->size(1) == H),
              "d_h_seq must be (N, H), and comes only with weight_hr");
  TORCH_CHECK(!diagonal || (w_hh.size(0) == 4 && w_hh.size(1) == H && P == H && !w_hr),
              "a diagonal weight_hh is (4, H), without weight_hr");
  check_groups(groups, H, P, w_hh, w_hr, Vectorized<float>::size());
  TORCH_CHECK(diagonal || w_hh.size(1) * groups == P, "weight_hh must be (4H, P / groups)");
  const Steps steps(batch_sizes, reverse);
  const auto opt = acts.options();
  const at::Tensor& d_gates = acts;
  // dL/dx = dG W_ih: step by step in the loop, or with bf16 products one oneDNN bf16 product after it (measured
  // faster here), rounded to bf16 as torch.nn.LSTM's is under autocast
  const bool dx_after = options.bf16;
  at::Tensor dx = w_ih && needs.x && !dx_after ? empty_large({N, I}, opt) : at::Tensor();
  at::Tensor dh_next = d_h_n.clone(), dc = d_c_n.clone();
  const at::Tensor d_peep = peephole && needs.peephole ? at::zeros({3, H}, opt) : at::Tensor();
  const at::Tensor d_bias = bias && needs.bias ? at::zeros({4 * H}, opt) : at::Tensor();
  at::Tensor d_out_total = w_hr ? empty_large({N, P}, opt) : at::Tensor();
  at::Tensor h_full = w_hr ? cells : at::Tensor();  // the saved cells are consumed like the gates

  // with bf16 products, the bf16 copies of dG and dr that they read
  const at::Tensor gates_op = options.bf16 ? empty_large({N, 4 * H}, opt.dtype(at::kBFloat16)) : at::Tensor();
  const at::Tensor total_op = options.bf16 && w_hr ? empty_large({N, P}, opt.dtype(at::kBFloat16)) : at::Tensor();
  at::Tensor d_w_ih, d_w_hh, d_w_hr;
  const auto run = [&](auto cell_zero, auto operand_zero, auto kind) {
    using T = decltype(cell_zero);
    using E = decltype(operand_zero);
    using R = typename decltype(kind)::template type<T, E>;
    constexpr int64_t L = Vectorized<T>::size();
    const int threads = team_size(4 * H);
    const RecurrentShape shape{H, P, groups};
    {  // the loop, its packed weights freed before the weight gradients are allocated
      Backward<T, E, R> bw;
      bw.cells = cells.data_ptr<T>(), bw.c0 = c0.data_ptr<T>();
      bw.peep = ptr_or_null<T>(peephole), bw.d_out = d_out.data_ptr<T>(), bw.gates = acts.data_ptr<T>();
      bw.dx = ptr_or_null<T>(dx), bw.dh_next = dh_next.data_ptr<T>(), bw.dc = dc.data_ptr<T>();
      bw.d_peep = ptr_or_null<T>(d_peep), bw.d_bias = ptr_or_null<T>(d_bias);
      bw.d_out_total = ptr_or_null<T>(d_out_total);
      bw.gates_op = ptr_or_null<E>(gates_op), bw.total_op = ptr_or_null<E>(total_op);
      bw.h_full = ptr_or_null<T>(h_full);
      bw.d_h_seq = ptr_or_null<T>(d_h_seq), bw.I = I, bw.H = H, bw.P = P, bw.steps = steps;
      bw.recurrence = R::for_backward(w_hh, shape, threads);
      if (dx.defined()) bw.input = pack_plain<E>(*w_ih, panel_vecs(I, L, threads));
      if (w_hr) bw.projection = pack_plain<E>(*w_hr, panel_vecs(H, L, threads));
      bw.run();
    }
    if constexpr (std::is_same_v<T, E>) {  // the weight gradients, one product over all rows each
      if (w_hr && needs.weight_hr) {
        d_w_hr = at::empty({P, H}, opt);
        product(d_out_total.t(), h_full, d_w_hr);  // dW_hr = sum_t dr_t^T h_t
      }
      d_out_total.reset(), h_full.reset();
      if (needs.weight_hh) d_w_hh = R::weight_grad(d_gates, out, h0, steps, shape);  // sum_t dG_t^T h_{t-1}
      if (w_ih && needs.weight_ih) {
        d_w_ih = at::empty({4 * H, I}, opt);
        product(d_gates.t(), x, d_w_ih);  // dW_ih = sum_t dG_t^T x_t
      }
    }
  };
  if (!options.bf16) {
    AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstmkit_backward", [&] {
      with_kind(options, [&](auto kind) { run(scalar_t{}, scalar_t{}, kind); });
    });
    return {w_ih ? dx : d_gates, dh_next, dc, d_peep, d_bias, d_w_ih, d_w_hh, d_w_hr};
  }
  TORCH_CHECK(acts.scalar_type() == at::kFloat && !diagonal && groups == 1,
              "bf16 products run float32 tensors and a dense weight_hh");
  run(float{}, bf16{}, Kind<DenseRecurrence>{});
  // the weight gradients' products on bf16 operands: oneDNN's bf16 matmul, see bf16_weight_grad
  if (w_hr && needs.weight_hr) d_w_hr = bf16_weight_grad(total_op, h_full);  // dW_hr = sum_t dr_t^T h_t
  d_out_total.reset(), h_full.reset();
  if (w_ih && needs.weight_ih && needs.weight_hh && I + P <= kJointWeightGrads) {
    // [dW_ih, dW_hh] = dG^T [x, h_prev] as one product: dG read once, and I + P columns, which oneDNN runs faster
    // than I and P apart where they are few
    at::Tensor xh = empty_large({N, I + P}, opt.dtype(at::kBFloat16));
    xh.narrow(1, 0, I).copy_(x);  // x rounded to bf16 as bf16_operand rounds it
    write_previous_states(bf16_operand(out), bf16_operand(h0), steps, xh.narrow(1, I, P));
    at::Tensor both = empty_large({4 * H, I + P}, opt.dtype(at::kBFloat16));
    at::mm_out(both, gates_op.t(), xh);
    d_w_ih = converted(both.narrow(1, 0, I), at::kFloat), d_w_hh = converted(both.narrow(1, I, P), at::kFloat);
  } else {
    if (needs.weight_hh)  // dW_hh = sum_t dG_t^T h_{t-1}
      d_w_hh = bf16_weight_grad(gates_op, previous_states(bf16_operand(out), bf16_operand(h0), steps));
    if (w_ih && needs.weight_ih) d_w_ih = bf16_weight_grad(gates_op, x);  // dW_ih = sum_t dG_t^T x_t
  }
  if (w_ih && needs.x) dx = bf16_product(gates_op, bf16_operand(*w_ih));  // dL/dx = dG W_ih
  return {w_ih ? dx : d_gates, dh_next, dc, d_peep, d_bias, d_w_ih, d_w_hh, d_w_hr};
}

}  // namespace lstmkit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lstmkit's native LSTM time loop (see lstmkit/engine/native.py)";
  using lstmkit::LoopOptions, lstmkit::Needs;
  py::class_<LoopOptions>(m, "LoopOptions", "the native loop's options, by keyword (csrc/options.h)")
      .def(py::init([](std::vector<int64_t> batch_sizes, bool reverse, bool training, bool keep_h, bool diagonal,
                       int64_t groups, bool bf16, bool int8) {
             return LoopOptions{std::move(batch_sizes), reverse, training, keep_h, diagonal, groups, bf16, int8};
           }),
           py::kw_only(), py::arg("batch_sizes"), py::arg("reverse"), py::arg("training"), py::arg("keep_h"),
           py::arg("diagonal"), py::arg("groups"), py::arg("bf16") = false, py::arg("int8") = false);
  using lstmkit::Int8Scales;
  py::class_<Int8Scales>(m, "Int8Scales", "the per-row scales of int8 weights, by keyword (csrc/options.h)")
      .def(py::init([](std::optional<at::Tensor> weight_ih, std::optional<at::Tensor> weight_hh,
                       std::optional<at::Tensor> weight_hr) { return Int8Scales{weight_ih, weight_hh, weight_hr}; }),
           py::kw_only(), py::arg("weight_ih") = py::none(), py::arg("weight_hh") = py::none(),
           py::arg("weight_hr") = py::none());
  py::class_<Needs>(m, "Needs", "which gradients backward computes, by keyword (csrc/options.h)")
      .def(py::init([](bool x, bool h0, bool c0, bool peephole, bool bias, bool weight_ih, bool weight_hh,
                       bool weight_hr) { return Needs{x, h0, c0, peephole, bias, weight_ih, weight_hh, weight_hr}; }),
           py::kw_only(), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("peephole"), py::arg("bias"),
           py::arg("weight_ih"), py::arg("weight_hh"), py::arg("weight_hr"));
  m.def("forward", &lstmkit::forward, "forward(x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr, "
        "options: LoopOptions, scales: Int8Scales = Int8Scales()) -> [out, h_n, c_n, acts, cells, h_seq]",
        py::arg("x"), py::arg("weight_ih"), py::arg("bias"), py::arg("h0"), py::arg("c0"), py::arg("weight_hh"),
        py::arg("peephole"), py::arg("weight_hr"), py::arg("options"), py::arg("scales") = Int8Scales{});
  m.def("backward", &lstmkit::backward, "backward(d_out, d_h_n, d_c_n, acts (consumed), cells (consumed with "
        "weight_hr), out, x, weight_ih, bias, h0, c0, weight_hh, peephole, weight_hr, d_h_seq, options: "
        "LoopOptions, needs: Needs) -> [d_x, d_h0, d_c0, d_peephole, d_bias, d_weight_ih, d_weight_hh, d_weight_hr]");
  m.def("empty_large", [](const std::vector<int64_t>& sizes, const at::Tensor& like) {
    return lstmkit::empty_large(sizes, like.options());
  }, "empty_large(sizes, like): torch.empty like `like`, from lstmkit's pool of large blocks where it is large "
     "(csrc/pool.h)");
  m.def("rounded_to_bf16", &lstmkit::rounded_to_bf16, "rounded_to_bf16(t) -> float32 t rounded to bf16, held in "
        "float32 (t.to(torch.bfloat16).to(torch.float32)'s values, in one pass into a pooled buffer)");
  m.def("pool_cached_bytes", [] { return lstmkit::BlockPool::get().cached(); },
        "pool_cached_bytes() -> bytes of free blocks the pool of large buffers holds for reuse (csrc/pool.h)");
  m.def("pool_release", [] { return lstmkit::BlockPool::get().release(); },
        "pool_release() -> frees the blocks the pool holds for reuse (buffers in use stay); the bytes freed");
  m.def("fma_ceiling", &lstmkit::fma_ceiling, "fma_ceiling(threads, iterations) -> GFLOP/s of fp32 vector FMAs "
        "on registers alone, the arithmetic bound of this machine");
  m.def("dot_ceiling", &lstmkit::dot_ceiling, "dot_ceiling(threads, iterations) -> GFLOP/s of bf16 dot products "
        "(vdpbf16ps) on registers alone, the bound of the bf16 loop; 0 without them");
  m.def("int8_dot_ceiling", &lstmkit::int8_dot_ceiling, "int8_dot_ceiling(threads, iterations) -> GOP/s of int8 "
        "dot products (vpdpbusd, 64 multiply-adds each) on registers alone, the bound of the int8 loop; 0 without "
        "them");
  m.def("int8_dot_instructions", &lstmkit::int8_dot_instructions, "whether the int8 tiles run vpdpbusd (the CPU has "
        "AVX512_VNNI and LSTMKIT_PORTABLE_INT8 is unset) or the portable path");
  m.def("bf16_dot_instructions", &lstmkit::bf16_dot_instructions, "whether the bf16 tiles run vdpbf16ps (the CPU "
        "has them and LSTMKIT_PORTABLE_BF16 is unset) or the portable path");
}
